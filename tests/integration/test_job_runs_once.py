"""A job runs once: across a message redriven from the dead-letter queue and a duplicate of it, and across a worker
that died mid-job (its lease). Real SQS redelivery and dead-lettering and real DynamoDB conditions (moto server),
S3 on SeaweedFS, the fake OpenAI on HTTP; the worker and API handlers in-process."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from functions.api import app as api
from imagegen.job_store import JobTable
from tests.conftest import job_event, load_event

pytestmark = pytest.mark.integration


def call_api(event, lambda_context):
    response = api.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"])


def manifest(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def provider_calls(fake, prompt: str) -> int:
    return [request["json"]["prompt"] for request in fake.requests].count(prompt)


@pytest.fixture
def no_inline_retries(openai_env, monkeypatch):
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # every transient failure goes back to SQS
    return openai_env


def table_at(moto_server, job_resources, when: dt.datetime, *, run_seconds: int = 300) -> JobTable:
    """The jobs table as a worker whose clock reads ``when`` sees it."""
    return JobTable(moto_server.client("dynamodb"), job_resources.table, ttl_days=1, clock=lambda: when, run_seconds=run_seconds)


def test_a_job_redriven_from_the_dlq_is_not_run_twice_by_a_duplicate(
    no_inline_retries, worker_poller, moto_server, job_resources, local_s3, s3
) -> None:
    sqs = moto_server.client("sqs")
    # Given a job whose every delivery failed transiently: recorded failed, its message in the dead-letter queue
    job_id = f"redrive-{uuid.uuid4().hex[:8]}"
    prompt = f"flaky:3:{job_id}"  # the provider fails three times, then works
    body = json.dumps({"id": job_id, "prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024"})
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=body)
    worker_poller.drain(until=30)
    assert manifest(s3, local_s3.bucket, f"results/{job_id}.json")["status"] == "failed"
    (dead,) = sqs.receive_message(QueueUrl=job_resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert json.loads(dead["Body"])["id"] == job_id
    # When it is redriven (back to the source queue) and the worker has begun running it
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=dead["Body"])
    sqs.delete_message(QueueUrl=job_resources.dlq_url, ReceiptHandle=dead["ReceiptHandle"])
    assert table_at(moto_server, job_resources, dt.datetime.now(dt.UTC)).begin(job_id, created=dt.datetime.now(dt.UTC)) is not None
    # And SQS delivers that message again (at least once) while the run is under way
    worker_poller.drain(until=10)
    # Then the duplicate is acknowledged without a provider call: the run under way is the only one
    assert provider_calls(no_inline_retries, prompt) == 3
    assert worker_poller.stats["failed"] == 3  # the three failed deliveries before the DLQ, none since


def test_a_redriven_job_runs_once_and_succeeds(no_inline_retries, worker_poller, moto_server, job_resources, local_s3, s3) -> None:
    sqs = moto_server.client("sqs")
    job_id = f"redrive-ok-{uuid.uuid4().hex[:8]}"
    prompt = f"flaky:3:{job_id}"
    body = json.dumps({"id": job_id, "prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024"})
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=body)
    worker_poller.drain(until=30)
    # Redriven twice over (a redrive, and a duplicate of it): the job runs once more, and succeeds
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=body)
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=body)
    worker_poller.drain(until=10)
    result = manifest(s3, local_s3.bucket, f"results/{job_id}.json")
    assert (result["status"], len(result["images"])) == ("succeeded", 1)
    assert provider_calls(no_inline_retries, prompt) == 4


def async_post(**body) -> dict:
    event = load_event("api_generate_url.json", **body)
    event["headers"]["Prefer"] = "respond-async"
    event["multiValueHeaders"]["Prefer"] = ["respond-async"]
    return event


def test_a_job_left_running_past_its_lease_reads_failed_and_a_later_delivery_takes_it_up(
    job_resources, worker_poller, moto_server, lambda_context
) -> None:
    # Given a queued job whose worker began it 301 s ago, with a 300 s timeout, and never finished (it crashed)
    status, accepted = call_api(async_post(prompt="a fox", size="256x256", n=1), lambda_context)
    assert status == 202
    began = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301)
    assert table_at(moto_server, job_resources, began).begin(accepted["id"], created=began) is not None
    # Then it reads as failed, saying why, not as running
    status, job = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, job["status"], job["error"]["code"], job["error"]["type"]) == (200, "failed", "job_run_expired", "api_error")
    assert "crashed or ran out of time" in job["error"]["message"]
    # And the message, delivered again, takes it up: it runs (attempt 2) and succeeds
    worker_poller.drain()
    status, job = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, job["status"]) == (200, "succeeded") and "error" not in job
    assert table_at(moto_server, job_resources, dt.datetime.now(dt.UTC)).get(accepted["id"]).attempts == 2


def test_a_job_within_its_lease_reads_running(job_resources, moto_server, lambda_context) -> None:
    status, accepted = call_api(async_post(prompt="a fox", size="256x256", n=1), lambda_context)
    began = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=299)
    assert table_at(moto_server, job_resources, began).begin(accepted["id"], created=began) is not None
    status, job = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, job["status"]) == (200, "running") and "error" not in job
