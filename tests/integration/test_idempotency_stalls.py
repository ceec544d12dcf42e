"""Idempotency-Key when S3 or DynamoDB stall: the answer is a bounded, clean error in OpenAI's shape (or the images),
nothing half-written stays in S3, and the Powertools idempotency record is released, never left INPROGRESS, so the
client's retry runs instead of getting 409 until the record expires. S3 is the real server behind a fault proxy;
DynamoDB is moto server behind another (the proxy forwards any SigV4 HTTP, and matches DynamoDB's operations by
their X-Amz-Target). The jobs table stalling is a bounded 502 too, with nothing queued."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from functions.api import app
from tests.conftest import job_event, load_event
from tests.fakes.lambda_clock import CountdownContext
from tests.fakes.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

DYNAMODB = "DynamoDB_20120810"


@pytest.fixture
def lambda_context() -> CountdownContext:
    return CountdownContext()


@pytest.fixture(scope="module")
def dynamodb_proxy(moto_server) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def faulty(job_resources, s3_proxy, dynamodb_proxy, monkeypatch) -> tuple[S3FaultProxy, S3FaultProxy]:
    """S3 and DynamoDB both reached through their proxies, the way a deployment reaches any endpoint."""
    s3_proxy.reset()
    dynamodb_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_proxy.endpoint_url)
    yield s3_proxy, dynamodb_proxy
    s3_proxy.reset()
    dynamodb_proxy.reset()


def call(lambda_context, key: str, prompt: str, **headers: str):
    event = load_event("api_generate_url.json", prompt=prompt, size="256x256", n=2)
    for name, value in {"Idempotency-Key": key, **headers}.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    ends = lambda_context.budget(lambda_context.remaining_millis)
    response = app.lambda_handler(event, lambda_context)
    left = ends - time.monotonic()  # > 0: answered before the Lambda's end
    headers_out = {name: values[0] for name, values in response.get("multiValueHeaders", {}).items()}
    return response["statusCode"], json.loads(response["body"]), headers_out, event["requestContext"]["requestId"], left


def records(moto_server, job_resources) -> list[dict]:
    return moto_server.client("dynamodb").scan(TableName=job_resources.idempotency_table)["Items"]


def stored_for(s3, bucket: str, request_id: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/").get("Contents", [])
    return sorted(obj["Key"] for obj in listed if f"/{request_id}/" in obj["Key"])


def assert_openai_error(body, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code, body


def test_a_stalled_s3_releases_the_record_so_the_retry_runs(faulty, moto_server, job_resources, s3, local_s3, lambda_context) -> None:
    s3_proxy, _ = faulty
    lambda_context.remaining_millis = 4000
    key, prompt = str(uuid.uuid4()), f"stall {uuid.uuid4()}"
    s3_proxy.inject("PUT", r"/1\.png", mode="stall")
    status, body, _, request_id, left = call(lambda_context, key, prompt)
    assert status == 504 and left > 0, body
    assert_openai_error(body, "storage_timeout")
    assert stored_for(s3, local_s3.bucket, request_id) == []
    assert records(moto_server, job_resources) == []  # released: not INPROGRESS until it expires
    # S3 is back: the client's retry with the same key is generated (not 409, not a replay of nothing)
    s3_proxy.reset()
    lambda_context.remaining_millis = 29_000
    status, body, headers, request_id, _ = call(lambda_context, key, prompt)
    assert (status, headers["Idempotent-Replayed"]) == (200, "false"), body
    assert len(stored_for(s3, local_s3.bucket, request_id)) == 2
    assert [item["status"]["S"] for item in records(moto_server, job_resources)] == ["COMPLETED"]


def test_a_stalled_idempotency_table_is_a_bounded_502_before_any_generation(
    faulty, moto_server, job_resources, s3, local_s3, lambda_context
) -> None:
    s3_proxy, dynamodb_proxy = faulty
    dynamodb_proxy.inject("POST", "/", target=rf"{DYNAMODB}\.PutItem", mode="stall")
    key, prompt = str(uuid.uuid4()), f"stall {uuid.uuid4()}"
    status, body, _, request_id, left = call(lambda_context, key, prompt)
    assert status == 502, body
    assert_openai_error(body, "queue_error")
    assert left > 29 - 6.0  # the DynamoDB client's budget: 2 attempts of 1 s read (+ 1 s connect), one backoff
    assert len(dynamodb_proxy.requests("POST")) == 2  # the SDK tried twice, then gave up
    assert stored_for(s3, local_s3.bucket, request_id) == [] and s3_proxy.requests("PUT") == []  # nothing generated
    dynamodb_proxy.reset()
    status, _, headers, _, _ = call(lambda_context, key, prompt)
    assert (status, headers["Idempotent-Replayed"]) == (200, "false")


def test_a_table_that_stalls_after_the_generation_still_answers_the_images(
    faulty, moto_server, job_resources, s3, local_s3, lambda_context
) -> None:
    """Recording the success (UpdateItem) stalls: the images are generated, stored and billed, so they are answered;
    an error would make the client retry into a 409 and then a second bill. The record stays INPROGRESS until its
    in-progress expiry (the Lambda's remaining time when the request began), then a retry is generated anew."""
    _, dynamodb_proxy = faulty
    dynamodb_proxy.inject("POST", "/", target=rf"{DYNAMODB}\.UpdateItem", mode="stall")
    key, prompt = str(uuid.uuid4()), f"stall {uuid.uuid4()}"
    status, body, headers, request_id, left = call(lambda_context, key, prompt)
    assert (status, headers["Idempotent-Replayed"]) == (200, "false"), body
    assert left > 29 - 6.0
    assert len(body["data"]) == 2 and len(stored_for(s3, local_s3.bucket, request_id)) == 2
    assert [item["status"]["S"] for item in records(moto_server, job_resources)] == ["INPROGRESS"]


def test_both_stalled_is_still_a_clean_bounded_error(faulty, moto_server, job_resources, s3, local_s3, lambda_context) -> None:
    """S3 stalls, and so does the release of the record (DeleteItem): still a clean 5xx and nothing in S3, but the
    release's own budget (DynamoDB's timeouts) comes after the storage deadline, so the answer can be up to one
    DynamoDB call late: in Lambda, past API Gateway's 29 s (the client then gets API Gateway's own 504). The record
    stays INPROGRESS until its in-progress expiry (the Lambda's remaining time at the start), then a retry runs."""
    s3_proxy, dynamodb_proxy = faulty
    lambda_context.remaining_millis = 4000
    s3_proxy.inject("PUT", r"/0\.png", mode="stall")
    dynamodb_proxy.inject("POST", "/", target=rf"{DYNAMODB}\.DeleteItem", mode="stall")
    status, body, _, request_id, left = call(lambda_context, str(uuid.uuid4()), f"stall {uuid.uuid4()}")
    assert status in (502, 504), body
    assert_openai_error(body, body["error"]["code"])
    assert left > -5.0  # past the Lambda's 4 s by at most one DynamoDB call's budget (see the docstring)
    assert stored_for(s3, local_s3.bucket, request_id) == []


# --- the jobs table ---------------------------------------------------------------------------------------------


def test_a_stalled_jobs_table_is_a_bounded_502_and_queues_nothing(faulty, moto_server, job_resources, lambda_context) -> None:
    _, dynamodb_proxy = faulty
    dynamodb_proxy.inject("POST", "/", target=rf"{DYNAMODB}\.(GetItem|PutItem|UpdateItem)", mode="stall")
    for event in (job_event(f"job-{uuid.uuid4()}"), async_event()):
        ends = lambda_context.budget(29_000)
        response = app.lambda_handler(event, lambda_context)
        assert response["statusCode"] == 502, response["body"]
        assert_openai_error(json.loads(response["body"]), "queue_error")
        assert ends - time.monotonic() > 29 - 6.0  # within the DynamoDB client's budget, far inside the 29 s
    sqs = moto_server.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=job_resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def async_event() -> dict:
    event = load_event("api_generate_url.json", size="256x256")
    event["headers"]["Prefer"] = "respond-async"
    event["multiValueHeaders"]["Prefer"] = ["respond-async"]
    return event
