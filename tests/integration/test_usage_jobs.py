"""Usage of asynchronous jobs (issue #15, "one usage record per billed generation ... async, SQS and S3 paths
alike"): a job's record is written once under the job's id whatever the deliveries, a request object's is the
queue's (QUEUE_CALLER), a failed job records nothing and gives its budget reservation back, and a job the budget has
no room for is a 429 when it is submitted, with nothing queued or stored. The API, S3-trigger
and worker handlers in-process; SQS and the usage and jobs tables on moto server, S3 on the S3 server, the fake
OpenAI over HTTP."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image as PILImage

from functions.s3_trigger import app as s3_trigger
from imagegen.usage import table
from imagegen.usage.meter import QUEUE_CALLER
from tests.conftest import job_event
from tests.integration.test_async_idempotency import call_api as idempotent_call
from tests.integration.test_async_idempotency import keyed_post, messages_in
from tests.integration.test_edit_jobs import async_edit_event
from tests.integration.test_edit_jobs import call_api as edit_call
from tests.integration.test_job_runs_once import async_post, call_api, manifest, provider_calls, table_at
from tests.integration.test_request_objects_bounded import notification
from tests.integration.test_usage_metering import CALLER, KEY, MINI, generate, mini_cost, read_usage, records

pytestmark = pytest.mark.integration

END_USER = "end-user-jobs-1"
# Room for a second run's reservation on top of the first's images: a redelivery is never refused for its budget.
BUDGETS = {"per_key": {"images_per_month": 10, "usd_per_month": 1}, "per_user": {"images_per_month": 5, "usd_per_month": 1}}


@pytest.fixture
def usage_jobs(openai_env, usage_table, job_resources, monkeypatch) -> Any:
    """Async jobs with a usage table, BUDGETS for every key and end user, and KEY reading every caller's usage; the
    fake OpenAI (its request log emptied)."""
    monkeypatch.setenv("BUDGETS", json.dumps(BUDGETS))
    monkeypatch.setenv("USAGE_ADMIN_KEYS", CALLER)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # a transient failure goes back to SQS
    return openai_env


def month_budget(moto_server: Any, usage_table: str, caller: str, end_user: str | None = None) -> tuple[int, Decimal]:
    """(images, USD) on the budget counter of this UTC month: the caller's, or that end user's under the caller."""
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    key = table.budget_key("key" if end_user is None else "user", caller, month, end_user)
    item = moto_server.client("dynamodb").get_item(TableName=usage_table, Key={n: {"S": v} for n, v in key.items()}, ConsistentRead=True)
    fields = item.get("Item", {})
    return int(fields.get("images", {"N": "0"})["N"]), Decimal(fields.get("usd", {"N": "0"})["N"])


def usage_totals(lambda_context: Any) -> dict[tuple[str, str | None, str], tuple[int, int, Decimal | None]]:
    """The Usage API's counters of the last hour (each test's usage table is its own) by (caller, end user, source):
    (images, requests, cost)."""
    since = str(int(time.time()) - 3600)
    page = read_usage(lambda_context, start_time=[since], bucket_width=["1h"], **{"group_by[]": ["api_key_id", "user_id", "source"]})
    summed: dict[tuple[str, str | None, str], tuple[int, int, Decimal | None]] = {}
    for result in (result for bucket in page["data"] for result in bucket["results"]):
        group = (result["api_key_id"], result["user_id"], result["source"])
        images, requests, cost = summed.get(group, (0, 0, Decimal(0)))
        value = None if result["cost"] is None or cost is None else cost + Decimal(str(result["cost"]["value"]))
        summed[group] = (images + result["images"], requests + result["num_model_requests"], value)
    return summed


def submit(lambda_context: Any, prompt: str, n: int = 2) -> str:
    """A job queued through the API by KEY for END_USER, of ``prompt`` as it is; its id."""
    event = async_post(prompt=prompt, model=MINI, size="1024x1024", n=n, safety_identifier=END_USER)
    event["headers"]["Authorization"] = f"Bearer {KEY}"
    status, accepted = call_api(event, lambda_context)
    assert status == 202, accepted
    return str(accepted["id"])


def job_status(lambda_context: Any, job_id: str) -> str:
    event = job_event(job_id)
    event["headers"]["Authorization"] = f"Bearer {KEY}"
    status, job = call_api(event, lambda_context)
    assert status == 200, job
    return str(job["status"])


def assert_counted_once(moto_server: Any, usage_table: str, lambda_context: Any, job_id: str) -> None:
    """One record of the job (its 2 images, for KEY and END_USER), and every counter holding it once."""
    (record,) = records(moto_server, usage_table)
    assert record["id"]["S"] == job_id
    assert (record["caller"]["S"], record["end_user"]["S"], record["source"]["S"]) == (CALLER, END_USER, "image.generation")
    assert int(record["images"]["N"]) == 2 and Decimal(record["cost_usd"]["N"]) == mini_cost(10, 100)
    # The Usage API's counters: one request of 2 images, at the first run's cost
    assert usage_totals(lambda_context) == {(CALLER, END_USER, "image.generation"): (2, 1, mini_cost(10, 100))}
    # The month's budgets, the key's and its end user's: the images and cost of one run, the second's reservation gone
    assert month_budget(moto_server, usage_table, CALLER) == (2, mini_cost(10, 100))
    assert month_budget(moto_server, usage_table, CALLER, END_USER) == (2, mini_cost(10, 100))


def queued_body(moto_server: Any, queue_url: str) -> str:
    """The body of the one message in the queue, left there (visible again at once)."""
    (message,) = moto_server.client("sqs").receive_message(QueueUrl=queue_url, VisibilityTimeout=0)["Messages"]
    return str(message["Body"])


def test_a_job_delivered_twice_is_generated_and_counted_once(
    usage_jobs, usage_table, worker_poller, moto_server, job_resources, lambda_context
) -> None:
    prompt = f"a fox, delivered twice {uuid.uuid4().hex[:6]}"
    job_id = submit(lambda_context, prompt)
    # SQS delivers at least once: the same message a second time, behind the first
    moto_server.client("sqs").send_message(QueueUrl=job_resources.queue_url, MessageBody=queued_body(moto_server, job_resources.queue_url))
    worker_poller.drain(until=15)
    assert job_status(lambda_context, job_id) == "succeeded"
    # One provider call: the second delivery found the job finished and was acknowledged, nothing run nor recorded
    assert provider_calls(usage_jobs, prompt) == 1
    assert_counted_once(moto_server, usage_table, lambda_context, job_id)


def test_a_run_that_recorded_then_crashed_is_run_again_and_counted_once(
    usage_jobs, usage_table, worker_poller, moto_server, job_resources, lambda_context
) -> None:
    prompt = f"a fox, crashed after recording {uuid.uuid4().hex[:6]}"
    job_id = submit(lambda_context, prompt)
    body = queued_body(moto_server, job_resources.queue_url)
    worker_poller.drain(until=15)
    assert provider_calls(usage_jobs, prompt) == 1 and len(records(moto_server, usage_table)) == 1
    # Given what a worker that died after settling the job's usage, before recording the job and acknowledging its
    # message, leaves behind: the usage recorded, the job still running and its lease (the worker's timeout) passed
    now = dt.datetime.now(dt.UTC)
    jobs = table_at(moto_server, job_resources, now)
    crashed = jobs.get(job_id)
    assert crashed is not None
    jobs.save(crashed.model_copy(update={"status": "running", "lease_until": int(now.timestamp()) - 1, "images": [], "usage": None}))
    assert job_status(lambda_context, job_id) == "failed"  # job_run_expired, until a delivery takes it up
    # When SQS delivers its message again (the dead invocation never acknowledged it)
    moto_server.client("sqs").send_message(QueueUrl=job_resources.queue_url, MessageBody=body)
    worker_poller.drain(until=15)
    # Then the job ran again and succeeded: the provider was called a second time (the worker cannot know that the
    # dead run's images were billed; at least once costs that call), but its usage counts once, and the second run's
    # reservation was given back
    rerun = jobs.get(job_id)
    assert job_status(lambda_context, job_id) == "succeeded" and rerun is not None and rerun.attempts == 2
    assert provider_calls(usage_jobs, prompt) == 2
    assert_counted_once(moto_server, usage_table, lambda_context, job_id)


def test_a_request_object_is_recorded_once_for_the_queue(
    usage_jobs, usage_table, worker_poller, moto_server, local_s3, s3, lambda_context
) -> None:
    key = f"requests/usage-{uuid.uuid4().hex[:6]}.json"
    prompt = f"a fox, from a request object {key}"
    # the end user as ``user`` (no safety_identifier): the record's end user all the same
    body = json.dumps({"prompt": prompt, "model": MINI, "size": "1024x1024", "n": 2, "user": END_USER})
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=body)
    event = notification(local_s3.bucket, key, len(body))
    queued = s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]
    assert queued["status"] == "queued" and records(moto_server, usage_table) == []  # the trigger only queues
    worker_poller.drain(until=15)
    assert manifest(s3, local_s3.bucket, key.replace("requests/", "results/", 1))["status"] == "succeeded"
    # A second notification of the same write: the same job, which the worker acknowledges as finished
    assert s3_trigger.lambda_handler(event, lambda_context)["jobs"][key] == queued
    worker_poller.drain(until=15)

    assert provider_calls(usage_jobs, prompt) == 1
    (record,) = records(moto_server, usage_table)
    assert record["id"]["S"] == queued["id"]
    assert (record["caller"]["S"], record["end_user"]["S"], record["source"]["S"]) == (QUEUE_CALLER, END_USER, "image.generation")
    assert (record["model"]["S"], int(record["images"]["N"]), Decimal(record["cost_usd"]["N"])) == (MINI, 2, mini_cost(10, 100))
    assert usage_totals(lambda_context) == {(QUEUE_CALLER, END_USER, "image.generation"): (2, 1, mini_cost(10, 100))}
    assert month_budget(moto_server, usage_table, QUEUE_CALLER) == (2, mini_cost(10, 100))


@pytest.mark.parametrize(
    ("prompt", "runs"),
    [("fail:400", 1), ("fail:500", 3)],
    ids=["permanent-error", "transient-error-until-the-dead-letter-queue"],
)
def test_a_failed_job_records_nothing_and_gives_its_reservation_back(
    usage_jobs, usage_table, worker_poller, moto_server, lambda_context, prompt: str, runs: int
) -> None:
    job_id = submit(lambda_context, prompt)
    worker_poller.drain(until=30)
    assert job_status(lambda_context, job_id) == "failed"
    # A permanent error is run once; a transient one on every delivery, MAX_RECEIVE_COUNT (3) times, each reserving
    assert provider_calls(usage_jobs, prompt) == runs
    assert records(moto_server, usage_table) == []
    assert usage_totals(lambda_context) == {}
    assert month_budget(moto_server, usage_table, CALLER) == (0, Decimal(0))
    assert month_budget(moto_server, usage_table, CALLER, END_USER) == (0, Decimal(0))


def input_keys(s3: Any, bucket: str) -> set[str]:
    """Every key under inputs/ (the bucket is shared by the tier's tests: compared before and after, not counted)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="inputs/")
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def sqs_of(moto_server: Any) -> Any:
    return moto_server.client("sqs")


def jobs_in(moto_server: Any, job_resources: Any) -> int:
    return len(moto_server.client("dynamodb").scan(TableName=job_resources.table)["Items"])


def test_a_job_a_budget_has_no_room_for_is_refused_when_submitted_and_a_replay_is_still_answered(
    usage_jobs, usage_table, worker_poller, moto_server, job_resources, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {"images_per_month": 2}}))
    # Given a job accepted with an Idempotency-Key while the key's month had room (nothing reserved until it runs)
    keyed = keyed_post(f"budget-{uuid.uuid4()}", api_key=KEY, prompt="a fox, queued with room", model=MINI, size="1024x1024", n=2)
    status, accepted, _ = idempotent_call(keyed, lambda_context)
    assert status == 202, accepted
    # and then the month's two images taken by a synchronous generation
    assert generate(lambda_context, prompt="a fox, the month's two", n=2)[0] == 200
    calls, jobs = len(usage_jobs.requests), jobs_in(moto_server, job_resources)
    messages = messages_in(sqs_of(moto_server), job_resources.queue_url)

    # When another job is submitted: a 429 now, in OpenAI's shape, with nothing recorded, queued or generated
    event = async_post(prompt="a fox, one job too many", model=MINI, size="1024x1024", n=1)
    event["headers"]["Authorization"] = f"Bearer {KEY}"
    status, refused = call_api(event, lambda_context)
    assert status == 429, refused
    assert (refused["error"]["code"], refused["error"]["type"]) == ("insufficient_quota", "insufficient_quota")
    assert "this API key" in refused["error"]["message"] and "2 images per UTC month" in refused["error"]["message"]
    assert (len(usage_jobs.requests), jobs_in(moto_server, job_resources)) == (calls, jobs)
    assert messages_in(sqs_of(moto_server), job_resources.queue_url) == messages
    # The first job's retry with its key is answered as it was, not refused: the same job, nothing queued again
    status, replayed, _ = idempotent_call(keyed, lambda_context)
    assert (status, replayed["id"]) == (202, accepted["id"]), replayed
    assert messages_in(sqs_of(moto_server), job_resources.queue_url) == messages
    # The job accepted with room finds it taken when it runs (the race the check at submission cannot close): it
    # fails with the same code, and the provider is not called
    worker_poller.drain(until=15)
    viewed = job_event(accepted["id"])
    viewed["headers"]["Authorization"] = f"Bearer {KEY}"
    status, done = call_api(viewed, lambda_context)
    assert (status, done["status"], done["error"]["code"]) == (200, "failed", "insufficient_quota"), done
    assert len(usage_jobs.requests) == calls and month_budget(moto_server, usage_table, CALLER)[0] == 2


def test_an_edit_job_a_budget_has_no_room_for_is_refused_before_its_inputs_are_stored(
    usage_jobs, usage_table, moto_server, job_resources, local_s3, s3, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {}, "per_user": {"images_per_month": 1}}))
    # Given the end user's month used up
    assert generate(lambda_context, prompt="a fox for the end user", safety_identifier=END_USER)[0] == 200
    stored = input_keys(s3, local_s3.bucket)
    # When the same end user's edit is submitted as a job
    image = io.BytesIO()
    PILImage.new("RGB", (64, 64), (200, 30, 30)).save(image, format="PNG")
    fields = {"prompt": "paint it", "model": MINI, "size": "1024x1024", "response_format": "url", "safety_identifier": END_USER}
    status, refused, _ = edit_call(async_edit_event(fields, {"image": image.getvalue()}, Authorization=f"Bearer {KEY}"), lambda_context)
    # Then a 429 naming the end user's budget, and nothing stored under inputs/, recorded or queued
    assert status == 429, refused
    assert refused["error"]["code"] == "insufficient_quota" and "this end user" in refused["error"]["message"]
    assert input_keys(s3, local_s3.bucket) == stored
    assert jobs_in(moto_server, job_resources) == 0 and messages_in(sqs_of(moto_server), job_resources.queue_url) == 0
