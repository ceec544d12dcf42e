"""A route over real HTTP: the fake OpenAI server on loopback answering the faults the prompt picks (its own error
bodies), the local model behind it, the real S3 server, through the API handler; and a streamed route through the
service. The first model's failure that another model may not suffer falls to the next; the caller's own fault is
the answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from functions.api import app
from imagegen.deadline import Deadline
from imagegen.http import SERVED_BY_HEADER
from imagegen.options import ImageGenerationRequest
from imagegen.service import get_service
from imagegen.streaming import CompletedEvent, ErrorEvent, PartialImageEvent
from tests.conftest import job_event, load_event
from tests.integration.test_async_jobs import async_event, call_api

pytestmark = pytest.mark.integration

REGISTRY = {"models": ["local", "gpt-image-1-mini", {"id": "fast", "route": ["gpt-image-1-mini", "local"]}], "default_model": "local"}


@pytest.fixture
def routed(openai_env, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps(REGISTRY))
    return openai_env


def stored_keys(s3, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])]


def invoke(lambda_context, **body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = app.lambda_handler(load_event("api_generate_b64.json", **body), lambda_context)
    headers = {name.lower(): values[-1] for name, values in (response.get("multiValueHeaders") or {}).items()}
    return response["statusCode"], json.loads(response["body"]), headers


@pytest.mark.parametrize("prompt", ["fail:500", "fail:503", "fail:429-bare", "fail:quota", "fail:404", "fail:malformed"])
def test_a_failing_first_model_falls_to_the_next_and_the_header_names_it(routed, local_s3, s3, lambda_context, prompt) -> None:
    before = set(stored_keys(s3, local_s3.bucket))
    status, body, headers = invoke(lambda_context, prompt=prompt, model="fast", size="1024x1024", response_format="b64_json")
    assert status == 200, body
    assert headers[SERVED_BY_HEADER] == "local"
    assert len(routed.requests) >= 1  # OpenAI was asked first (and retried where its answer allows)
    (new,) = set(stored_keys(s3, local_s3.bucket)) - before
    assert s3.head_object(Bucket=local_s3.bucket, Key=new)["Metadata"]["model"] == "local"
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG")


def test_a_working_first_model_serves(routed, lambda_context) -> None:
    status, body, headers = invoke(lambda_context, prompt="a fox", model="fast", size="1024x1024", response_format="b64_json")
    assert status == 200, body
    assert headers[SERVED_BY_HEADER] == "gpt-image-1-mini"
    (sent,) = routed.requests
    assert sent["json"]["model"] == "gpt-image-1-mini"


@pytest.mark.parametrize(("prompt", "status", "code"), [("fail:moderation", 400, "moderation_blocked"), ("fail:400", 400, None)])
def test_a_refusal_or_a_validation_error_is_the_answer(routed, local_s3, s3, lambda_context, prompt, status, code) -> None:
    before = set(stored_keys(s3, local_s3.bucket))
    answered, body, headers = invoke(lambda_context, prompt=prompt, model="fast", size="1024x1024", response_format="b64_json")
    assert answered == status, body
    if code is not None:
        assert body["error"]["code"] == code
    assert SERVED_BY_HEADER not in headers
    assert set(stored_keys(s3, local_s3.bucket)) == before
    assert len(routed.requests) == 1


def test_a_request_one_model_of_the_route_cannot_take_is_a_400_before_any_call(routed, lambda_context) -> None:
    status, body, _ = invoke(lambda_context, prompt="a fox", model="fast", size="256x256", response_format="b64_json")
    assert status == 400, body
    assert body["error"]["param"] == "size" and "gpt-image-1-mini" in body["error"]["message"]
    assert routed.requests == []


def test_the_route_is_listed_among_the_models(routed, lambda_context) -> None:
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    ids = [model["id"] for model in json.loads(response["body"])["data"]]
    assert "fast" in ids and "gpt-image-1-mini" in ids


def stream(prompt: str) -> list[Any]:
    request = ImageGenerationRequest.model_validate(
        {"prompt": prompt, "model": "fast", "size": "1024x1024", "stream": True, "partial_images": 2}
    )
    return list(get_service().stream(request, request_id="stream/route", deadline=Deadline.after(30)))


def test_a_stream_falls_to_the_next_model_before_its_first_partial(routed, local_s3) -> None:
    events = stream("fail:500")
    completed = [event for event in events if isinstance(event, CompletedEvent)]
    assert len(completed) == 1 and not any(isinstance(event, ErrorEvent) for event in events)
    assert len(routed.requests) >= 1


def test_a_stream_that_failed_after_a_partial_does_not_fall(routed, local_s3, s3) -> None:
    before = set(stored_keys(s3, local_s3.bucket))
    events = stream("fail:mid-stream")
    assert isinstance(events[0], PartialImageEvent)
    assert isinstance(events[-1], ErrorEvent)
    assert not any(isinstance(event, CompletedEvent) for event in events)
    assert set(stored_keys(s3, local_s3.bucket)) == before


def test_an_async_job_on_a_route_records_the_model_that_served_it_and_counts_the_fall(
    routed, job_resources, worker_poller, lambda_context, monkeypatch, capsys
) -> None:
    """Through the API (Prefer: respond-async), the queue and the worker: the first model answers 500 over HTTP, the
    second serves, and the job record names the second, not the route."""
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    status, accepted, _ = call_api(async_event(prompt="fail:500", model="fast", n=1, size="1024x1024"), lambda_context)
    assert status == 202, accepted
    queued = call_api(job_event(accepted["id"]), lambda_context)[1]
    assert (queued["status"], queued["model"]) == ("queued", "fast")  # the route's id until the job is done
    worker_poller.drain()
    status, done, _ = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, done["status"]) == (200, "succeeded"), done
    assert done["model"] == "local"
    (sent,) = routed.requests  # OpenAI was asked once (no retries), then the route fell to local
    assert sent["json"]["model"] == "gpt-image-1-mini"
    falls = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ProviderFallbacks"' in line]
    assert [(fall["route"], fall["model"], fall["ProviderFallbacks"]) for fall in falls] == [("fast", "gpt-image-1-mini", [1.0])]
