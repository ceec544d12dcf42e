"""Bedrock edits and variations over real HTTP: boto3's bedrock-runtime client (serialization, SigV4, error parsing)
against the fake Bedrock on loopback, which validates the INPAINTING / IMAGE_VARIATION bodies as Bedrock does and
records the images and mask it decoded from them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image as PILImage

from functions.api import app
from functions.worker import app as worker
from imagegen import pictures
from imagegen.clients import bedrock_runtime_client
from imagegen.deadline import Deadline
from imagegen.errors import ContentPolicyError, InvalidRequestError, RateLimitError
from imagegen.planning import GenerationPlan, InputPictures
from imagegen.providers.bedrock import BedrockProvider
from imagegen.registry import ModelRegistry, build_registry
from tests.conftest import clear_caches, load_event
from tests.fakes.bedrock_server import FakeBedrock, edit_plan, openai_mask, picture, variation_plan
from tests.integration.test_async_jobs import manifest, sqs_record

pytestmark = pytest.mark.integration

NOVA = "amazon.nova-canvas-v1:0"
# Stability AI Image Services: invoked through a cross-Region profile (AWS's sample notebook uses us.).
INPAINT = "stability.stable-image-inpaint-v1:0"
INPAINT_PROFILE = f"us.{INPAINT}"
REGISTRY = build_registry(openai_enabled=False, default_model=None, bedrock_enabled=True)


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return picture(width, height, colour)


def jpeg(width: int, height: int) -> bytes:
    return picture(width, height, (10, 90, 200), image_format="JPEG")


IMAGE = png(384, 320)
MASK = openai_mask(384, 320, (100, 50, 200, 150))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edit(model: str, *images: bytes, mask: bytes | None = None, registry: ModelRegistry = REGISTRY, **fields: Any) -> GenerationPlan:
    return edit_plan(registry.get(model), *images, mask=mask, **fields)


def variation(model: str, image: bytes, **fields: Any) -> GenerationPlan:
    return variation_plan(REGISTRY.get(model), image, **fields)


@pytest.fixture
def client(bedrock_env: FakeBedrock) -> Any:
    """The deployment's bedrock-runtime client (no retries), made afresh (it is cached per container) so that its
    endpoint is the fake's and its credentials the ones the fake checks."""
    return bedrock_runtime_client.__wrapped__()


@pytest.fixture
def provider(client: Any) -> BedrockProvider:
    return BedrockProvider(client)


def sizes(result: Any) -> list[tuple[int, int]]:
    return [PILImage.open(io.BytesIO(image.data)).size for image in result.images]


def test_an_edit_with_a_mask_arrives_as_inpainting_with_the_image_and_bedrocks_mask(bedrock_env, provider) -> None:
    result = provider.generate(edit(NOVA, IMAGE, mask=MASK, n=2, quality="hd"), Deadline.after(10))
    assert sizes(result) == [(384, 320)] * 2  # inpainting answers at the input's size
    (sent,) = bedrock_env.requests
    assert sent["model"] == NOVA and sent["json"]["taskType"] == "INPAINTING"
    assert sent["json"]["inPaintingParams"]["text"] == "add a red hat"
    assert sent["json"]["imageGenerationConfig"]["quality"] == "premium"
    (image,) = sent["inputs"]["images"]
    assert sha256(image) == sha256(IMAGE)
    mask = PILImage.open(io.BytesIO(sent["inputs"]["mask"])).convert("RGB")
    assert mask.size == (384, 320)
    # Black where OpenAI's mask was transparent (the area Bedrock changes), white everywhere else.
    assert mask.crop((100, 50, 200, 150)).getcolors() == [(100 * 100, (0, 0, 0))]
    assert sorted(mask.getcolors() or []) == [(100 * 100, (0, 0, 0)), (384 * 320 - 100 * 100, (255, 255, 255))]


def test_an_edit_without_a_mask_sends_every_image_in_order_with_the_prompt(bedrock_env, provider) -> None:
    second, third = jpeg(640, 480), png(512, 512, (1, 2, 3))
    result = provider.generate(edit(NOVA, IMAGE, second, third), Deadline.after(10))
    assert sizes(result) == [(384, 320)]  # the first input's size, sent as width x height
    (sent,) = bedrock_env.requests
    assert sent["json"]["taskType"] == "IMAGE_VARIATION"
    assert sent["json"]["imageVariationParams"]["text"] == "add a red hat"
    assert [sha256(data) for data in sent["inputs"]["images"]] == [sha256(IMAGE), sha256(second), sha256(third)]
    assert sent["inputs"]["mask"] is None


def test_variations_beyond_five_take_consecutive_calls_without_text(bedrock_env, client) -> None:
    spec = REGISTRY.get(NOVA).model_copy(update={"max_n": 10})
    request_plan = variation(NOVA, IMAGE, size="512x512", n=5).model_copy(update={"model": spec, "n": 7})
    seeds = iter((11, 22))
    result = BedrockProvider(client, seed=lambda upper: next(seeds)).generate(request_plan, Deadline.after(10))
    assert sizes(result) == [(512, 512)] * 7
    assert sorted(request["json"]["imageGenerationConfig"]["numberOfImages"] for request in bedrock_env.requests) == [2, 5]
    assert sorted(request["json"]["imageGenerationConfig"]["seed"] for request in bedrock_env.requests) == [11, 22]
    for request in bedrock_env.requests:
        assert request["json"]["imageVariationParams"].keys() == {"images"}
        assert [sha256(data) for data in request["inputs"]["images"]] == [sha256(IMAGE)]


def test_an_inference_profile_edits_under_its_own_id(bedrock_env, provider) -> None:
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[f"us.{NOVA}"])
    bedrock_env.profile_only.add(NOVA)
    result = provider.generate(edit(f"us.{NOVA}", IMAGE, mask=MASK, registry=registry), Deadline.after(10))
    assert sizes(result) == [(384, 320)]
    assert [request["model"] for request in bedrock_env.requests] == [f"us.{NOVA}"]


@pytest.mark.parametrize(
    ("prompt", "error"),
    [("fail:filtered", ContentPolicyError), ("fail:ContentFilter", ContentPolicyError), ("fail:ThrottlingException", RateLimitError)],
)
def test_an_edit_meets_the_same_error_table(bedrock_env, provider, prompt, error) -> None:
    with pytest.raises(error):
        provider.generate(edit(NOVA, IMAGE, mask=MASK, prompt=prompt), Deadline.after(10))
    assert len(bedrock_env.requests) == 1


def invoke(client: Any, body: dict[str, Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=NOVA, body=json.dumps(body), contentType="application/json", accept="application/json")
    return caught.value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CONFIG = {"numberOfImages": 1, "seed": 1, "cfgScale": 6.5}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"taskType": "INPAINTING", "inPaintingParams": {"text": "x", "maskPrompt": "a hat"}}, "required key [image] not found"),
        ({"taskType": "INPAINTING", "inPaintingParams": {"image": b64(IMAGE), "text": "x"}}, "Exactly one of maskImage or maskPrompt"),
        (
            {"taskType": "INPAINTING", "inPaintingParams": {"image": b64(IMAGE), "maskImage": b64(png(320, 320, (0, 0, 0)))}},
            "must have the input image's size (384x320)",
        ),
        (
            {"taskType": "INPAINTING", "inPaintingParams": {"image": b64(IMAGE), "maskImage": b64(png(384, 320, (90, 90, 90)))}},
            "only pure black and pure white",
        ),
        ({"taskType": "INPAINTING", "inPaintingParams": {"image": "not base64!", "maskPrompt": "a hat"}}, "not a base64-encoded"),
        ({"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": []}}, "expected minimum item count: 1, found: 0"),
        ({"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [b64(IMAGE)] * 6}}, "expected maximum item count: 5, found: 6"),
        ({"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [b64(b"GIF89a...")]}}, "images/0"),
    ],
)
def test_the_fake_refuses_what_bedrock_refuses(bedrock_env, client, body, message) -> None:
    error = invoke(client, {**body, "imageGenerationConfig": CONFIG})
    assert error.response["Error"]["Code"] == "ValidationException"
    assert message in error.response["Error"]["Message"]
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bedrocks_refusal_of_an_edit_body_is_a_400_naming_its_reason(bedrock_env, provider) -> None:
    """A body that planning would never build (a mask of another size) is refused by Bedrock: the provider says so."""
    request_plan = edit(NOVA, IMAGE, mask=MASK)
    small = pictures.inspect(openai_mask(320, 320, (0, 0, 5, 5)), param="mask")
    assert request_plan.inputs is not None
    wrong = request_plan.model_copy(update={"inputs": InputPictures(images=request_plan.inputs.images, mask=small)})
    with pytest.raises(InvalidRequestError) as caught:
        provider.generate(wrong, Deadline.after(10))
    assert caught.value.status_code == 400
    assert "Amazon Bedrock refused the request" in caught.value.message and "input image's size" in caught.value.message


# Stable Image Inpaint (Stability AI Image Services) serves /v1/images/edits with a mask.
def inpaint_registry(bedrock_env: FakeBedrock) -> ModelRegistry:
    bedrock_env.profile_only.add(INPAINT)  # Bedrock refuses its bare id
    return build_registry(openai_enabled=False, default_model=None, bedrock_models=[INPAINT_PROFILE])


def test_an_inpainting_sends_the_image_and_a_white_where_transparent_mask_under_the_profile_id(bedrock_env, provider) -> None:
    planned = edit(INPAINT_PROFILE, IMAGE, mask=MASK, n=2, output_format="jpeg", registry=inpaint_registry(bedrock_env))
    result = provider.generate(planned, Deadline.after(10))
    assert sizes(result) == [(384, 320)] * 2
    assert [request["model"] for request in bedrock_env.requests] == [INPAINT_PROFILE] * 2  # one image per call
    for sent in bedrock_env.requests:
        assert (sent["json"]["prompt"], sent["json"]["output_format"]) == ("add a red hat", "jpeg")
        (image,) = sent["inputs"]["images"]
        assert sha256(image) == sha256(IMAGE)
        mask = PILImage.open(io.BytesIO(sent["inputs"]["mask"])).convert("RGB")
        # White where OpenAI's mask was transparent (the area Stability redraws), black everywhere else.
        assert mask.crop((100, 50, 200, 150)).getcolors() == [(100 * 100, (255, 255, 255))]
        assert sorted(mask.getcolors() or []) == [(100 * 100, (255, 255, 255)), (384 * 320 - 100 * 100, (0, 0, 0))]
    assert bedrock_env.requests[0]["json"]["seed"] != bedrock_env.requests[1]["json"]["seed"]


def test_the_bare_inpaint_id_is_refused_as_bedrock_refuses_it(bedrock_env, provider) -> None:
    inpaint_registry(bedrock_env)
    registry = build_registry(openai_enabled=False, default_model=None, bedrock_models=[INPAINT])
    with pytest.raises(Exception) as caught:
        provider.generate(edit(INPAINT, IMAGE, mask=MASK, registry=registry), Deadline.after(10))
    assert getattr(caught.value, "code", None) == "provider_inference_profile_required"


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        ("fail:filtered", ContentPolicyError),
        ("fail:ThrottlingException", RateLimitError),
        ("fail:ValidationException", InvalidRequestError),
    ],
)
def test_an_inpainting_meets_the_same_error_table(bedrock_env, provider, prompt, error) -> None:
    with pytest.raises(error):
        provider.generate(
            edit(INPAINT_PROFILE, IMAGE, mask=MASK, prompt=prompt, registry=inpaint_registry(bedrock_env)), Deadline.after(10)
        )
    assert len(bedrock_env.requests) == 1


def edit_event(data: dict[str, str], *files: tuple[str, bytes]) -> dict[str, Any]:
    """A multipart POST /v1/images/edits as the SDK sends it, base64 in the event as API Gateway passes it on."""
    form = [(field, (f"{field}.png", content, "image/png")) for field, content in files]
    request = httpx.Request("POST", "https://api.example.com/v1/images/edits", data=data, files=form)
    event = load_event("api_edit_multipart.json")
    event["body"] = base64.b64encode(request.read()).decode("ascii")
    event["isBase64Encoded"] = True
    event["headers"]["Content-Type"] = request.headers["Content-Type"]
    event["multiValueHeaders"]["Content-Type"] = [request.headers["Content-Type"]]
    return event


def written(s3: Any, bucket: str, event: dict[str, Any]) -> list[str]:
    rid = str(event["requestContext"]["requestId"])
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="images/")
        for obj in page.get("Contents", [])
    ]
    return [key for key in keys if f"/{rid}/" in key]


@pytest.fixture
def inpaint_api(bedrock_env: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> FakeBedrock:
    monkeypatch.setenv("BEDROCK_MODELS", INPAINT_PROFILE)
    bedrock_env.profile_only.add(INPAINT)
    clear_caches()
    return bedrock_env


def test_the_api_serves_an_inpainting_edit_and_stores_it(inpaint_api, local_s3, s3, lambda_context) -> None:
    # A URL answer: planned at Inpaint's 4-megapixel worst case, a b64_json answer would not fit Lambda's 6 MB.
    event = edit_event({"prompt": "a red hat", "model": INPAINT_PROFILE, "response_format": "url"}, ("image", IMAGE), ("mask", MASK))
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    (item,) = body["data"]
    assert PILImage.open(io.BytesIO(httpx.get(item["url"], timeout=10).content)).size == (384, 320)
    (sent,) = inpaint_api.requests
    assert sent["model"] == INPAINT_PROFILE and sent["json"]["prompt"] == "a red hat"
    assert sent["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert len(written(s3, local_s3.bucket, event)) == 1


@pytest.mark.parametrize(
    ("data", "files", "status", "code", "calls"),
    [
        ({"prompt": "fail:filtered"}, (("image", IMAGE), ("mask", MASK)), 400, "content_policy_violation", 1),
        ({"prompt": "a red hat"}, (("image", IMAGE),), 400, "unsupported_operation", 0),
    ],
)
def test_the_api_refuses_a_filtered_or_maskless_inpainting_and_writes_no_image(
    inpaint_api, local_s3, s3, lambda_context, data, files, status, code, calls
) -> None:
    event = edit_event({**data, "model": INPAINT_PROFILE}, *files)
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]["code"]) == (status, code), body
    assert len(inpaint_api.requests) == calls
    assert written(s3, local_s3.bucket, event) == []


def test_the_api_refuses_a_generation_with_the_inpainting_model_before_any_call(inpaint_api, lambda_context) -> None:
    event = load_event("api_generate_url.json", prompt="a lighthouse", model=INPAINT_PROFILE, size="1024x1024")
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]["code"]) == (400, "unsupported_operation"), body
    assert inpaint_api.requests == []


def test_the_worker_inpaints_an_sqs_edit_message_under_the_profile_id(inpaint_api, job_resources, local_s3, s3, lambda_context) -> None:
    # Given an image and a mask a trusted producer stored under inputs/, and an SQS edit message naming them
    prefix = f"inputs/producer-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/photo.png", Body=IMAGE)
    s3.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/mask.png", Body=MASK)
    job_id = f"inpaint-{uuid.uuid4().hex[:8]}"
    body = {
        "operation": "edit",
        "id": job_id,
        "prompt": "a red hat",
        "model": INPAINT_PROFILE,
        "images": [{"key": f"{prefix}/photo.png"}],
        "mask": {"key": f"{prefix}/mask.png"},
    }
    # When the worker gets it
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    # Then Bedrock was called once under the profile's id with that image, and the result is stored at its size
    done = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert done["status"] == "succeeded", done
    (sent,) = inpaint_api.requests
    assert sent["model"] == INPAINT_PROFILE
    assert [sha256(image) for image in sent["inputs"]["images"]] == [sha256(IMAGE)]
    (image,) = done["images"]
    stored = s3.get_object(Bucket=local_s3.bucket, Key=image["key"])["Body"].read()
    assert PILImage.open(io.BytesIO(stored)).size == (384, 320)


# Stability AI Image Services, Control: one image and a prompt, no mask, under their us. profiles.
STRUCTURE = "stability.stable-image-control-structure-v1:0"
SKETCH = "stability.stable-image-control-sketch-v1:0"
STYLE_GUIDE = "stability.stable-image-style-guide-v1:0"
CONTROL = (STRUCTURE, SKETCH, STYLE_GUIDE)
CONTROL_PROFILES = [f"us.{model}" for model in CONTROL]


@pytest.fixture
def control_api(bedrock_env: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> FakeBedrock:
    monkeypatch.setenv("BEDROCK_MODELS", ",".join(CONTROL_PROFILES))
    bedrock_env.profile_only.update(CONTROL)  # Bedrock refuses their bare ids
    clear_caches()
    return bedrock_env


CONTROL_REGISTRY = build_registry(openai_enabled=False, default_model=None, bedrock_models=CONTROL_PROFILES)


@pytest.mark.parametrize(
    ("profile", "size", "answered"),
    [(f"us.{STRUCTURE}", None, (384, 320)), (f"us.{SKETCH}", "384x320", (384, 320)), (f"us.{STYLE_GUIDE}", "1280x720", (1280, 720))],
)
def test_a_control_service_gets_the_image_and_prompt_under_its_profile_id(control_api, provider, profile, size, answered) -> None:
    fields = {"size": size} if size else {}
    result = provider.generate(edit(profile, IMAGE, n=2, output_format="jpeg", registry=CONTROL_REGISTRY, **fields), Deadline.after(10))
    assert sizes(result) == [answered] * 2
    assert [request["model"] for request in control_api.requests] == [profile] * 2  # one image per call
    for sent in control_api.requests:
        assert (sent["json"]["prompt"], sent["json"]["output_format"]) == ("add a red hat", "jpeg")
        assert [sha256(image) for image in sent["inputs"]["images"]] == [sha256(IMAGE)]
        assert "mask" not in sent["json"] and "control_strength" not in sent["json"] and "fidelity" not in sent["json"]
        assert sent["json"].get("aspect_ratio") == ("16:9" if STYLE_GUIDE in profile else None)


def control_invoke(client: Any, model: str, body: dict[str, Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        client.invoke_model(modelId=f"us.{model}", body=json.dumps(body), contentType="application/json", accept="application/json")
    return caught.value


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (STRUCTURE, {"prompt": "x"}, "required key [image] not found"),
        (SKETCH, {"image": b64(IMAGE), "prompt": ""}, "#/prompt: expected minLength: 1"),
        (STRUCTURE, {"image": b64(IMAGE), "prompt": "x", "mask": b64(IMAGE)}, "extraneous key [mask] is not permitted"),
        (SKETCH, {"image": b64(IMAGE), "prompt": "x", "control_strength": 1.5}, "#/control_strength: 1.5 is not in the range"),
        (STYLE_GUIDE, {"image": b64(IMAGE), "prompt": "x", "aspect_ratio": "4:3"}, "#/aspect_ratio: 4:3 is not a valid enum value"),
        (STYLE_GUIDE, {"image": "not base64!", "prompt": "x"}, "not a base64-encoded"),
    ],
)
def test_the_fake_refuses_a_malformed_control_body_as_bedrock_does(control_api, client, model, body, message) -> None:
    error = control_invoke(client, model, body)
    assert (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]) == ("ValidationException", 400)
    assert message in error.response["Error"]["Message"]


@pytest.mark.parametrize("profile", CONTROL_PROFILES)
def test_the_api_serves_a_control_edit_and_stores_it(control_api, local_s3, s3, lambda_context, profile) -> None:
    event = edit_event({"prompt": "a red hat", "model": profile, "response_format": "url"}, ("image", IMAGE))
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    (item,) = body["data"]
    expected = (1024, 1024) if STYLE_GUIDE in profile else (384, 320)  # Style Guide: size omitted is 1:1
    assert PILImage.open(io.BytesIO(httpx.get(item["url"], timeout=10).content)).size == expected
    (sent,) = control_api.requests
    assert (sent["model"], sent["json"]["prompt"]) == (profile, "a red hat")
    assert len(written(s3, local_s3.bucket, event)) == 1


@pytest.mark.parametrize("profile", CONTROL_PROFILES)
def test_the_api_refuses_a_mask_to_a_control_service_by_name_before_any_call(control_api, local_s3, s3, lambda_context, profile) -> None:
    event = edit_event({"prompt": "a red hat", "model": profile}, ("image", IMAGE), ("mask", MASK))
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]["param"]) == (400, "mask"), body
    assert "'mask' is not supported by this model" in body["error"]["message"]
    assert control_api.requests == [] and written(s3, local_s3.bucket, event) == []


@pytest.mark.parametrize("profile", CONTROL_PROFILES)
def test_the_api_refuses_a_generation_with_a_control_service_before_any_call(control_api, lambda_context, profile) -> None:
    event = load_event("api_generate_url.json", prompt="a lighthouse", model=profile, size="1024x1024")
    response = app.lambda_handler(event, lambda_context)
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]["code"]) == (400, "unsupported_operation"), body
    assert control_api.requests == []


@pytest.mark.parametrize(
    ("model", "size", "ratio", "stored_size"),
    [(STYLE_GUIDE, "1280x720", "16:9", (1280, 720)), (STRUCTURE, None, None, (384, 320)), (SKETCH, "auto", None, (384, 320))],
)
def test_the_worker_serves_an_sqs_edit_message_with_a_control_service(
    control_api, job_resources, local_s3, s3, lambda_context, model, size, ratio, stored_size
) -> None:
    # Given an image a trusted producer stored under inputs/, and an SQS edit message for a control service
    prefix = f"inputs/producer-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/photo.png", Body=IMAGE)
    job_id = f"control-{uuid.uuid4().hex[:8]}"
    profile = f"us.{model}"
    body = {"operation": "edit", "id": job_id, "prompt": "a red hat", "model": profile, "images": [{"key": f"{prefix}/photo.png"}]}
    if size:
        body["size"] = size
    # When the worker gets it
    assert worker.lambda_handler({"Records": [sqs_record(body)]}, lambda_context) == {"batchItemFailures": []}
    # Then Bedrock was called once under the profile's id with that image (and Style Guide the ratio), result stored
    done = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert done["status"] == "succeeded", done
    (sent,) = control_api.requests
    assert (sent["model"], sent["json"].get("aspect_ratio")) == (profile, ratio)
    assert [sha256(image) for image in sent["inputs"]["images"]] == [sha256(IMAGE)]
    (image,) = done["images"]
    stored = s3.get_object(Bucket=local_s3.bucket, Key=image["key"])["Body"].read()
    assert PILImage.open(io.BytesIO(stored)).size == stored_size
