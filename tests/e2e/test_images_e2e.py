"""End to end through the local stack (HTTP front -> real Lambda RIE -> handler -> real S3 server), over HTTP
only: no imports of the service for assertions. With E2E_BASE_URL set, the same tests run against a deployment."""

from __future__ import annotations

import base64
import io
from typing import TypeVar

import httpx
import pytest
from openai import BaseModel as SdkModel
from openai.types import ErrorObject, ImagesResponse, Model
from PIL import Image as PILImage

pytestmark = pytest.mark.e2e

SdkType = TypeVar("SdkType", bound=SdkModel)


def decode(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


def undeclared_fields(value: object, where: str) -> list[str]:
    """Fields the SDK's models do not declare (they allow extras), at any depth."""
    if isinstance(value, SdkModel):
        found = [f"{where}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += undeclared_fields(getattr(value, name), f"{where}.{name}")
        return found
    if isinstance(value, list):
        return [extra for index, item in enumerate(value) for extra in undeclared_fields(item, f"{where}[{index}]")]
    return []


def sdk_validated(body: object, sdk_type: type[SdkType], *, extensions: frozenset[str] = frozenset()) -> SdkType:
    """A JSON answer checked against the openai SDK's own type, as the SDK never does (it builds its models with
    ``construct``): strict types (no "1" for an int) and no field the type does not declare, other than ``extensions``."""
    parsed = sdk_type.model_validate(body, strict=True)
    unknown = [field for field in undeclared_fields(parsed, sdk_type.__name__) if field.rsplit(".", 1)[-1] not in extensions]
    assert unknown == [], f"fields the SDK's {sdk_type.__name__} does not declare: {unknown}"
    return parsed


def generate(base_url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/images/generations", json=body, timeout=60)


def test_url_answer_is_a_presigned_png_of_the_requested_size(local_stack) -> None:
    response = generate(local_stack.base_url, prompt="a lighthouse at dawn", model="local", size="512x512", n=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"} and len(body["data"]) == 2
    sdk_validated(body, ImagesResponse)
    for item in body["data"]:
        fetched = httpx.get(item["url"], timeout=30)
        assert fetched.status_code == 200
        image = decode(fetched.content)
        assert (image.format, image.size) == ("PNG", (512, 512))


def test_b64_answer_decodes_to_a_png_of_the_requested_size(local_stack) -> None:
    response = generate(local_stack.base_url, prompt="a red fox", model="local", size="1792x1024", responseFormat="b64_json")
    assert response.status_code == 200, response.text
    (item,) = sdk_validated(response.json(), ImagesResponse).data or []
    assert item.b64_json is not None and item.url is None
    image = decode(base64.b64decode(item.b64_json))
    assert (image.format, image.size) == ("PNG", (1792, 1024))


def test_tampered_url_is_refused_by_s3(local_stack) -> None:
    response = generate(local_stack.base_url, prompt="a red fox", model="local", size="256x256")
    url = response.json()["data"][0]["url"]
    assert httpx.get(url, timeout=30).status_code == 200
    assert httpx.get(url.replace("/0.png", "/1.png"), timeout=30).status_code == 403
    expires = httpx.URL(url).params["X-Amz-Expires"]
    assert httpx.get(url.replace(f"X-Amz-Expires={expires}", "X-Amz-Expires=604800"), timeout=30).status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "x", "reponseFormat": "url"}, 400, "reponseFormat"),
        ({"prompt": "   "}, 400, "prompt"),
        ({"prompt": "x", "n": 10_000}, 400, "n"),
        ({"prompt": "x", "model": "local", "size": "640x480"}, 400, "size"),
        ({"prompt": "x", "model": "no-such-model"}, 404, "model"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(local_stack, body, status, param) -> None:
    response = httpx.post(f"{local_stack.base_url}/v1/images/generations", json=body, timeout=30)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param


def test_invalid_json_is_400(local_stack) -> None:
    response = httpx.post(
        f"{local_stack.base_url}/v1/images/generations", content=b"{nope", headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_official_openai_sdk_works_for_both_formats(local_stack) -> None:
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=f"{local_stack.base_url}/v1", api_key="unused-locally", max_retries=0)
    raw_url = client.images.with_raw_response.generate(model="local", prompt="a red fox", size="256x256", response_format="url", n=2)
    sdk_validated(raw_url.http_response.json(), ImagesResponse)
    as_url = raw_url.parse()  # what a caller of client.images.generate gets
    assert as_url.data is not None and len(as_url.data) == 2
    for item in as_url.data:
        assert item.url is not None and item.b64_json is None
        assert decode(httpx.get(item.url, timeout=30).content).size == (256, 256)
    raw_b64 = client.images.with_raw_response.generate(model="local", prompt="a red fox", size="512x512", response_format="b64_json")
    sdk_validated(raw_b64.http_response.json(), ImagesResponse)
    as_b64 = raw_b64.parse()
    assert as_b64.data is not None and as_b64.data[0].b64_json is not None and as_b64.data[0].url is None
    assert decode(base64.b64decode(as_b64.data[0].b64_json)).size == (512, 512)
    with pytest.raises(BadRequestError) as caught:
        client.images.generate(model="local", prompt="a red fox", size="640x480")
    assert caught.value.param == "size" and caught.value.type == "invalid_request_error"
    assert sdk_validated(caught.value.body, ErrorObject).param == "size"


def test_models_lists_the_local_model(local_stack) -> None:
    response = httpx.get(f"{local_stack.base_url}/v1/models", timeout=30)
    assert response.status_code == 200
    assert "local" in [model["id"] for model in response.json()["data"]]


# What GET /v1/models adds to OpenAI's Model: which model is the default, what each one accepts, its lifecycle, and
# for a route its models
MODEL_EXTENSIONS = frozenset({"default", "capabilities", "lifecycle", "route"})


def test_official_openai_sdk_lists_models(local_stack) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{local_stack.base_url}/v1", api_key="unused-locally", max_retries=0)
    raw = client.models.with_raw_response.list()
    body = raw.http_response.json()
    assert body["object"] == "list"
    for card in body["data"]:
        sdk_validated(card, Model, extensions=MODEL_EXTENSIONS)
    assert "local" in [model.id for model in raw.parse()]
