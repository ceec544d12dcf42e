"""Request objects are bounded (issue #12 item 12): the S3 trigger checks the object's size from the notification
before reading it, and answers an oversized or unreadable object with a ``failed`` manifest instead of running out
of memory or raising (S3 invokes the trigger asynchronously: an error is retried twice, then parked in its
dead-letter queue). Against the real S3 server, through a proxy that logs every request and can refuse one as S3
does; the queue on moto server."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from functions.s3_trigger import app as s3_trigger
from tests.conftest import EVENTS
from tests.fakes.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024  # the API's body limit, MAX_REQUEST_BYTES's default


@pytest.fixture
def trigger_s3(job_resources, s3_proxy, monkeypatch) -> S3FaultProxy:
    """The trigger as deployed (the queue, no table), reaching S3 through the proxy."""
    s3_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint_url)
    monkeypatch.delenv("JOBS_TABLE")
    return s3_proxy


def notification(bucket: str, key: str, size: int) -> dict:
    event = copy.deepcopy(json.loads((EVENTS / "s3_put.json").read_text()))
    obj = event["Records"][0]["s3"]["object"]
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    obj["key"], obj["size"], obj["sequencer"] = key, size, uuid.uuid4().hex[:16].upper()
    return event


def manifest(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key.replace("requests/", "results/", 1))["Body"].read())


def messages_in(moto_server, queue_url: str) -> int:
    attributes = moto_server.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def oversized_request() -> bytes:
    """A request object just over the limit, shaped like a real one (a long prompt and padding)."""
    body = json.dumps({"prompt": "a fox", "size": "256x256", "user": "x"})
    return (body[:-1] + " " * (LIMIT + 1 - len(body)) + "}").encode()


def test_an_oversized_request_object_is_answered_failed_without_being_read(
    trigger_s3, job_resources, moto_server, local_s3, s3, lambda_context
) -> None:
    # Given an object one byte over the limit, notified with its size
    key = f"requests/big-{uuid.uuid4().hex[:6]}.json"
    data = oversized_request()
    assert len(data) == LIMIT + 1
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=data)
    # When the trigger gets the notification
    answer = s3_trigger.lambda_handler(notification(local_s3.bucket, key, len(data)), lambda_context)["jobs"][key]
    # Then it answers failed with a 413's error, never read the object, and queued nothing
    assert answer["status"] == "failed"
    result = manifest(s3, local_s3.bucket, key)
    assert (result["status"], result["error"]["code"], result["error"]["type"]) == ("failed", "payload_too_large", "invalid_request_error")
    assert str(LIMIT) in result["error"]["message"]
    assert trigger_s3.requests("GET", key.split("/", 1)[1]) == []
    assert messages_in(moto_server, job_resources.queue_url) == 0


def test_an_object_rewritten_larger_than_notified_is_refused_after_reading(
    trigger_s3, job_resources, moto_server, local_s3, s3, lambda_context
) -> None:
    # Given a notification of a small write, and an oversized object under the key by the time it is read
    key = f"requests/grown-{uuid.uuid4().hex[:6]}.json"
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=oversized_request())
    s3_trigger.lambda_handler(notification(local_s3.bucket, key, 64), lambda_context)
    result = manifest(s3, local_s3.bucket, key)
    assert (result["status"], result["error"]["code"]) == ("failed", "payload_too_large")
    assert messages_in(moto_server, job_resources.queue_url) == 0


def test_a_request_object_deleted_before_it_is_read_is_answered_failed(trigger_s3, job_resources, local_s3, s3, lambda_context) -> None:
    key = f"requests/gone-{uuid.uuid4().hex[:6]}.json"
    answer = s3_trigger.lambda_handler(notification(local_s3.bucket, key, 96), lambda_context)["jobs"][key]
    assert answer["status"] == "failed"
    result = manifest(s3, local_s3.bucket, key)
    assert (result["status"], result["error"]["code"], result["error"]["param"]) == ("failed", "request_object_not_found", "key")


def test_a_request_object_the_trigger_may_not_read_is_answered_failed(trigger_s3, job_resources, local_s3, s3, lambda_context) -> None:
    # Given an object S3 refuses to the trigger, as it does for a KMS key the role cannot use
    key = f"requests/denied-{uuid.uuid4().hex[:6]}.json"
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=json.dumps({"prompt": "a fox"}).encode())
    trigger_s3.inject("GET", key.split("/", 1)[1], status=403, code="AccessDenied")
    answer = s3_trigger.lambda_handler(notification(local_s3.bucket, key, 20), lambda_context)["jobs"][key]
    assert answer["status"] == "failed"
    result = manifest(s3, local_s3.bucket, key)
    assert (result["status"], result["error"]["code"], result["error"]["type"]) == (
        "failed",
        "request_object_unreadable",
        "permission_error",
    )


def test_a_transient_s3_failure_raises_so_that_lambda_retries_the_event(trigger_s3, job_resources, local_s3, s3, lambda_context) -> None:
    # Given S3 answering 503 SlowDown to every read of the object (botocore's own retries included)
    key = f"requests/slow-{uuid.uuid4().hex[:6]}.json"
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=json.dumps({"prompt": "a fox"}).encode())
    trigger_s3.inject("GET", key.split("/", 1)[1], status=503, code="SlowDown")
    # Then the trigger raises (Lambda retries the event, then the DLQ) and writes no manifest
    with pytest.raises(Exception, match="try again"):
        s3_trigger.lambda_handler(notification(local_s3.bucket, key, 20), lambda_context)
    with pytest.raises(s3.exceptions.NoSuchKey):
        manifest(s3, local_s3.bucket, key)


def test_a_request_object_at_the_limit_is_queued(trigger_s3, job_resources, moto_server, local_s3, s3, lambda_context) -> None:
    key = f"requests/edge-{uuid.uuid4().hex[:6]}.json"
    data = oversized_request()[:-2] + b"}"
    assert len(data) == LIMIT
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=data)
    answer = s3_trigger.lambda_handler(notification(local_s3.bucket, key, len(data)), lambda_context)["jobs"][key]
    assert answer["status"] == "queued"
    assert messages_in(moto_server, job_resources.queue_url) == 1
