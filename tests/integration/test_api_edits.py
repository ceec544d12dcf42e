"""POST /v1/images/edits and /v1/images/variations through the API handler in-process, against the real S3 server:
multipart bodies built by httpx as the Python SDK builds them (base64 in the event, as API Gateway sends binary media
types) and JSON bodies by reference. What the answer holds, what is stored under inputs/ and images/, and every
refusal: a 400 (or 413, 404) in OpenAI's error shape naming the field, with nothing written for that request."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import clear_caches, load_event

pytestmark = pytest.mark.integration

EDITS = "/v1/images/edits"
VARIATIONS = "/v1/images/variations"
SIDE = 64
FileSpec = tuple[str, tuple[str, bytes, str]]


def picture(mode: str = "RGB", size: tuple[int, int] = (SIDE, SIDE), image_format: str = "PNG", seed: int = 0) -> bytes:
    """An image whose every pixel differs from its neighbours, so an inverted or shifted half shows."""
    image = PILImage.new(mode, size)
    width, height = size
    channels = len(mode)
    image.putdata([tuple((x * 4 + y * 3 + seed + 60 * c) % 256 for c in range(channels)) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def half_mask(size: tuple[int, int] = (SIDE, SIDE), mode: str = "RGBA", image_format: str = "PNG") -> bytes:
    """Transparent (the area to edit) on the left half, opaque on the right."""
    image = PILImage.new("RGBA", size, (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=image_format)
    return buffer.getvalue()


def noise(side: int) -> bytes:
    """A PNG that does not compress: random pixels."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


FIRST = picture()
SECOND = picture(seed=101)
MASK = half_mask()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def at_path(event: dict[str, Any], path: str) -> dict[str, Any]:
    event["path"] = event["resource"] = path
    event["requestContext"]["path"] = f"/prod{path}"
    event["requestContext"]["resourcePath"] = path
    return event


def set_content_type(event: dict[str, Any], value: str) -> None:
    event["headers"]["Content-Type"] = value
    event["multiValueHeaders"]["Content-Type"] = [value]


def multipart_event(files: Sequence[FileSpec], data: dict[str, str] | None = None, *, path: str = EDITS) -> dict[str, Any]:
    """The form as the Python SDK sends it (httpx encodes it), base64 in the event as API Gateway passes it on."""
    request = httpx.Request("POST", f"https://api.example.com{path}", data=data or {}, files=list(files))
    event = at_path(load_event("api_edit_multipart.json"), path)
    event["body"] = base64.b64encode(request.read()).decode("ascii")
    event["isBase64Encoded"] = True
    set_content_type(event, request.headers["Content-Type"])
    return event


def json_event(document: dict[str, Any], *, path: str = EDITS) -> dict[str, Any]:
    event = at_path(load_event("api_edit_multipart.json"), path)
    event["body"] = json.dumps(document)
    event["isBase64Encoded"] = False
    set_content_type(event, "application/json")
    return event


def png_file(name: str, data: bytes, field: str = "image[]", media: str = "image/png") -> FileSpec:
    return (field, (name, data, media))


def invoke(event: dict[str, Any], lambda_context: Any) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"])


def request_id(event: dict[str, Any]) -> str:
    return str(event["requestContext"]["requestId"])


def stored(s3: Any, bucket: str, rid: str) -> dict[str, list[str]]:
    """Every key under inputs/ and images/ that carries the request id."""
    found: dict[str, list[str]] = {}
    for prefix in ("inputs/", "images/"):
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        found[prefix] = sorted(key for key in keys if f"/{rid}/" in key)
    return found


def open_png(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def answer_bytes(item: dict[str, Any]) -> bytes:
    if "b64_json" in item:
        return base64.b64decode(item["b64_json"])
    fetched = httpx.get(item["url"], timeout=10)
    assert fetched.status_code == 200
    return fetched.content


def assert_edited(output: bytes, first: bytes, *, masked: bool = True) -> None:
    """The local provider's edit: the first input with the transparent half of the mask inverted, the rest as sent,
    and the input's SHA-256 in a tEXt chunk."""
    result = open_png(output)
    assert result.size == (SIDE, SIDE)
    assert result.info["imagegen:input-sha256"] == sha256(first)
    source = open_png(first).convert("RGB")
    got = result.convert("RGB")
    for y in range(0, SIDE, 7):
        for x in range(SIDE):
            expected = source.getpixel((x, y))
            if not masked or x < SIDE // 2:
                expected = tuple(255 - value for value in expected)
            assert got.getpixel((x, y)) == expected, (x, y)


def assert_inputs_stored(s3: Any, bucket: str, rid: str, expected: dict[str, bytes]) -> list[str]:
    keys = stored(s3, bucket, rid)
    names = {key.rsplit("/", 1)[1]: key for key in keys["inputs/"]}
    assert sorted(names) == sorted(expected)
    for name, key in names.items():
        # inputs/<yyyy>/<mm>/<dd>/<request id>/<name>
        parts = key.split("/")
        assert len(parts) == 6 and parts[4] == rid and len(parts[1]) == 4 and len(parts[2]) == 2 and len(parts[3]) == 2
        obj = s3.get_object(Bucket=bucket, Key=key)
        assert obj["Body"].read() == expected[name]
        assert obj["Metadata"]["request-id"] == rid
        assert obj["ContentType"] == "image/png"
    return keys["images/"]


def assert_nothing_written(s3: Any, bucket: str, event: dict[str, Any]) -> None:
    assert stored(s3, bucket, request_id(event)) == {"inputs/": [], "images/": []}


def assert_refused(status: int, body: dict[str, Any], *, param: str | None, code: str | None = None, expect: int = 400) -> None:
    assert status == expect, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["param"] == param, error
    if param is not None:
        assert param in error["message"], error
    if code is not None:
        assert error["code"] == code, error


# --- edits that succeed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_multipart_edit_of_two_images_and_a_mask(local_s3, s3, lambda_context, response_format) -> None:
    event = multipart_event(
        [png_file("first.png", FIRST), png_file("second.png", SECOND), png_file("mask.png", MASK, field="mask")],
        {"prompt": "invert the left half", "model": "local", "response_format": response_format},
    )
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    (item,) = body["data"]
    assert set(item) == {"url" if response_format == "url" else "b64_json"}
    output = answer_bytes(item)
    assert_edited(output, FIRST)
    rid = request_id(event)
    images = assert_inputs_stored(s3, local_s3.bucket, rid, {"image-0.png": FIRST, "image-1.png": SECOND, "mask.png": MASK})
    (key,) = images
    assert key.endswith(f"/{rid}/0.png")
    head = s3.head_object(Bucket=local_s3.bucket, Key=key)
    assert head["Metadata"]["request-id"] == rid and head["Metadata"]["model"] == "local"
    assert s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() == output


def test_multipart_edit_of_one_image_without_a_mask_inverts_it_all(local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("only.png", FIRST, field="image")], {"prompt": "invert", "response_format": "b64_json"})
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    assert_edited(answer_bytes(body["data"][0]), FIRST, masked=False)
    assert_inputs_stored(s3, local_s3.bucket, request_id(event), {"image-0.png": FIRST})


def test_json_edit_with_data_urls(local_s3, s3, lambda_context) -> None:
    event = json_event(
        {
            "prompt": "invert the left half",
            "model": "local",
            "response_format": "b64_json",
            "images": [{"image_url": data_url(FIRST)}, {"image_url": data_url(SECOND)}],
            "mask": {"image_url": data_url(MASK)},
        }
    )
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    output = answer_bytes(body["data"][0])
    assert_edited(output, FIRST)
    (key,) = assert_inputs_stored(s3, local_s3.bucket, request_id(event), {"image-0.png": FIRST, "image-1.png": SECOND, "mask.png": MASK})
    assert s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() == output


# --- refused edits: nothing written ---------------------------------------------------------------------------------


def gif() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("P", (SIDE, SIDE)).save(buffer, format="GIF")
    return buffer.getvalue()


MULTIPART_REFUSALS: dict[str, tuple[list[FileSpec], dict[str, str], str, str | None]] = {
    "mask of another size": ([png_file("a.png", FIRST), png_file("m.png", half_mask((32, 32)), field="mask")], {}, "mask", None),
    "mask without alpha": ([png_file("a.png", FIRST), png_file("m.png", half_mask(mode="RGB"), field="mask")], {}, "mask", None),
    "mask not a PNG": (
        [png_file("a.png", FIRST), png_file("m.jpg", half_mask(mode="RGB", image_format="JPEG"), field="mask", media="image/jpeg")],
        {},
        "mask",
        None,
    ),
    "text at image[1]": (
        [png_file("a.png", FIRST), png_file("b.txt", b"these are not the pixels you are looking for\n", media="text/plain")],
        {},
        "image[1]",
        "invalid_image",
    ),
    "17 images": ([png_file(f"{index}.png", FIRST) for index in range(17)], {}, "image", None),
    "a GIF input": ([png_file("a.png", FIRST), png_file("b.gif", gif(), media="image/gif")], {}, "image[1]", None),
    "size not the input's": ([png_file("a.png", FIRST)], {"size": "1024x1024"}, "size", None),
    "an unknown text field": ([png_file("a.png", FIRST)], {"colour": "red"}, "colour", "unknown_parameter"),
    "a text field named image": ([png_file("a.png", FIRST, field="mask")], {"image": "https://example.com/a.png"}, "image", None),
    # (httpx sends a form without files urlencoded, and the SDKs always send an image: a mask alone is the mistake.)
    "no image": ([png_file("m.png", MASK, field="mask")], {}, "image", "missing_required_parameter"),
    "a model that does not exist": ([png_file("a.png", FIRST)], {"model": "gpt-image-9"}, "model", None),
}


@pytest.mark.parametrize("case", list(MULTIPART_REFUSALS), ids=list(MULTIPART_REFUSALS))
def test_multipart_refusals_write_nothing(local_s3, s3, lambda_context, case) -> None:
    files, fields, param, code = MULTIPART_REFUSALS[case]
    event = multipart_event(files, {"prompt": "edit", "model": "local", **fields})
    status, body = invoke(event, lambda_context)
    expect = 404 if param == "model" else 400
    assert_refused(status, body, param=param, code=code, expect=expect)
    assert_nothing_written(s3, local_s3.bucket, event)


JSON_REFUSALS = [
    pytest.param({"images": [{"file_id": "file-abc123"}]}, "images[0].file_id", "file_id_unsupported", id="file_id"),
    pytest.param({"images": [{"key": "inputs/2026/01/01/someone-else/image-0.png"}]}, "images[0].key", None, id="a key on the API path"),
    pytest.param({"images": [{"key": "images/2026/01/01/x/0.png"}]}, "images[0].key", None, id="a key outside inputs/"),
    pytest.param({"images": [{"image_url": data_url(b"plain text", "text/plain")}]}, "images[0].image_url", None, id="a text image_url"),
    pytest.param(
        {"images": [{"image_url": data_url(FIRST)}], "mask": {"image_url": data_url(half_mask((32, 32)))}},
        "mask",
        None,
        id="a mask of another size",
    ),
    # A GIF in a data: URL that claims PNG: refused by the model's rule, named as the JSON sent it.
    pytest.param(
        {"images": [{"image_url": data_url(FIRST)}, {"image_url": data_url(gif())}]}, "images[1].image_url", None, id="a GIF at images[1]"
    ),
    pytest.param({"images": [{"image_url": data_url(FIRST)}], "size": "512x512"}, "size", None, id="size not the input's"),
    pytest.param({}, "images", "missing_required_parameter", id="no images"),
]


@pytest.mark.parametrize(("document", "param", "code"), JSON_REFUSALS)
def test_json_refusals_write_nothing(local_s3, s3, lambda_context, document, param, code) -> None:
    event = json_event({"prompt": "edit", "model": "local", **document})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param=param, code=code)
    assert_nothing_written(s3, local_s3.bucket, event)


def test_wrong_content_type_is_refused(local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST)], {"prompt": "edit"})
    set_content_type(event, "text/plain")
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param=None, code="unsupported_content_type")
    assert "text/plain" in body["error"]["message"] and "multipart/form-data" in body["error"]["message"]
    assert_nothing_written(s3, local_s3.bucket, event)


def test_an_upload_above_max_upload_bytes_is_a_413(local_s3, s3, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "4096")
    clear_caches()
    large = noise(128)
    assert len(large) > 4096
    event = multipart_event([png_file("a.png", large)], {"prompt": "edit"})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param=None, code="request_too_large", expect=413)
    assert "4096" in body["error"]["message"]
    assert_nothing_written(s3, local_s3.bucket, event)
    small = multipart_event([png_file("a.png", picture(size=(8, 8)), field="image")], {"prompt": "edit"})
    assert invoke(small, lambda_context)[0] == 200  # the limit is the body's size, not a refusal of every upload


def test_a_model_that_does_not_edit_names_those_that_do(local_s3, s3, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps({"models": ["local", "stability.sd3-5-large-v1:0"]}))
    monkeypatch.setenv("BEDROCK_ENABLED", "true")
    clear_caches()
    event = multipart_event([png_file("a.png", FIRST)], {"prompt": "edit", "model": "stability.sd3-5-large-v1:0"})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="model", code="unsupported_operation")
    assert "'local'" in body["error"]["message"] and "/v1/images/edits" in body["error"]["message"]
    assert_nothing_written(s3, local_s3.bucket, event)


def test_a_retired_model_is_a_404(local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST)], {"prompt": "edit", "model": "gpt-image-1"})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="model", code="model_retired", expect=404)
    assert "gpt-image-2.5-sunburst" in body["error"]["message"]
    assert_nothing_written(s3, local_s3.bucket, event)


def test_input_fidelity_for_a_model_without_it(openai_env, local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST)], {"prompt": "edit", "model": "gpt-image-2", "input_fidelity": "high"})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="input_fidelity")
    assert "gpt-image-2" in body["error"]["message"]
    assert openai_env.requests == []  # refused before the provider: nothing billed
    assert_nothing_written(s3, local_s3.bucket, event)


def test_input_fidelity_the_model_allows_is_served(local_s3, lambda_context) -> None:
    event = multipart_event(
        [png_file("a.png", FIRST, field="image")], {"prompt": "edit", "input_fidelity": "low", "response_format": "b64_json"}
    )
    status, body = invoke(event, lambda_context)
    assert status == 200, body


# --- variations -----------------------------------------------------------------------------------------------------


def test_multipart_variation_of_one_png(local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST, field="image")], {"model": "local", "response_format": "b64_json"}, path=VARIATIONS)
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    (item,) = body["data"]
    output = base64.b64decode(item["b64_json"])
    assert_edited(output, FIRST, masked=False)
    (key,) = assert_inputs_stored(s3, local_s3.bucket, request_id(event), {"image-0.png": FIRST})
    assert s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() == output


def test_variation_with_a_model_that_makes_none_names_local(openai_env, local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST, field="image")], {"model": "gpt-image-2.5-sunburst"}, path=VARIATIONS)
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="model", code="unsupported_operation")
    assert "'local'" in body["error"]["message"]
    assert openai_env.requests == []
    assert_nothing_written(s3, local_s3.bucket, event)


def test_json_variation_with_a_data_url(local_s3, s3, lambda_context) -> None:
    event = json_event({"image": {"image_url": data_url(FIRST)}, "response_format": "url"}, path=VARIATIONS)
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    assert_edited(answer_bytes(body["data"][0]), FIRST, masked=False)
    assert_inputs_stored(s3, local_s3.bucket, request_id(event), {"image-0.png": FIRST})


@pytest.mark.parametrize(
    ("image", "param"),
    [
        pytest.param({"image_url": data_url(b"plain text", "text/plain")}, "image.image_url", id="a text data URL"),
        pytest.param({"file_id": "file-abc123"}, "image.file_id", id="file_id"),
        pytest.param({"image_url": data_url(gif())}, "image", id="a GIF"),
    ],
)
def test_json_variation_refusals_name_the_image(local_s3, s3, lambda_context, image, param) -> None:
    event = json_event({"image": image}, path=VARIATIONS)
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param=param)
    assert_nothing_written(s3, local_s3.bucket, event)


def test_variation_of_two_images_is_refused(local_s3, s3, lambda_context) -> None:
    event = multipart_event([png_file("a.png", FIRST, field="image"), png_file("b.png", SECOND, field="image")], {}, path=VARIATIONS)
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="image")
    assert_nothing_written(s3, local_s3.bucket, event)


# --- image_url over http to loopback --------------------------------------------------------------------------------


@pytest.fixture
def image_server() -> Iterator[str]:
    """A plain HTTP server on loopback answering FIRST at /first.png."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/first.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(FIRST)))
            self.end_headers()
            self.wfile.write(FIRST)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/first.png"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_image_url_to_loopback_when_allowed(local_s3, s3, lambda_context, monkeypatch, image_server) -> None:
    monkeypatch.setenv("ALLOW_LOOPBACK_IMAGE_URLS", "1")
    clear_caches()
    event = json_event({"prompt": "edit", "images": [{"image_url": image_server}], "response_format": "b64_json"})
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    assert_edited(answer_bytes(body["data"][0]), FIRST, masked=False)
    assert_inputs_stored(s3, local_s3.bucket, request_id(event), {"image-0.png": FIRST})


def test_image_url_to_loopback_is_refused_by_default(local_s3, s3, lambda_context, image_server) -> None:
    event = json_event({"prompt": "edit", "images": [{"image_url": image_server}]})
    status, body = invoke(event, lambda_context)
    assert_refused(status, body, param="images[0].image_url")
    assert_nothing_written(s3, local_s3.bucket, event)


# --- S3 failing while the inputs are written ------------------------------------------------------------------------


def test_a_failed_input_write_keeps_no_input_and_writes_no_image(local_s3, s3, s3_proxy, monkeypatch, lambda_context) -> None:
    # Given S3 refusing the write of the mask (the image's write succeeds)
    s3_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint_url)
    clear_caches()
    event = multipart_event(
        [png_file("first.png", FIRST, field="image"), png_file("mask.png", MASK, field="mask")], {"prompt": "x", "model": "local"}
    )
    rid = request_id(event)
    s3_proxy.inject("PUT", rf"/inputs/.*/{rid}/mask\.png", status=500, code="InternalError", times=5)
    # When the edit is sent: a 502 storage error, the image's input deleted again, no output written
    status, body = invoke(event, lambda_context)
    assert (status, body["error"]["code"]) == (502, "storage_error"), body
    assert [code for *_, code in s3_proxy.requests("PUT", rf"/{rid}/image-0\.png")] == [200]
    assert s3_proxy.requests("POST", r"\?delete")  # DeleteObjects of what was written
    assert_nothing_written(s3, local_s3.bucket, event)
    s3_proxy.reset()


# --- the provider failing after the inputs are written --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expect", "code"),
    [("fail:moderation", 400, "moderation_blocked"), ("fail:500", 502, "provider_error")],
    ids=["refused-by-the-provider", "provider-failing"],
)
def test_an_edit_the_provider_refuses_or_fails_keeps_none_of_its_inputs(
    openai_env, local_s3, s3, lambda_context, monkeypatch, prompt: str, expect: int, code: str
) -> None:
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    event = multipart_event(
        [png_file("first.png", FIRST, field="image"), png_file("mask.png", MASK, field="mask")],
        {"prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024", "response_format": "url"},
    )
    status, body = invoke(event, lambda_context)
    assert (status, body["error"]["code"]) == (expect, code), body
    assert [request["path"] for request in openai_env.requests] == ["/v1/images/edits"]  # written first, then the call
    assert_nothing_written(s3, local_s3.bucket, event)
