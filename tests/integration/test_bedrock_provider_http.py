"""Amazon Bedrock through the API handler: boto3's real bedrock-runtime client (serialization, SigV4, error parsing)
against a fake Bedrock on loopback, images stored in the real S3 server."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request

import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration

NOVA = "amazon.nova-canvas-v1:0"
TITAN = "amazon.titan-image-generator-v2:0"
CORE = "stability.stable-image-core-v1:1"


def invoke(lambda_context, event: str = "api_generate_b64.json", **body):
    response = app.lambda_handler(load_event(event, **body), lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def decoded(item) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def fetched(item) -> PILImage.Image:
    with urllib.request.urlopen(item["url"]) as response:
        return PILImage.open(io.BytesIO(response.read()))


@pytest.mark.parametrize(
    ("model", "size", "quality", "sent_quality"),
    [(NOVA, "1280x720", "hd", "premium"), (NOVA, "2048x1024", None, "standard"), (NOVA, "512x512", "standard", "standard")],
)
def test_amazon_models_draw_the_requested_size(bedrock_env, local_s3, lambda_context, model, size, quality, sent_quality) -> None:
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="a lighthouse", model=model, size=size, quality=quality, n=2)
    assert status == 200, body
    assert [fetched(item).size for item in body["data"]] == [tuple(map(int, size.split("x")))] * 2
    (sent,) = bedrock_env.requests
    assert sent["model"] == model
    assert sent["headers"]["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={local_s3.access_key}/")
    assert "/us-east-1/bedrock/aws4_request" in sent["headers"]["Authorization"]
    config = sent["json"]["imageGenerationConfig"]
    assert (config["numberOfImages"], config["quality"], f"{config['width']}x{config['height']}") == (2, sent_quality, size)


def test_url_answer_is_stored_in_s3(bedrock_env, lambda_context, s3, local_s3) -> None:
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="a fox", model=NOVA, size="1024x1024", n=1)
    assert status == 200, body
    (item,) = body["data"]
    with urllib.request.urlopen(item["url"]) as response:
        assert response.headers["content-type"] == "image/png"
        assert PILImage.open(io.BytesIO(response.read())).size == (1024, 1024)
    key = item["url"].split(f"/{local_s3.bucket}/", 1)[1].split("?", 1)[0]
    assert s3.head_object(Bucket=local_s3.bucket, Key=key)["Metadata"]["model"] == NOVA


def test_five_images_take_one_call(bedrock_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model=NOVA, size="512x512", n=5)
    assert status == 200 and len(body["data"]) == 5
    assert [request["json"]["imageGenerationConfig"]["numberOfImages"] for request in bedrock_env.requests] == [5]


@pytest.mark.parametrize(("output_format", "magic"), [("png", "PNG"), ("jpeg", "JPEG")])
def test_stability_runs_n_calls_concurrently(bedrock_env, lambda_context, output_format, magic) -> None:
    started = time.monotonic()
    status, body, _ = invoke(
        lambda_context, "api_generate_url.json", prompt="a fox", model=CORE, size="1344x576", n=4, output_format=output_format
    )
    elapsed = time.monotonic() - started
    assert status == 200, body
    images = [fetched(item) for item in body["data"]]
    assert [(image.size, image.format) for image in images] == [((1344, 576), magic)] * 4
    assert {request["json"]["aspect_ratio"] for request in bedrock_env.requests} == {"21:9"}
    assert len({request["json"]["seed"] for request in bedrock_env.requests}) == 4
    assert bedrock_env.max_in_flight >= 2  # the fake holds each call 0.2 s: sequential calls never overlap
    assert elapsed < 4 * 0.2 + 0.5


@pytest.mark.parametrize("model", [CORE, NOVA])
def test_filtered_output_is_a_content_policy_error(bedrock_env, lambda_context, model) -> None:
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="fail:filtered", model=model, size="1024x1024", n=1)
    assert status == 400, body  # OpenAI's status for a safety refusal: the SDKs raise BadRequestError
    assert (body["error"]["code"], body["error"]["param"]) == ("content_policy_violation", "prompt")


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("ThrottlingException", 429, "rate_limit_exceeded"),
        ("ValidationException", 400, "invalid_value"),
        ("ContentFilter", 400, "content_policy_violation"),
        ("AccessDeniedException", 502, "provider_auth_failed"),
        ("ModelTimeoutException", 504, "provider_timeout"),
        ("ServiceUnavailableException", 502, "provider_error"),
        ("InternalServerException", 502, "provider_error"),
        ("ModelErrorException", 502, "provider_error"),
        ("ResourceNotFoundException", 502, "provider_model_unavailable"),
        ("ServiceQuotaExceededException", 429, "rate_limit_exceeded"),
        ("malformed", 502, "provider_bad_response"),
    ],
)
def test_bedrock_errors_map_to_our_status_table(bedrock_env, lambda_context, kind, status, code) -> None:
    got, body, response = invoke(lambda_context, prompt=f"fail:{kind}", model=NOVA, size="512x512")
    assert (got, body["error"]["code"]) == (status, code), body
    assert len(bedrock_env.requests) == 1  # no retries inside the request
    # Only what no retry can fix says so (the OpenAI SDKs honour x-should-retry).
    no_retry = code in ("provider_auth_failed", "provider_model_unavailable")
    assert (response["multiValueHeaders"].get("x-should-retry") == ["false"]) is no_retry


def test_timeout_is_504_within_the_deadline(bedrock_env, lambda_context) -> None:
    lambda_context.remaining_millis = 4000  # minus the 2.5 s margin: 1.5 s for Bedrock
    started = time.monotonic()
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="fail:slow", model=CORE, size="1024x1024", n=2)
    assert (status, body["error"]["code"]) == (504, "provider_timeout")
    assert time.monotonic() - started < 2.5


def test_a_bad_signature_is_refused(bedrock_env, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    status, body, response = invoke(lambda_context, model=NOVA, size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_auth_failed")
    assert response["multiValueHeaders"]["x-should-retry"] == ["false"]
    (sent,) = bedrock_env.requests
    assert sent["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_unreachable_bedrock_is_502(local_s3, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("BEDROCK_ENABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9")
    status, body, _ = invoke(lambda_context, model=NOVA, size="1024x1024")
    assert (status, body["error"]["code"]) == (502, "provider_unreachable")


def test_models_lists_bedrock_when_enabled(bedrock_env, lambda_context) -> None:
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    cards = {card["id"]: card for card in json.loads(response["body"])["data"]}
    assert {NOVA, CORE, "local"} <= set(cards) and TITAN not in cards  # retired: not listed
    # Nova Canvas: Legacy, its end of life from third parties only (shown, not enforced).
    assert cards[NOVA]["lifecycle"] == {
        "status": "legacy",
        "legacy_on": "2026-07-09",
        "extended_access_on": None,
        "end_of_life_on": "2026-09-30",
        "successor": None,
        "verified": False,
    }
    assert cards[CORE]["lifecycle"]["status"] == "active"
    assert cards[NOVA]["owned_by"] == "bedrock" and cards[NOVA]["capabilities"]["max_n"] == 5
    assert "320 to 4096" in cards[NOVA]["capabilities"]["custom_sizes"]


def test_a_registry_document_decides_what_is_served(local_s3, fake_bedrock, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.endpoint)
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps({"models": [{"id": NOVA, "max_n": 7}, CORE]}))  # no BEDROCK_ENABLED needed
    fake_bedrock.reset()
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    cards = json.loads(response["body"])["data"]
    assert [(card["id"], card["default"], card["capabilities"]["max_n"]) for card in cards] == [(NOVA, True, 7), (CORE, False, 4)]
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="a fox", size="512x512", n=7, model=None)
    assert status == 200 and len(body["data"]) == 7
    assert sorted(request["json"]["imageGenerationConfig"]["numberOfImages"] for request in fake_bedrock.requests) == [2, 5]
    status, body, _ = invoke(lambda_context, model="local")
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    assert NOVA in body["error"]["message"]


def test_a_b64_answer_that_could_not_fit_is_refused_before_bedrock_is_called(bedrock_env, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model=NOVA, size="2048x1024", n=2)
    assert (status, body["error"]["param"], body["error"]["code"]) == (413, "response_format", "response_too_large"), body
    assert bedrock_env.requests == []


def test_a_model_offered_only_through_a_profile_says_so_and_is_not_retried(bedrock_env, lambda_context) -> None:
    """Bedrock refuses the bare id of such a model with a ValidationException; no retry fixes the deployment."""
    bedrock_env.profile_only.add(NOVA)
    status, body, response = invoke(lambda_context, "api_generate_url.json", prompt="a fox", model=NOVA, size="1024x1024", n=1)
    assert (status, body["error"]["code"]) == (502, "provider_inference_profile_required"), body
    assert "'<geo>.<model id>'" in body["error"]["message"]
    assert response["multiValueHeaders"]["x-should-retry"] == ["false"]
    assert len(bedrock_env.requests) == 1


def test_a_cross_region_inference_profile_is_served_and_invoked_by_its_id(bedrock_env, monkeypatch, lambda_context) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", f"us.{NOVA},us.{CORE}")
    bedrock_env.profile_only.add(NOVA)
    cards = json.loads(app.lambda_handler(load_event("api_models.json"), lambda_context)["body"])["data"]
    assert [(card["id"], card["default"]) for card in cards] == [("local", False), (f"us.{NOVA}", True), (f"us.{CORE}", False)]
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="a fox", model=f"us.{NOVA}", size="1280x720", n=1)
    assert status == 200, body
    assert fetched(body["data"][0]).size == (1280, 720)
    status, body, _ = invoke(lambda_context, "api_generate_url.json", prompt="a fox", model=f"us.{CORE}", size="1280x720", n=1)
    assert status == 200, body
    assert [request["model"] for request in bedrock_env.requests] == [f"us.{NOVA}", f"us.{CORE}"]
    assert bedrock_env.requests[1]["json"]["aspect_ratio"] == "16:9"
    status, body, _ = invoke(lambda_context, prompt="p" * 1025, model=f"us.{NOVA}", size="1024x1024")
    assert (status, body["error"]["param"]) == (400, "prompt")  # Nova Canvas's own 1024-character limit


@pytest.mark.parametrize("model", [TITAN, f"us.{TITAN}"])
def test_titan_v2_is_retired_a_404_naming_the_day_and_never_reaches_bedrock(bedrock_env, lambda_context, model) -> None:
    """Its AWS model card: EOL June 30, 2026 (no successor named)."""
    status, body, _ = invoke(lambda_context, prompt="a lighthouse", model=model, size="1024x1024")
    assert (status, body["error"]["code"], body["error"]["param"]) == (404, "model_retired", "model"), body
    assert "retired on 2026-06-30" in body["error"]["message"]
    assert bedrock_env.requests == []
