"""The worker is fair and backs off properly (issue #12 item 6).

The choice: BatchSize 1 with the concurrency cap (WorkerMaxConcurrency = the mapping's MaximumConcurrency), so one
slow message never holds the others of a batch until they time out and burn their delivery attempts. Shown here
against the SAM-transformed template and on the real queue (moto server), with each invocation getting the
function's timeout of its own as Lambda gives it. And a provider 429 with Retry-After brings the message back
after that delay (ChangeMessageVisibility), not after the queue's 30-minute visibility timeout."""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from devtools.aws_local import MotoServer, create_job_resources
from devtools.poller import WORKER_MAPPING, SqsPoller, sqs_event, template_batch_size
from devtools.sam_template import load_template, sam_transform
from functions.worker import app as worker
from imagegen.settings import Settings
from tests.conftest import FakeLambdaContext
from tests.fakes.loopback import LoopbackHTTPServer, QuietHandler

pytestmark = pytest.mark.integration

# The longest one image request may take at the provider: OpenAI's image generation guide says complex prompts to
# GPT image models "may take up to 2 minutes" (Limitations: latency). Not verifiable offline; a number to revisit.
LONGEST_PROVIDER_SECONDS = 120


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    """A moto server of this module's own: moto_visible_at reads moto's whole state (/moto-api/data.json), which on
    the session's server holds every table and message of the integration tier and took over 10 s to dump in CI."""
    with MotoServer(tmp_path_factory.mktemp("moto-fairness") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    return sam_transform(load_template())


def test_the_worker_takes_one_message_per_invocation_and_its_timeout_covers_the_longest_provider_call(transformed) -> None:
    resources = transformed["Resources"]
    mapping = resources[WORKER_MAPPING]["Properties"]
    function = resources["WorkerFunction"]["Properties"]
    queue = resources["JobsQueue"]["Properties"]
    # The choice: one message per invocation, throughput from concurrency, capped where the queue drives it
    assert mapping["BatchSize"] == 1
    written = load_template()["Resources"][WORKER_MAPPING]["Properties"]
    assert written["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Every message of a batch gets the time of its longest provider call, and the answer's margin, in one timeout
    margin = Settings.model_fields["response_margin_seconds"].default
    assert function["Timeout"] >= mapping["BatchSize"] * (LONGEST_PROVIDER_SECONDS + margin)
    # The job's lease is that timeout, and SQS hands a message out again only once a run is certainly over
    assert int(function["Environment"]["Variables"]["JOB_RUN_SECONDS"]) == function["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    # And the local event source hands the worker the batches the deployed one does
    assert template_batch_size() == mapping["BatchSize"]


@dataclass
class InvocationContext(FakeLambdaContext):
    """A Lambda context whose remaining time runs down from ``timeout_seconds`` on the real clock, as each
    invocation's does."""

    timeout_seconds: float = 3.0
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))


def receive_counts_by_job(log: dict[str, list[int]]):
    def invoke(event: dict[str, Any]) -> Any:
        for record in event["Records"]:
            job_id = json.loads(record["body"]).get("id", record["messageId"])
            log[job_id].append(int(record["attributes"]["ApproximateReceiveCount"]))
        return worker.lambda_handler(event, InvocationContext(timeout_seconds=3.0))

    return invoke


def send_slow_then_fast(sqs, queue_url: str, run: str, fast: int = 3) -> tuple[str, list[str]]:
    slow = f"slow-{run}"
    sqs.send_message(
        QueueUrl=queue_url, MessageBody=json.dumps({"id": slow, "prompt": "fail:slow", "model": "gpt-image-1-mini", "size": "1024x1024"})
    )
    fast_ids = [f"fast-{run}-{index}" for index in range(fast)]
    for job_id in fast_ids:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": job_id, "prompt": "a fox", "model": "local", "size": "256x256"}))
    return slow, fast_ids


@pytest.fixture
def slow_provider(job_resources, openai_env, monkeypatch):
    monkeypatch.setenv("RESPONSE_MARGIN_SECONDS", "0.5")
    return openai_env


def test_a_slow_message_does_not_raise_another_messages_attempt_count(slow_provider, job_resources, moto_server, local_s3, s3) -> None:
    # Given a message whose provider call outlasts the worker's timeout, queued before three quick ones
    sqs = moto_server.client("sqs")
    slow, fast_ids = send_slow_then_fast(sqs, job_resources.queue_url, uuid.uuid4().hex[:8])
    # When the event source (the template's batch size) feeds the worker, each invocation with its own timeout
    seen: dict[str, list[int]] = defaultdict(list)
    poller = SqsPoller(sqs, job_resources.queue_url, job_resources.queue_arn, receive_counts_by_job(seen), region="us-east-1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(manifest(s3, local_s3.bucket, job_id) for job_id in fast_ids):
        poller.poll_once(wait_seconds=1)
    # Then each quick message was delivered once and succeeded at its first attempt
    assert {job_id: seen[job_id] for job_id in fast_ids} == {job_id: [1] for job_id in fast_ids}
    for job_id in fast_ids:
        result = manifest(s3, local_s3.bucket, job_id)
        assert result is not None and (result["status"], result["attempts"]) == ("succeeded", 1)
    assert seen[slow][0] == 1


def manifest(s3, bucket: str, job_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"results/{job_id}.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def test_in_a_batch_a_message_with_no_time_left_is_handed_back_at_once(slow_provider, moto_server, local_s3, s3, monkeypatch) -> None:
    # Given a producer's mapping with batches of 5, a 30 s visibility timeout, and a slow message ahead of quick ones
    sqs = moto_server.client("sqs")
    resources = create_job_resources(sqs, moto_server.client("dynamodb"), prefix=f"it-{secrets.token_hex(4)}", visibility_timeout=30)
    for name, value in resources.env().items():
        monkeypatch.setenv(name, value)
    slow, fast_ids = send_slow_then_fast(sqs, resources.queue_url, uuid.uuid4().hex[:8])
    seen: dict[str, list[int]] = defaultdict(list)
    poller = SqsPoller(sqs, resources.queue_url, resources.queue_arn, receive_counts_by_job(seen), region="us-east-1", batch_size=5)
    # When the slow message takes the invocation's time, the quick ones are not started but handed back at once:
    # they run in the next invocation, well within the 30 s they would otherwise wait
    started = time.monotonic()
    while time.monotonic() - started < 20 and not all(seen[job_id] and seen[job_id][-1] > 1 for job_id in fast_ids):
        poller.poll_once(wait_seconds=1)
    assert time.monotonic() - started < 20
    for job_id in fast_ids:
        result = manifest(s3, local_s3.bucket, job_id)
        # never begun in the starved invocation: the one run that generated it is its first
        assert result is not None and (result["status"], result["attempts"]) == ("succeeded", 1)


class RateLimitedOpenAI(LoopbackHTTPServer):
    """An OpenAI Images API that is rate limiting this deployment: every generation is a 429 with OpenAI's error body
    and the ``retry-after`` it is told to send."""

    def __init__(self) -> None:
        self.retry_after = "20"
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with fake._lock:
                    fake.requests += 1
                body = json.dumps(
                    {
                        "error": {
                            "message": "Rate limit reached for images per minute.",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    }
                ).encode()
                self.send_response(429)
                self.send_header("content-type", "application/json")
                self.send_header("retry-after", fake.retry_after)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def rate_limited(job_resources, monkeypatch):
    with RateLimitedOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-rate-limited")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.origin}/v1")
        monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # no wait inside the invocation: the queue waits
        yield fake


def moto_visible_at(moto_server, queue_url: str, message_id: str) -> float:
    """When moto will hand the message out again (unix seconds), from its state API."""
    state = httpx.get(f"{moto_server.endpoint_url}/moto-api/data.json", timeout=10).json()
    matches = [message for message in state["sqs"]["Message"] if message["id"] == message_id]
    assert matches, f"moto holds no message {message_id} in {queue_url}"
    # moto lists a received message twice (the queue's copy and its in-flight copy, as received); the queue's copy
    # carries the visibility a ChangeMessageVisibility set, the later of the two
    return max(float(message["visible_at"]) for message in matches) / 1000


def deliver(job_resources, moto_server, lambda_context, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Send ``body`` to the jobs queue, receive it as the event source does and run the worker on it."""
    sqs = moto_server.client("sqs")
    sqs.send_message(QueueUrl=job_resources.queue_url, MessageBody=json.dumps(body))
    (message,) = sqs.receive_message(QueueUrl=job_resources.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2, AttributeNames=["All"])[
        "Messages"
    ]
    event = sqs_event([message], queue_arn=job_resources.queue_arn, region="us-east-1")
    return message, worker.lambda_handler(event, lambda_context)


def test_a_429_with_retry_after_comes_back_after_that_delay(rate_limited, job_resources, moto_server, lambda_context) -> None:
    # Given a provider answering 429 with Retry-After: 3, and a queue whose visibility timeout is far longer
    rate_limited.retry_after = "3"
    sqs = moto_server.client("sqs")
    sqs.set_queue_attributes(QueueUrl=job_resources.queue_url, Attributes={"VisibilityTimeout": "600"})
    job_id = f"limited-{uuid.uuid4().hex[:8]}"
    # When the worker runs the message, it reports it failed
    message, response = deliver(job_resources, moto_server, lambda_context, {"id": job_id, "prompt": "a fox", "model": "gpt-image-1-mini"})
    handed_back = time.time()
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    # Then the message is not visible before the delay
    assert not sqs.receive_message(QueueUrl=job_resources.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages")
    # And is visible again after it (not after the 600 s visibility timeout), its attempt counted
    again = sqs.receive_message(QueueUrl=job_resources.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=5, AttributeNames=["All"])
    (redelivered,) = again["Messages"]
    assert redelivered["MessageId"] == message["MessageId"] and redelivered["Attributes"]["ApproximateReceiveCount"] == "2"
    assert 2.5 <= time.time() - handed_back <= 6.0
    assert rate_limited.requests == 1


def test_a_429_with_retry_after_20_is_due_in_20_seconds(rate_limited, job_resources, moto_server, lambda_context) -> None:
    rate_limited.retry_after = "20"
    job_id = f"limited-{uuid.uuid4().hex[:8]}"
    before = time.time()
    message, response = deliver(job_resources, moto_server, lambda_context, {"id": job_id, "prompt": "a fox", "model": "gpt-image-1-mini"})
    after = time.time()
    assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    due = moto_visible_at(moto_server, job_resources.queue_url, message["MessageId"])
    # ChangeMessageVisibility counts from the call: due 20 s after the worker handed it back (the queue's own
    # visibility timeout, 1 s in these tests, would have made it due at once)
    assert before + 20 - 1 <= due <= after + 20 + 1, (due - before, due - after)
    assert math.isclose(due - after, 20, abs_tol=1.5)
