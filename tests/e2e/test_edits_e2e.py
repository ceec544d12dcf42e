"""Edits and variations through the official Python SDK against the local stack (HTTP front -> Lambda RIE -> handler
-> S3 server), or a deployment with E2E_BASE_URL. The SDK builds the multipart form itself (two images and a mask);
every answer is checked against the SDK's own ImagesResponse, and every image is opened with Pillow: the local model
inverts the first input's RGB where the mask is transparent and names that input's SHA-256 in a tEXt chunk."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from openai import BadRequestError, OpenAI
from openai.types import ErrorObject, ImagesResponse
from PIL import Image as PILImage

from tests.e2e.test_images_e2e import decode, sdk_validated

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.e2e

INPUT_SHA256_KEY = "imagegen:input-sha256"
WIDTH, HEIGHT = 64, 48  # not square, so a swapped width and height shows


def png(image: PILImage.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def picture(seed: bytes) -> bytes:
    """An RGBA PNG whose every pixel differs by position and ``seed`` (so no two tests upload the same bytes), with
    a band of half-transparent pixels to show that alpha is kept."""
    salt = hashlib.sha256(seed).digest()
    image = PILImage.new("RGBA", (WIDTH, HEIGHT))
    image.putdata(
        [
            ((x * 4 + salt[0]) % 256, (y * 5 + salt[1]) % 256, (x * y + salt[2]) % 256, 128 if y < 4 else 255)
            for y in range(HEIGHT)
            for x in range(WIDTH)
        ]
    )
    return png(image)


def left_half_mask(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Transparent (the edit area) on the left half, opaque on the right."""
    mask = PILImage.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    return png(mask)


def expected_edit(source: bytes, mask: bytes | None) -> list[tuple[int, int, int, int]]:
    """What the local model makes of ``source``: RGB inverted where the mask's alpha is 0 (everywhere without a
    mask), every other pixel and all alpha as they were."""
    pixels = list(decode(source).convert("RGBA").get_flattened_data())
    edited = [True] * len(pixels) if mask is None else [alpha == 0 for alpha in decode(mask).getchannel("A").get_flattened_data()]
    return [(255 - r, 255 - g, 255 - b, a) if flip else (r, g, b, a) for (r, g, b, a), flip in zip(pixels, edited, strict=True)]


def assert_edit_of(data: bytes, source: bytes, mask: bytes | None) -> None:
    """``data`` is the local model's edit of ``source`` under ``mask``, at its size, naming its SHA-256."""
    image = decode(data)
    assert (image.format, image.size) == ("PNG", decode(source).size)
    assert image.text.get(INPUT_SHA256_KEY) == hashlib.sha256(source).hexdigest(), "the edit is not of the first input"
    actual = list(image.convert("RGBA").get_flattened_data())
    expected = expected_edit(source, mask)
    wrong = [index for index, (got, want) in enumerate(zip(actual, expected, strict=True)) if got != want]
    assert wrong == [], (
        f"{len(wrong)} pixels differ, the first at {divmod(wrong[0], image.width)[::-1]}: {actual[wrong[0]]} != {expected[wrong[0]]}"
    )


def images_of(response: ImagesResponse) -> list[bytes]:
    """The bytes of every image in an answer: decoded from b64_json, or fetched from the presigned URL."""
    out = []
    for item in response.data or []:
        if item.b64_json is not None:
            assert item.url is None
            out.append(base64.b64decode(item.b64_json, validate=True))
        else:
            assert item.url is not None
            fetched = httpx.get(item.url, timeout=30)
            assert fetched.status_code == 200, fetched.text
            out.append(fetched.content)
    return out


@pytest.fixture(scope="module")
def client(local_stack) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{local_stack.base_url}/v1", api_key="unused-locally", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_multipart_edit_of_two_images_and_a_mask(client, response_format) -> None:
    first, second, mask = picture(secrets.token_bytes(8)), picture(secrets.token_bytes(8)), left_half_mask()
    raw = client.images.with_raw_response.edit(
        model="local",
        image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt="invert the left half",
        response_format=response_format,
    )
    assert raw.http_request.headers["content-type"].startswith("multipart/form-data; boundary=")
    sdk_validated(raw.http_response.json(), ImagesResponse)
    response = raw.parse()  # what a caller of client.images.edit gets
    assert response.data is not None and len(response.data) == 1
    assert (response.data[0].url is None) == (response_format == "b64_json")
    (data,) = images_of(response)
    assert_edit_of(data, first, mask)


def test_a_multipart_edit_stores_its_inputs_intact_before_the_outputs(local_stack, client, s3: S3Client) -> None:
    first, second, mask = picture(secrets.token_bytes(8)), picture(secrets.token_bytes(8)), left_half_mask()
    client.images.edit(model="local", image=[first, second], mask=mask, prompt="invert the left half")
    sha_first = hashlib.sha256(first).hexdigest()
    folders: dict[str, dict[str, bytes]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=local_stack.bucket, Prefix="inputs/"):
        for entry in page.get("Contents", []):
            folder, _, name = entry["Key"].rpartition("/")
            folders.setdefault(folder, {})[name] = s3.get_object(Bucket=local_stack.bucket, Key=entry["Key"])["Body"].read()
    (stored,) = [files for files in folders.values() if hashlib.sha256(files.get("image-0.png", b"")).hexdigest() == sha_first]
    assert stored == {"image-0.png": first, "image-1.png": second, "mask.png": mask}


def test_json_edit_by_data_url(client) -> None:
    source = picture(secrets.token_bytes(8))
    data_url = "data:image/png;base64," + base64.b64encode(source).decode()
    body = {"model": "local", "prompt": "invert it all", "images": [{"image_url": data_url}], "response_format": "b64_json"}
    response = client.post("/images/edits", body=body, cast_to=ImagesResponse)
    # the SDK builds its models without validation, so what it parsed is exactly what the API answered
    sdk_validated(response.to_dict(mode="json"), ImagesResponse)
    (data,) = images_of(response)
    assert_edit_of(data, source, None)


# The SDK marks create_variation deprecated (OpenAI retired dall-e-2); this API still serves variations.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_variations_of_one_image(client) -> None:
    source = picture(secrets.token_bytes(8))
    raw = client.images.with_raw_response.create_variation(image=("v.png", source, "image/png"), model="local", n=2)
    sdk_validated(raw.http_response.json(), ImagesResponse)
    variations = images_of(raw.parse())
    assert len(variations) == 2
    for data in variations:
        assert_edit_of(data, source, None)  # the local model's variation is its edit without a mask, at the input's size


def test_a_mask_of_another_size_is_the_sdks_bad_request_error_naming_mask(client) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.images.edit(model="local", image=picture(b"mask-size"), mask=left_half_mask(WIDTH, HEIGHT + 1), prompt="x")
    assert caught.value.status_code == 400
    assert caught.value.param == "mask" and caught.value.type == "invalid_request_error"
    error = sdk_validated(caught.value.body, ErrorObject)
    assert f"{WIDTH}x{HEIGHT + 1}" in error.message and f"{WIDTH}x{HEIGHT}" in error.message


def test_models_list_still_works_and_says_local_edits_and_varies(client) -> None:
    (local,) = [model for model in client.models.list() if model.id == "local"]
    capabilities = (local.model_extra or {})["capabilities"]  # this API's extension of OpenAI's Model
    assert capabilities["edits"] is not None and capabilities["variations"] is not None
