"""A presigned URL lives no longer than the credentials that signed it (a Lambda role's session lasts hours), so
URLs are never stored: every read signs them again. An idempotent replay read twice gets two fresh signatures (the
job read is checked the same way in test_async_jobs)."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration


def replay(lambda_context, key: str, prompt: str) -> tuple[str, list[str]]:
    event = load_event("api_generate_url.json", prompt=prompt, size="256x256", n=2)
    event["headers"]["Idempotency-Key"] = key
    event["multiValueHeaders"]["Idempotency-Key"] = [key]
    response = app.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    return response["multiValueHeaders"]["Idempotent-Replayed"][0], [item["url"] for item in json.loads(response["body"])["data"]]


def signed(url: str) -> tuple[str, str, str]:
    query = parse_qs(urlsplit(url).query)
    return urlsplit(url).path, query["X-Amz-Date"][0], query["X-Amz-Signature"][0]


def test_every_replay_signs_its_urls_afresh(job_resources, lambda_context) -> None:
    key, prompt = str(uuid.uuid4()), f"resign {uuid.uuid4()}"
    first = replay(lambda_context, key, prompt)
    time.sleep(1.1)  # SigV4 dates have a resolution of one second
    again = replay(lambda_context, key, prompt)
    time.sleep(1.1)
    third = replay(lambda_context, key, prompt)
    assert [first[0], again[0], third[0]] == ["false", "true", "true"]
    for before, after in ((first[1], again[1]), (again[1], third[1])):
        for url_before, url_after in zip(before, after, strict=True):
            (path, date, signature), (path_after, date_after, signature_after) = signed(url_before), signed(url_after)
            assert path == path_after  # the same image...
            assert date_after > date and signature_after != signature  # ...signed at the time of this read
    assert all(httpx.get(url, timeout=10).status_code == 200 for url in third[1])
