"""OpenAI and Azure OpenAI edits over real HTTP: the provider posts multipart/form-data to the fake OpenAI server on
loopback, which parses it with the API's own multipart parser and records every part it received."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image as PILImage

from imagegen import errors, pictures
from imagegen.deadline import Deadline
from imagegen.options import ImageEditOptions
from imagegen.planning import GenerationPlan, InputPictures, plan_edit
from imagegen.providers.openai import OpenAIProvider, azure_endpoint
from imagegen.registry import build_registry
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration

REGISTRY = build_registry(openai_enabled=True, default_model=None, azure_deployments={"gpt-image-1.5": "edits-deployment"})


def png(width: int, height: int, mode: str = "RGB", colour: tuple[int, ...] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


FIRST = png(96, 64)
SECOND = png(48, 48, colour=(10, 200, 90))
MASK = png(96, 64, "RGBA", (0, 0, 0, 0))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.requests.clear()
    return fake_openai


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def openai_provider(fake: FakeOpenAI, client: httpx.Client, **kwargs: object) -> OpenAIProvider:
    return OpenAIProvider(client, base_url=fake.base_url, api_key=lambda: "sk-test-edits", **kwargs)  # type: ignore[arg-type]


def edit(model: str, *images: bytes, mask: bytes | None = None, **fields: object) -> GenerationPlan:
    inputs = InputPictures(
        images=tuple(pictures.inspect(data, param="image") for data in images),
        mask=pictures.inspect(mask, param="mask") if mask is not None else None,
    )
    return plan_edit(REGISTRY.get(model), ImageEditOptions.model_validate({"prompt": "add a hat", **fields}), inputs)


def test_two_images_and_a_mask_arrive_intact_with_every_option(fake, client) -> None:
    plan = edit(
        "gpt-image-1.5",
        FIRST,
        SECOND,
        mask=MASK,
        n=2,
        size="1536x1024",
        quality="high",
        background="opaque",
        output_format="jpeg",
        output_compression=70,
        input_fidelity="high",
        safety_identifier="user-7",
    )
    result = openai_provider(fake, client).generate(plan, Deadline.after(20))
    assert [PILImage.open(io.BytesIO(image.data)).size for image in result.images] == [(1536, 1024), (1536, 1024)]
    assert result.usage is not None and result.usage["total_tokens"] == 110
    (sent,) = fake.requests
    assert sent["path"] == "/v1/images/edits"
    assert sent["headers"]["Authorization"] == "Bearer sk-test-edits"
    assert sent["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert [(part["name"], part["filename"], part["content_type"], part["sha256"]) for part in sent["files"]] == [
        ("image[]", "image-0.png", "image/png", sha256(FIRST)),
        ("image[]", "image-1.png", "image/png", sha256(SECOND)),
        ("mask", "mask.png", "image/png", sha256(MASK)),
    ]
    assert sent["fields"] == {
        "prompt": "add a hat",
        "background": "opaque",
        "input_fidelity": "high",
        "model": "gpt-image-1.5",
        "n": "2",
        "output_compression": "70",
        "output_format": "jpeg",
        "quality": "high",
        "safety_identifier": "user-7",
        "size": "1536x1024",
    }


def test_auto_size_answers_1024_square(fake, client) -> None:
    result = openai_provider(fake, client).generate(edit("gpt-image-2.5-sunburst", FIRST), Deadline.after(20))
    assert [PILImage.open(io.BytesIO(image.data)).size for image in result.images] == [(1024, 1024)]
    (sent,) = fake.requests
    assert sent["fields"]["size"] == "auto" and [part["name"] for part in sent["files"]] == ["image"]


def test_429_with_retry_after_is_retried_with_the_whole_body_again(fake, client) -> None:
    prompt = f"flaky429:1:{time.time_ns()}"
    started = time.monotonic()
    result = openai_provider(fake, client).generate(edit("gpt-image-1.5", FIRST, SECOND, mask=MASK, prompt=prompt), Deadline.after(20))
    assert len(result.images) == 1
    assert time.monotonic() - started >= 1.0  # waited the Retry-After: 1 s
    first, second = fake.requests
    # The retried attempt carried every part again, byte for byte.
    assert first["files"] == second["files"] and [part["sha256"] for part in second["files"]] == [
        sha256(FIRST),
        sha256(SECOND),
        sha256(MASK),
    ]
    assert first["fields"] == second["fields"]


def test_429_without_time_to_wait_keeps_retry_after(fake, client) -> None:
    with pytest.raises(errors.RateLimitError) as caught:
        openai_provider(fake, client).generate(edit("gpt-image-1.5", FIRST, prompt="fail:429"), Deadline.after(1.5))
    assert caught.value.headers["Retry-After"] == "1"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("prompt", "expected", "code", "param"),
    [
        ("fail:400", errors.InvalidRequestError, "invalid_value", "size"),
        ("fail:image-file", errors.InvalidRequestError, "invalid_image_file", None),
        ("fail:mask-size", errors.InvalidRequestError, "invalid_mask_image_format", None),
        ("fail:moderation", errors.ContentPolicyError, "moderation_blocked", "prompt"),
        ("fail:policy", errors.ContentPolicyError, "content_policy_violation", "prompt"),
        ("fail:401", errors.ProviderConfigurationError, "provider_auth_failed", None),
    ],
)
def test_refusals_map_through_the_generation_table_and_are_not_retried(fake, client, prompt, expected, code, param) -> None:
    with pytest.raises(errors.ImageGenError) as caught:
        openai_provider(fake, client).generate(edit("gpt-image-1.5", FIRST, prompt=prompt), Deadline.after(20))
    assert type(caught.value) is expected
    assert (caught.value.code, caught.value.param) == (code, param)
    assert len(fake.requests) == 1


def test_the_fake_checks_the_mask_as_openai_does(fake, client) -> None:
    """A mask that got past planning but not past OpenAI (planning refuses it first in the service) comes back as
    OpenAI's own 400, passed on with its message."""
    plan = edit("gpt-image-1.5", FIRST, mask=MASK)
    other = pictures.inspect(png(64, 64, "RGBA", (0, 0, 0, 0)), param="mask")
    mismatched = plan.model_copy(update={"inputs": InputPictures(images=plan.inputs.images, mask=other)})
    with pytest.raises(errors.InvalidRequestError, match="mask size does not match image size"):
        openai_provider(fake, client).generate(mismatched, Deadline.after(20))


def test_5xx_is_retried_then_succeeds(fake, client) -> None:
    prompt = f"flaky:1:{time.time_ns()}"
    provider = openai_provider(fake, client, sleep=lambda _seconds: None)
    assert len(provider.generate(edit("gpt-image-1-mini", FIRST, prompt=prompt), Deadline.after(20)).images) == 1
    assert len(fake.requests) == 2


def test_azure_edit_posts_to_the_deployment_without_a_model(fake, client) -> None:
    provider = OpenAIProvider(
        client, endpoint=azure_endpoint(fake.origin, "2025-04-01-preview"), api_key=lambda: "azure-edits-key", max_retries=0
    )
    plan = edit("azure/gpt-image-1.5", FIRST, SECOND, mask=MASK, size="1024x1024", safety_identifier="user-7")
    result = provider.generate(plan, Deadline.after(20))
    assert [PILImage.open(io.BytesIO(image.data)).size for image in result.images] == [(1024, 1024)]
    (sent,) = fake.requests
    assert sent["path"] == "/openai/deployments/edits-deployment/images/edits?api-version=2025-04-01-preview"
    assert sent["headers"]["api-key"] == "azure-edits-key" and "Authorization" not in sent["headers"]
    assert "model" not in sent["fields"] and sent["fields"]["user"] == "user-7" and "safety_identifier" not in sent["fields"]
    assert [part["sha256"] for part in sent["files"]] == [sha256(FIRST), sha256(SECOND), sha256(MASK)]


def test_azure_edit_errors_map_through_the_same_table(fake, client) -> None:
    provider = OpenAIProvider(client, endpoint=azure_endpoint(fake.origin, "2025-04-01-preview"), api_key=lambda: "k", max_retries=0)
    with pytest.raises(errors.ContentPolicyError):
        provider.generate(edit("azure/gpt-image-1.5", FIRST, prompt="fail:moderation"), Deadline.after(20))
    with pytest.raises(errors.RateLimitError):
        provider.generate(edit("azure/gpt-image-1.5", FIRST, prompt="fail:429"), Deadline.after(20))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("image", ("a.png", b"not an image", "image/png"))], "Invalid image file or mode for image 0"),
        (
            [("image", ("a.png", FIRST, "image/png")), ("mask", ("m.png", png(96, 64), "image/png"))],
            "Invalid mask image format - mask image missing alpha channel",
        ),
        ([], "Missing required parameter: 'image'."),
    ],
)
def test_the_fake_refuses_what_openai_refuses(fake, client, files, message) -> None:
    """The fake's own checks, posted as any client would (a form without files is sent as multipart by hand)."""
    if files:
        response = client.post(f"{fake.base_url}/images/edits", data={"prompt": "x", "model": "gpt-image-1.5"}, files=files)
    else:
        body = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--b--\r\n'
        response = client.post(f"{fake.base_url}/images/edits", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
