"""The API handler in-process against the real S3 server (SeaweedFS on loopback): what is stored, and what the
presigned URLs give back."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image as PILImage

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration


def invoke(event, lambda_context):
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"])


def decode_png(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_url_event_stores_images_and_presigned_urls_serve_them(local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_url.json")
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    assert len(body["data"]) == 2 and set(body) == {"created", "data"}
    request_id = event["requestContext"]["requestId"]
    for index, item in enumerate(body["data"]):
        assert set(item) == {"url"}
        assert "X-Amz-Signature=" in item["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in item["url"]
        fetched = httpx.get(item["url"], timeout=10)
        assert fetched.status_code == 200
        assert decode_png(fetched.content).size == (512, 512)
        key = httpx.URL(item["url"]).path.split(f"/{local_s3.bucket}/", 1)[1]
        assert key.startswith("images/") and key.endswith(f"/{request_id}/{index}.png")
        head = s3.head_object(Bucket=local_s3.bucket, Key=key)
        assert head["ContentType"] == "image/png"
        assert head["Metadata"]["model"] == "local" and len(head["Metadata"]["prompt-sha256"]) == 64
        assert "lighthouse" not in json.dumps(head["Metadata"])


def test_b64_event_answers_the_stored_bytes(local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_b64.json")
    status, body = invoke(event, lambda_context)
    assert status == 200, body
    (item,) = body["data"]
    data = base64.b64decode(item["b64_json"])
    assert decode_png(data).size == (256, 256)
    listed = s3.list_objects_v2(Bucket=local_s3.bucket, Prefix="images/")["Contents"]
    (key,) = [obj["Key"] for obj in listed if event["requestContext"]["requestId"] in obj["Key"]]
    assert s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() == data


def test_tampered_presigned_url_is_refused_by_s3(local_s3, lambda_context) -> None:
    status, body = invoke(load_event("api_generate_url.json", n=1), lambda_context)
    assert status == 200
    url = body["data"][0]["url"]
    tampered = url.replace("/0.png", "/1.png") if "/0.png" in url else url + "x"
    assert httpx.get(tampered, timeout=10).status_code == 403
    signature = httpx.URL(url).params["X-Amz-Signature"]
    forged = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert httpx.get(forged, timeout=10).status_code == 403


def test_rejected_request_writes_nothing(local_s3, s3, lambda_context) -> None:
    event = load_event("api_generate_url.json", size="640x480")
    status, body = invoke(event, lambda_context)
    assert status == 400 and body["error"]["param"] == "size"
    listed = s3.list_objects_v2(Bucket=local_s3.bucket, Prefix="images/").get("Contents", [])
    assert not [obj for obj in listed if event["requestContext"]["requestId"] in obj["Key"]]


def test_s3_refusing_the_writes_is_a_clean_502_leaving_nothing(local_s3, s3, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-servers-secret")
    event = load_event("api_generate_url.json")
    status, body = invoke(event, lambda_context)
    assert status == 502
    assert body["error"]["code"] == "storage_error"
    listed = s3.list_objects_v2(Bucket=local_s3.bucket, Prefix="images/").get("Contents", [])
    assert not [obj for obj in listed if event["requestContext"]["requestId"] in obj["Key"]]
