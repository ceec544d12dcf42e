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
