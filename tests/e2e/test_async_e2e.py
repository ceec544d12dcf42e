"""Asynchronous paths end to end through the local stack: API 202 -> SQS -> worker (RIE) -> poll; and a request
object in S3 -> S3 trigger (RIE) -> results manifest. Over HTTP and S3 only."""

from __future__ import annotations

import io
import json
import time
import uuid

import httpx
import pytest
from PIL import Image as PILImage

pytestmark = pytest.mark.e2e


def wait_for(check, *, timeout: float = 90.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(interval)
    raise AssertionError(f"not done within {timeout} s")


def test_prefer_respond_async_then_poll(local_stack) -> None:
    response = httpx.post(
        f"{local_stack.base_url}/v1/images/generations",
        json={"prompt": "a lighthouse at dawn", "model": "local", "size": "512x512", "n": 2},
        headers={"Prefer": "respond-async"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    assert response.json()["status"] == "queued"

    def finished():
        job = httpx.get(f"{local_stack.base_url}{location}", timeout=30).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job = wait_for(finished)
    assert job["status"] == "succeeded", job
    for item in job["data"]:
        image = PILImage.open(io.BytesIO(httpx.get(item["url"], timeout=30).content))
        assert image.size == (512, 512)


def test_request_object_in_s3_gets_a_results_manifest(local_stack, s3) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}.json"
    s3.put_object(Bucket=local_stack.bucket, Key=f"requests/{name}", Body=json.dumps({"prompt": "a red fox", "size": "256x256"}))

    def manifest():
        try:
            return json.loads(s3.get_object(Bucket=local_stack.bucket, Key=f"results/{name}")["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    result = wait_for(manifest)
    assert result["status"] == "succeeded" and len(result["images"]) == 1
    data = s3.get_object(Bucket=local_stack.bucket, Key=result["images"][0]["key"])["Body"].read()
    assert PILImage.open(io.BytesIO(data)).size == (256, 256)


def test_a_retried_async_post_with_an_idempotency_key_gets_the_same_job(local_stack) -> None:
    # The retry a client makes after a timeout or a dropped connection (reproduced through make local before the fix)
    key = f"e2e-{uuid.uuid4()}"
    body = {"prompt": f"a lighthouse {key}", "model": "local", "size": "256x256"}
    headers = {"Prefer": "respond-async", "Idempotency-Key": key}
    first = httpx.post(f"{local_stack.base_url}/v1/images/generations", json=body, headers=headers, timeout=30)
    again = httpx.post(f"{local_stack.base_url}/v1/images/generations", json=body, headers=headers, timeout=30)
    assert (first.status_code, again.status_code) == (202, 202), (first.text, again.text)
    assert again.json()["id"] == first.json()["id"] and again.headers["Location"] == first.headers["Location"]
    assert (first.headers["Idempotent-Replayed"], again.headers["Idempotent-Replayed"]) == ("false", "true")
    # And the same key with another body is refused
    other = httpx.post(f"{local_stack.base_url}/v1/images/generations", json={**body, "size": "512x512"}, headers=headers, timeout=30)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")

    def finished():
        job = httpx.get(f"{local_stack.base_url}{first.headers['Location']}", timeout=30).json()
        return job if job["status"] in ("succeeded", "failed") else None

    assert wait_for(finished)["status"] == "succeeded"
