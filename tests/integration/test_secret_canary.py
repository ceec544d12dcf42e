"""A canary provider key, used for real and then looked for everywhere it must never be.

The API, worker and S3-trigger handlers run in-process against the real S3 server, the jobs queue and table (moto
server) and the fake OpenAI server, with a unique OPENAI_API_KEY, on successes and on every provider failure the
fake can produce. The fake must receive the key (else the test proves nothing); then no log line (Powertools at
DEBUG), response body or header, S3 object (body, metadata, manifest), job record or events/ file may contain it,
nor a fragment of it, nor the provider's own 401 message (which quotes a key fragment).
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.api import app as api
from functions.s3_trigger import app as s3_trigger
from imagegen.observability import logger
from tests.conftest import EVENTS, job_event, load_event

pytestmark = pytest.mark.integration

# Every failure tests/fakes/openai_server.py can answer (fail:slow aside: it only waits).
PROVIDER_FAILURES = ("fail:400", "fail:401", "fail:429", "fail:500", "fail:policy", "fail:malformed", "flaky:1:canary")
# What the fake's 401 says: a real provider quotes a fragment of the key it refused.
PROVIDER_401_MESSAGE = "Incorrect API key provided"
PROVIDER_401_FRAGMENT = "sk-fake***1234"
# An OpenAI-style key anywhere in events/ (the sample bearer token of the authorizer event is our API's, not one).
PROVIDER_KEY_PATTERN = re.compile(r"sk-(?:proj-|canary-)?[A-Za-z0-9_-]{16,}")


def _needles(canary: str) -> list[str]:
    """The canary and fragments of its random part long enough never to occur by chance (12 hex digits)."""
    random_part = canary.removeprefix("sk-canary-")
    return [canary, random_part, random_part[:12], random_part[-12:]]


def _leaks(text: str, canary: str) -> list[str]:
    return [needle for needle in _needles(canary) if needle in text]


@pytest.fixture
def canary(job_resources, fake_openai, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    key = "sk-canary-" + secrets.token_hex(20)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "1")  # one retry: the retry path logs too, and flaky:1 recovers
    fake_openai.requests.clear()
    # Everything the service logs, not only warnings (LogLevel DEBUG is a deployment option)
    level = logger.log_level
    logger.setLevel(logging.DEBUG)
    try:
        yield key
    finally:
        logger.setLevel(level)


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """What the Powertools Logger writes (JSON lines, stdout in Lambda). Its handler keeps the stream it was created
    with (pytest's capture at import time, not fd 1), so read it at the handler."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)


def _call_api(event: dict[str, Any], lambda_context: Any, responses: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    response = api.lambda_handler(event, lambda_context)
    responses.append(response)
    return response["statusCode"], json.loads(response["body"])


def _generate_event(**body: Any) -> dict[str, Any]:
    """POST /v1/images/generations with exactly this body (the sample event's body replaced, its headers kept)."""
    event = load_event("api_generate_url.json")
    event["body"] = json.dumps({"n": 1, "size": "256x256", **body})
    return event


def _s3_event(bucket: str, key: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "s3_put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    return event


def _bucket_keys(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def test_the_provider_key_reaches_the_provider_and_nothing_else(
    canary, fake_openai, job_resources, moto_server, worker_poller, local_s3, s3, lambda_context, service_log, caplog, capfd
) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = local_s3.bucket
    before = _bucket_keys(s3, bucket)
    responses: list[dict[str, Any]] = []

    # Given synchronous generations: both answer formats, every provider failure, a request we refuse ourselves
    for response_format in ("url", "b64_json"):
        event = _generate_event(prompt="a canary fox", model="gpt-image-1.5", size="1024x1024", response_format=response_format)
        status, answer = _call_api(event, lambda_context, responses)
        assert status == 200, answer
    for prompt in PROVIDER_FAILURES:
        status, answer = _call_api(
            _generate_event(prompt=prompt, model="gpt-image-1-mini", size="1024x1024", response_format="b64_json"),
            lambda_context,
            responses,
        )
        assert (status == 200) == prompt.startswith("flaky:"), (prompt, status, answer)
    _call_api(load_event("api_generate_invalid.json"), lambda_context, responses)
    for name in ("api_models.json", "api_health.json"):
        _call_api(load_event(name), lambda_context, responses)

    # And asynchronous jobs through the queue and the worker, one good, one refused by the provider (401)
    job_ids = []
    for prompt in ("a canary owl", "fail:401"):
        event = _generate_event(prompt=prompt, model="gpt-image-1-mini", size="1024x1024")
        event["headers"]["Prefer"] = "respond-async"
        event["multiValueHeaders"]["Prefer"] = ["respond-async"]
        status, accepted = _call_api(event, lambda_context, responses)
        assert status == 202, accepted
        job_ids.append(accepted["id"])
    worker_poller.drain()
    statuses = [_call_api(job_event(job_id), lambda_context, responses)[1]["status"] for job_id in job_ids]
    assert statuses == ["succeeded", "failed"]

    # And request objects through the S3 trigger and the worker, one good, one refused by the provider (401)
    batch = f"canary-{uuid.uuid4().hex[:8]}"
    for name, prompt in (("good.json", "a canary heron"), ("refused.json", "fail:401")):
        key = f"requests/{batch}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024"}))
        s3_trigger.lambda_handler(_s3_event(bucket, key), lambda_context)
    worker_poller.drain()
    manifests = [
        json.loads(s3.get_object(Bucket=bucket, Key=f"results/{batch}/{name}")["Body"].read()) for name in ("good.json", "refused.json")
    ]
    assert [m["status"] for m in manifests] == ["succeeded", "failed"]

    # Then the provider did get the key, on every call (so the searches below could have found it)
    assert len(fake_openai.requests) >= len(PROVIDER_FAILURES) + 6
    assert {sent["headers"].get("Authorization") for sent in fake_openai.requests} == {f"Bearer {canary}"}

    # And no response carries it, in its body or its headers, nor the provider's 401 message
    assert len(responses) >= 16
    for response in responses:
        text = json.dumps(response)
        assert _leaks(text, canary) == [], response.get("body", "")[:500]
        assert PROVIDER_401_MESSAGE not in text and PROVIDER_401_FRAGMENT not in text, response["body"][:500]
    refused = [json.loads(r["body"]) for r in responses if r["statusCode"] == 502 and "provider_auth_failed" in r["body"]]
    assert refused, "the provider's 401 was not answered as provider_auth_failed"

    # And no log line does: the service's JSON lines, every record of any logger with its traceback (caplog), and
    # whatever reached the process's stdout/stderr
    service_lines = [line for line in service_log.getvalue().splitlines() if line.strip()]
    assert any('"level":"DEBUG"' in line or '"level":"INFO"' in line for line in service_lines), "no service log captured"
    captured = capfd.readouterr()
    log_lines = service_lines + caplog.text.splitlines() + (captured.out + captured.err).splitlines()
    leaking = [line for line in log_lines if _leaks(line, canary) or PROVIDER_401_FRAGMENT in line]
    assert leaking == []
    print(f"\ncanary: {len(fake_openai.requests)} provider calls, {len(responses)} responses, {len(log_lines)} log lines checked")

    # And nothing written to S3: objects, their metadata, the manifests
    written = _bucket_keys(s3, bucket) - before
    assert any(k.startswith("images/") for k in written) and any(k.startswith("results/") for k in written), written
    for key in sorted(written):
        head = s3.head_object(Bucket=bucket, Key=key)
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        described = json.dumps({"metadata": head.get("Metadata", {}), "type": head.get("ContentType")})
        assert _leaks(described, canary) == [], (key, described)
        assert _leaks(data.decode("latin-1"), canary) == [], key
        if key.startswith("results/"):
            assert PROVIDER_401_FRAGMENT not in data.decode(), key

    # And no events/ file (the sample events the handlers are invoked with)
    for path in (p for p in Path(EVENTS).rglob("*") if p.is_file()):
        assert _leaks(path.read_text(errors="replace"), canary) == [], path

    # And no job record
    items = moto_server.client("dynamodb").scan(TableName=job_resources.table)["Items"]
    assert len(items) >= 2
    assert _leaks(json.dumps(items, default=str), canary) == []
    assert PROVIDER_401_FRAGMENT not in json.dumps(items, default=str)


def test_no_provider_key_in_events() -> None:
    files = [path for path in Path(EVENTS).rglob("*") if path.is_file()]
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        assert PROVIDER_KEY_PATTERN.search(text) is None, path
        assert "OPENAI_API_KEY" not in text, path


def test_the_leak_check_finds_a_fragment() -> None:
    # The searches above are only as good as this: the canary, or a piece of its random part, is found
    canary = "sk-canary-" + secrets.token_hex(20)
    assert _leaks(f'{{"message": "bad key {canary}"}}', canary)
    assert _leaks(f"Incorrect API key provided: sk-can***{canary[-12:]}", canary)
    assert _leaks("nothing to see", canary) == []
