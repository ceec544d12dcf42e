"""``Idempotency-Key`` with ``Prefer: respond-async`` against the real loopback servers: the jobs table and queue on
moto server (real DynamoDB conditions, real SQS message counts), S3 on SeaweedFS, the fake OpenAI on HTTP. A client
retrying a POST (a timeout, a dropped connection) must get the same job and queue nothing: no second message, no
second bill."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from functions.api import app as api
from imagegen import jobs as jobs_module
from tests.conftest import FakeLambdaContext, clear_caches, job_event, load_event

pytestmark = pytest.mark.integration


def call_api(event, lambda_context):
    response = api.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response.get("multiValueHeaders", {})


def keyed_post(key: str, *, api_key: str | None = None, **body) -> dict:
    event = load_event("api_generate_url.json", **body)
    headers = {"Prefer": "respond-async", "Idempotency-Key": key}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    for name, value in headers.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def messages_in(sqs, queue_url: str) -> int:
    """Every message the queue holds, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def provider_calls(fake, prompt: str) -> int:
    return [request["json"]["prompt"] for request in fake.requests].count(prompt)


@pytest.fixture
def sqs(moto_server):
    return moto_server.client("sqs")


def test_a_retried_post_gets_the_same_job_and_queues_nothing(job_resources, openai_env, worker_poller, sqs, lambda_context) -> None:
    # Given an async POST with an Idempotency-Key
    key, prompt = f"order-{uuid.uuid4()}", f"a fox {uuid.uuid4()}"
    status, first, first_headers = call_api(keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), lambda_context)
    assert status == 202, first
    assert first_headers["Idempotent-Replayed"] == ["false"]
    assert messages_in(sqs, job_resources.queue_url) == 1
    # When the client retries it (the other spelling of a field is the same request)
    retry = keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024", responseFormat=None, response_format="url")
    status, again, headers = call_api(retry, lambda_context)
    # Then it gets the same job, at the same Location, and nothing more is queued
    assert status == 202, again
    assert (again["id"], again["location"], again["created"]) == (first["id"], first["location"], first["created"])
    assert headers["Location"] == first_headers["Location"] and headers["Idempotent-Replayed"] == ["true"]
    assert messages_in(sqs, job_resources.queue_url) == 1
    # And once the worker has run it, a retry still answers that job, now succeeded, and the provider billed once
    worker_poller.drain()
    status, done, _ = call_api(keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), lambda_context)
    assert (status, done["id"], done["status"]) == (202, first["id"], "succeeded")
    assert messages_in(sqs, job_resources.queue_url) == 0
    assert provider_calls(openai_env, prompt) == 1
    assert call_api(job_event(first["id"]), lambda_context)[1]["status"] == "succeeded"


def test_the_same_key_with_another_body_is_refused(job_resources, sqs, lambda_context) -> None:
    key = f"order-{uuid.uuid4()}"
    assert call_api(keyed_post(key, prompt="a fox", size="256x256"), lambda_context)[0] == 202
    status, body, _ = call_api(keyed_post(key, prompt="a wolf", size="256x256"), lambda_context)
    assert status == 422
    assert (body["error"]["code"], body["error"]["param"], body["error"]["type"]) == (
        "idempotency_key_reused",
        "Idempotency-Key",
        "invalid_request_error",
    )
    assert messages_in(sqs, job_resources.queue_url) == 1


def test_a_key_is_scoped_to_its_caller(job_resources, sqs, lambda_context) -> None:
    # Given two callers (two API keys) who happen to use the same Idempotency-Key
    key, alice, bob = f"order-{uuid.uuid4()}", "key-alice-0123456789abcdefghij", "key-bob-0123456789abcdefghijkl"
    _, for_alice, _ = call_api(keyed_post(key, api_key=alice, prompt="a fox", size="256x256"), lambda_context)
    status, for_bob, _ = call_api(keyed_post(key, api_key=bob, prompt="a wolf", size="256x256"), lambda_context)
    # Then each gets a job of their own (no 422 for Bob, no view of Alice's job)
    assert status == 202 and for_bob["id"] != for_alice["id"]
    assert messages_in(sqs, job_resources.queue_url) == 2
    bob_reads_alice = job_event(for_alice["id"])
    bob_reads_alice["headers"]["Authorization"] = f"Bearer {bob}"
    assert call_api(bob_reads_alice, lambda_context)[0] == 404


def test_a_malformed_key_is_a_400_naming_the_header(job_resources, sqs, lambda_context) -> None:
    status, body, _ = call_api(keyed_post("x" * 256, prompt="a fox", size="256x256"), lambda_context)
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key")
    assert messages_in(sqs, job_resources.queue_url) == 0


class Killed(BaseException):
    """The invocation dies here (a timeout or an out-of-memory kill): no handler runs, nothing answers."""


def test_a_submit_that_died_before_queueing_is_queued_by_the_retry(job_resources, openai_env, worker_poller, sqs, monkeypatch) -> None:
    # Given a submit whose invocation (1.5 s left) died after creating the job's row, before sending its message
    key, prompt = f"order-{uuid.uuid4()}", f"a crash {uuid.uuid4()}"

    def killed(self, request):
        raise Killed

    with monkeypatch.context() as dying:
        dying.setattr(jobs_module.JobQueue, "send", killed)
        with pytest.raises(Killed):
            api.lambda_handler(
                keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), FakeLambdaContext(remaining_millis=1500)
            )
    assert messages_in(sqs, job_resources.queue_url) == 0
    # When the client retries while that invocation could still be at work, it is told to wait, and nothing is queued
    status, body, _ = call_api(keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), FakeLambdaContext())
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_progress")
    assert messages_in(sqs, job_resources.queue_url) == 0
    # And once that invocation is certainly over, the retry queues the job (once: a second retry queues nothing)
    time.sleep(3.1)
    status, taken, _ = call_api(keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), FakeLambdaContext())
    assert status == 202, taken
    status, again, headers = call_api(keyed_post(key, prompt=prompt, model="gpt-image-1-mini", size="1024x1024"), FakeLambdaContext())
    assert (status, again["id"], headers["Idempotent-Replayed"]) == (202, taken["id"], ["true"])
    assert messages_in(sqs, job_resources.queue_url) == 1
    # And the job runs
    worker_poller.drain()
    assert call_api(job_event(taken["id"]), FakeLambdaContext())[1]["status"] == "succeeded"
    assert provider_calls(openai_env, prompt) == 1


def test_a_retry_after_the_queue_refused_queues_at_once(job_resources, sqs, monkeypatch, lambda_context) -> None:
    # Given a submit the queue refused (502: nothing was queued)
    key = f"order-{uuid.uuid4()}"
    with monkeypatch.context() as broken:
        broken.setenv("JOBS_QUEUE_URL", job_resources.queue_url + "-does-not-exist")
        clear_caches()
        status, body, _ = call_api(keyed_post(key, prompt="a fox", size="256x256"), lambda_context)
        assert (status, body["error"]["code"]) == (502, "queue_error")
    clear_caches()
    # When the client retries at once, the job is queued (not a 409, not a failed job)
    status, accepted, _ = call_api(keyed_post(key, prompt="a fox", size="256x256"), lambda_context)
    assert (status, accepted["status"]) == (202, "queued")
    assert messages_in(sqs, job_resources.queue_url) == 1


def test_a_job_queued_but_not_marked_so_is_still_accepted(job_resources, sqs, monkeypatch, lambda_context) -> None:
    # Given a table that fails the write marking the job queued, after its message was sent
    from imagegen.errors import QueueError

    def unavailable(self, job):
        raise QueueError("The jobs table is unavailable; try again.")

    key = f"order-{uuid.uuid4()}"
    with monkeypatch.context() as flaky_table:
        flaky_table.setattr(jobs_module.JobTable, "settle_submit", unavailable)
        status, accepted, _ = call_api(keyed_post(key, prompt="a fox", size="256x256"), lambda_context)
    # Then the client is told the truth (the job is queued), not a 502 that would make it retry
    assert (status, accepted["status"]) == (202, "queued")
    assert messages_in(sqs, job_resources.queue_url) == 1
