"""Asynchronous jobs against real loopback servers: S3 (SeaweedFS), SQS and DynamoDB (moto server), the fake
OpenAI server; the API, worker and S3-trigger handlers run in-process, fed by the same poller the local stack uses."""

from __future__ import annotations

import base64
import copy
import io
import json
import time
import uuid

import httpx
import pytest
from PIL import Image as PILImage

from devtools.poller import S3RequestWatcher, sqs_event
from functions.api import app as api
from functions.s3_trigger import app as s3_trigger
from functions.worker import app as worker
from tests.conftest import EVENTS, clear_caches, job_event, load_event

pytestmark = pytest.mark.integration


def png_size(data: bytes) -> tuple[int, int]:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image.size


def call_api(event, lambda_context):
    response = api.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def async_event(**body):
    event = load_event("api_generate_url.json", **body)
    event["headers"]["Prefer"] = "respond-async"
    event["multiValueHeaders"]["Prefer"] = ["respond-async"]
    return event


def test_async_submit_then_poll_gives_presigned_images(job_resources, worker_poller, lambda_context) -> None:
    status, accepted, response = call_api(async_event(n=2, size="512x512"), lambda_context)
    assert status == 202, accepted
    assert accepted["status"] == "queued" and accepted["object"] == "image.generation.job"
    assert response["multiValueHeaders"]["Location"] == [f"/prod/v1/images/jobs/{accepted['id']}"]
    assert response["multiValueHeaders"]["Preference-Applied"] == ["respond-async"]

    status, queued, _ = call_api(job_event(accepted["id"]), lambda_context)
    assert (status, queued["status"]) == (200, "queued") and "data" not in queued

    worker_poller.drain()
    status, done, _ = call_api(job_event(accepted["id"]), lambda_context)
    assert status == 200 and done["status"] == "succeeded", done
    assert len(done["data"]) == 2
    for item in done["data"]:
        fetched = httpx.get(item["url"], timeout=10)
        assert fetched.status_code == 200 and png_size(fetched.content) == (512, 512)
    # URLs are signed at read time, never stored: a second read signs again.
    time.sleep(1.1)
    assert call_api(job_event(accepted["id"]), lambda_context)[1]["data"][0]["url"] != done["data"][0]["url"]


def with_caller(event: dict, *, key: str | None = None, user_arn: str | None = None) -> dict:
    if key is not None:
        event["headers"]["Authorization"] = f"Bearer {key}"
        event["multiValueHeaders"]["Authorization"] = [f"Bearer {key}"]
    event["requestContext"]["identity"]["userArn"] = user_arn
    return event


def test_a_job_is_read_only_by_the_caller_who_created_it(job_resources, lambda_context) -> None:
    # Given a job created with one API key
    owner, stranger = "key-a-0123456789abcdefghij", "key-b-0123456789abcdefghij"
    status, accepted, _ = call_api(with_caller(async_event(n=1, size="256x256"), key=owner), lambda_context)
    assert status == 202
    # Then its key reads it, and another key, an IAM principal or no key are told there is no such job
    assert call_api(with_caller(job_event(accepted["id"]), key=owner), lambda_context)[0] == 200
    for other in ({"key": stranger}, {"user_arn": "arn:aws:iam::123456789012:user/mallory"}, {}):
        status, body, _ = call_api(with_caller(job_event(accepted["id"]), **other), lambda_context)
        assert (status, body["error"]["code"]) == (404, "job_not_found"), other


def test_async_b64_job_reads_the_bytes_back_from_s3(job_resources, worker_poller, lambda_context) -> None:
    _, accepted, _ = call_api(async_event(n=1, size="256x256", responseFormat="b64_json"), lambda_context)
    worker_poller.drain()
    _, done, _ = call_api(job_event(accepted["id"]), lambda_context)
    assert png_size(base64.b64decode(done["data"][0]["b64_json"])) == (256, 256)


def test_invalid_async_request_is_400_now_and_queues_nothing(job_resources, moto_server, lambda_context) -> None:
    status, body, _ = call_api(async_event(size="640x480"), lambda_context)
    assert status == 400 and body["error"]["param"] == "size"
    attributes = moto_server.client("sqs").get_queue_attributes(QueueUrl=job_resources.queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_unknown_job_is_404(job_resources, lambda_context) -> None:
    status, body, _ = call_api(job_event("no-such-job"), lambda_context)
    assert status == 404 and body["error"]["code"] == "job_not_found"


def test_without_a_queue_the_preference_is_ignored(local_s3, lambda_context) -> None:
    status, body, response = call_api(async_event(n=1, size="256x256"), lambda_context)
    assert status == 200 and "url" in body["data"][0]
    assert "Preference-Applied" not in response.get("multiValueHeaders", {})


def sqs_record(body: object, *, receive_count: int = 1) -> dict:
    record = copy.deepcopy(json.loads((EVENTS / "sqs.json").read_text())["Records"][0])
    record["messageId"] = str(uuid.uuid4())
    record["body"] = body if isinstance(body, str) else json.dumps(body)
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    record["attributes"]["SentTimestamp"] = str(int(time.time() * 1000))
    return record


@pytest.fixture
def openai_jobs(job_resources, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-integration-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # these tests are about SQS redelivery
    return fake_openai


def manifest(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_batch_reports_exactly_the_transient_failures(openai_jobs, local_s3, s3, lambda_context) -> None:
    good = sqs_record({"id": f"good-{uuid.uuid4().hex[:8]}", "prompt": "a fox", "model": "local", "size": "256x256"})
    invalid = sqs_record({"id": f"bad-{uuid.uuid4().hex[:8]}", "prompt": "a fox", "reponseFormat": "url"})
    not_json = sqs_record("{this is not json")
    policy = sqs_record({"prompt": "fail:policy", "model": "gpt-image-1-mini", "size": "1024x1024"})
    transient = sqs_record({"prompt": "fail:500", "model": "gpt-image-1-mini", "size": "1024x1024"})
    last_try = sqs_record({"prompt": "fail:429", "model": "gpt-image-1-mini", "size": "1024x1024"}, receive_count=3)
    records = [good, invalid, not_json, policy, transient, last_try]

    response = worker.lambda_handler({"Records": records}, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": transient["messageId"]}, {"itemIdentifier": last_try["messageId"]}]}
    assert manifest(s3, local_s3.bucket, f"results/{json.loads(good['body'])['id']}.json")["status"] == "succeeded"
    bad = manifest(s3, local_s3.bucket, f"results/{json.loads(invalid['body'])['id']}.json")
    assert (bad["status"], bad["error"]["param"], bad["error"]["code"]) == ("failed", "reponseFormat", "unknown_parameter")
    assert manifest(s3, local_s3.bucket, f"results/{not_json['messageId']}.json")["error"]["code"] == "invalid_json"
    assert manifest(s3, local_s3.bucket, f"results/{policy['messageId']}.json")["error"]["code"] == "content_policy_violation"
    final = manifest(s3, local_s3.bucket, f"results/{last_try['messageId']}.json")
    assert (final["status"], final["error"]["code"]) == ("failed", "rate_limit_exceeded")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=local_s3.bucket, Key=f"results/{transient['messageId']}.json")


def test_redelivered_finished_job_is_not_generated_again(openai_jobs, lambda_context) -> None:
    record = sqs_record({"id": f"once-{uuid.uuid4().hex[:8]}", "prompt": "a fox", "model": "gpt-image-1-mini", "size": "1024x1024"})
    before = len(openai_jobs.requests)
    assert worker.lambda_handler({"Records": [record]}, lambda_context) == {"batchItemFailures": []}
    redelivered = {**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": "2"}}
    assert worker.lambda_handler({"Records": [redelivered]}, lambda_context) == {"batchItemFailures": []}
    assert len(openai_jobs.requests) == before + 1


def test_sqs_sample_event_file(job_resources, local_s3, s3, lambda_context) -> None:
    event = json.loads((EVENTS / "sqs.json").read_text())
    for record in event["Records"]:  # fresh ids, so earlier runs' results do not count
        body = json.loads(record["body"])
        body["id"] = f"{body['id']}-{uuid.uuid4().hex[:6]}"
        record["body"] = json.dumps(body)
    assert worker.lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    first, second = (json.loads(record["body"])["id"] for record in event["Records"])
    assert len(manifest(s3, local_s3.bucket, f"results/{first}.json")["images"]) == 2
    assert manifest(s3, local_s3.bucket, f"results/{second}.json")["status"] == "failed"


def test_a_producers_result_key_gets_the_manifest_even_when_the_message_is_invalid(job_resources, local_s3, s3, lambda_context) -> None:
    # Given two messages naming where their manifests go: one good, one with a bad option
    where = f"results/producer-{uuid.uuid4().hex[:6]}"
    good = sqs_record({"prompt": "a fox", "model": "local", "size": "256x256", "result_key": f"{where}/good.json"})
    bad = sqs_record({"prompt": "a fox", "n": "many", "resultKey": f"{where}/bad.json", "id": f"bad-{uuid.uuid4().hex[:6]}"})
    event = json.loads((EVENTS / "sqs.json").read_text())
    event["Records"] = [good, bad]
    assert worker.lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    # Then each manifest is where the producer said, the failure naming the bad field
    assert manifest(s3, local_s3.bucket, f"{where}/good.json")["status"] == "succeeded"
    failed = manifest(s3, local_s3.bucket, f"{where}/bad.json")
    assert (failed["status"], failed["error"]["param"], failed["id"]) == ("failed", "n", json.loads(bad["body"])["id"])


def test_a_duplicate_message_is_not_run_while_the_job_runs_but_a_dead_run_is_taken_up(
    openai_jobs, moto_server, job_resources, local_s3, s3, lambda_context
) -> None:
    import datetime as dt

    from imagegen.job_store import JobTable

    # Given a job another invocation began a moment ago (its run is under way)
    job_id, prompt = f"dup-run-{uuid.uuid4().hex[:8]}", f"dup run {uuid.uuid4()}"
    now = dt.datetime.now(dt.UTC)
    table = JobTable(moto_server.client("dynamodb"), job_resources.table, ttl_days=1, clock=lambda: now, run_seconds=300)
    assert table.begin(job_id, created=now) is not None
    # When a second, distinct message for it arrives (an S3 or SQS duplicate)
    duplicate = sqs_record({"id": job_id, "prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024"})
    event = json.loads((EVENTS / "sqs.json").read_text())
    event["Records"] = [duplicate]
    # Then it is acknowledged without a provider call
    assert worker.lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    assert [r["json"]["prompt"] for r in openai_jobs.requests].count(prompt) == 0
    # And once that run is older than the longest run, it is presumed dead and the message runs the job
    later = JobTable(
        moto_server.client("dynamodb"), job_resources.table, ttl_days=1, clock=lambda: now + dt.timedelta(seconds=301), run_seconds=300
    )
    assert later.begin(job_id, created=now) is not None
    assert table.begin(job_id, created=now) is None  # and that new run is itself protected


def requests_listing(s3, bucket: str) -> set[str]:
    return {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix="requests/").get("Contents", [])}


def s3_watcher(s3, bucket: str, lambda_context) -> S3RequestWatcher:
    """The bucket's notification to the trigger, in-process, for objects written from now on."""
    watcher = S3RequestWatcher(s3, bucket, lambda event: s3_trigger.lambda_handler(event, lambda_context), region="us-east-1")
    watcher.prime()
    return watcher


def test_s3_request_object_is_queued_then_produces_images_and_a_manifest(
    job_resources, worker_poller, local_s3, s3, lambda_context, monkeypatch
) -> None:
    # Given a request object, and a trigger that (as deployed) knows the queue but no table
    name = f"batch {uuid.uuid4().hex[:6]}/fox.json"
    watcher = s3_watcher(s3, local_s3.bucket, lambda_context)
    s3.put_object(Bucket=local_s3.bucket, Key=f"requests/{name}", Body=json.dumps({"prompt": "a fox", "size": "256x256", "n": 2}))
    before = requests_listing(s3, local_s3.bucket)
    with monkeypatch.context() as trigger_env:
        trigger_env.delenv("JOBS_TABLE")
        assert watcher.scan_once() == 1
    clear_caches()  # both handlers run in this process: the worker builds its own job service, with the table
    # Then the trigger generated nothing itself: the job waits in the queue
    assert not s3.list_objects_v2(Bucket=local_s3.bucket, Prefix=f"results/{name}").get("KeyCount")
    # When the worker runs the queue
    worker_poller.drain()
    # Then the manifest is at results/<same key>, with the images
    result = manifest(s3, local_s3.bucket, f"results/{name}")
    assert result["status"] == "succeeded" and len(result["images"]) == 2
    for image in result["images"]:
        data = s3.get_object(Bucket=local_s3.bucket, Key=image["key"])["Body"].read()
        assert png_size(data) == (256, 256) and image["bytes"] == len(data)
    # And the API does not serve it: a request object's job has no owner among the API's callers
    status, body, _ = call_api(job_event(result["id"]), lambda_context)
    assert (status, body["error"]["code"]) == (404, "job_not_found")
    assert requests_listing(s3, local_s3.bucket) == before  # the code wrote nothing under requests/


def test_a_duplicate_notification_is_one_job_and_a_new_write_another(
    job_resources, worker_poller, local_s3, s3, lambda_context, openai_env
) -> None:
    # Given one write of a request object that names its own id, notified twice (S3 delivers at least once)
    key = f"requests/dup-{uuid.uuid4().hex[:6]}.json"
    prompt = f"dup {key}"
    s3.put_object(
        Bucket=local_s3.bucket,
        Key=key,
        Body=json.dumps({"id": "catalog-4711", "prompt": prompt, "model": "gpt-image-1-mini", "size": "1024x1024"}),
    )
    event = copy.deepcopy(json.loads((EVENTS / "s3_put.json").read_text()))
    event["Records"][0]["s3"]["bucket"]["name"] = local_s3.bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    first = s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]
    again = s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]
    assert first == again and first["status"] == "queued" and first["id"].startswith("catalog-4711-")
    worker_poller.drain()
    # Then the provider was asked once
    assert [r["json"]["prompt"] for r in openai_env.requests].count(prompt) == 1
    # And a new write of the key (a new sequencer), with a new prompt and the same id, is a new job
    s3.put_object(
        Bucket=local_s3.bucket,
        Key=key,
        Body=json.dumps({"id": "catalog-4711", "prompt": f"{prompt} v2", "model": "gpt-image-1-mini", "size": "1024x1024"}),
    )
    event["Records"][0]["s3"]["object"]["sequencer"] = "0055AED6DCD90281F0"
    third = s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]
    assert third["id"] != first["id"]
    # And another key naming the same id is another job too
    other_key = key.replace("dup-", "dup-other-")
    s3.put_object(
        Bucket=local_s3.bucket,
        Key=other_key,
        Body=json.dumps({"id": "catalog-4711", "prompt": f"{prompt} other", "model": "gpt-image-1-mini", "size": "1024x1024"}),
    )
    event["Records"][0]["s3"]["object"]["key"] = other_key
    fourth = s3_trigger.lambda_handler(event, lambda_context)["jobs"][other_key]
    assert fourth["id"] not in (first["id"], third["id"])
    worker_poller.drain()
    prompts = [r["json"]["prompt"] for r in openai_env.requests]
    assert (prompts.count(prompt), prompts.count(f"{prompt} v2"), prompts.count(f"{prompt} other")) == (1, 1, 1)
    rewritten = manifest(s3, local_s3.bucket, key.replace("requests/", "results/", 1))
    assert (rewritten["id"], rewritten["status"]) == (third["id"], "succeeded")
    assert manifest(s3, local_s3.bucket, other_key.replace("requests/", "results/", 1))["id"] == fourth["id"]


def test_a_key_that_cannot_name_a_manifest_is_refused_without_writing(job_resources, local_s3, s3, lambda_context) -> None:
    # (SeaweedFS refuses such a key outright; S3 takes it, so the notification can arrive)
    key = f"requests/odd-{uuid.uuid4().hex[:6]}/../x.json"
    event = json.loads((EVENTS / "s3_put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = local_s3.bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    assert s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]["status"] == "failed"
    assert not s3.list_objects_v2(Bucket=local_s3.bucket, Prefix=key.replace("requests/", "results/", 1).split("/..")[0]).get("KeyCount")


def test_a_request_object_failing_transiently_is_retried_by_the_queue(openai_jobs, worker_poller, local_s3, s3, lambda_context) -> None:
    # Given a provider that answers 500 once for this prompt, then works (and no in-call retries)
    key = f"requests/retry-{uuid.uuid4().hex[:6]}.json"
    watcher = s3_watcher(s3, local_s3.bucket, lambda_context)
    s3.put_object(
        Bucket=local_s3.bucket, Key=key, Body=json.dumps({"prompt": f"flaky:1:{key}", "model": "gpt-image-1-mini", "size": "1024x1024"})
    )
    assert watcher.scan_once() == 1
    # When the worker runs the queue (the message comes back after the visibility timeout)
    worker_poller.drain()
    # Then the object got its images on the second delivery, not a failed manifest
    result = manifest(s3, local_s3.bucket, key.replace("requests/", "results/", 1))
    assert (result["status"], result["attempts"]) == ("succeeded", 2)


def test_malformed_request_object_gets_an_error_manifest_at_once(job_resources, local_s3, s3, lambda_context, monkeypatch) -> None:
    monkeypatch.delenv("JOBS_TABLE")  # the trigger as deployed: the queue, no table
    name = f"broken-{uuid.uuid4().hex[:6]}.json"
    s3.put_object(Bucket=local_s3.bucket, Key=f"requests/{name}", Body=b'{"prompt": "a fox", "n": "many"}')
    event = json.loads((EVENTS / "s3_put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = local_s3.bucket
    event["Records"][0]["s3"]["object"]["key"] = f"requests/{name}"
    (answer,) = s3_trigger.lambda_handler(event, lambda_context)["jobs"].values()
    assert answer["status"] == "failed"
    result = manifest(s3, local_s3.bucket, f"results/{name}")
    assert (result["status"], result["error"]["param"]) == ("failed", "n")


def test_s3_sample_event_with_url_encoded_key(job_resources, worker_poller, local_s3, s3, lambda_context) -> None:
    event = json.loads((EVENTS / "s3_put.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = local_s3.bucket
    key = "requests/sample fox request.json"  # arrives as requests/sample+fox+request.json
    s3.put_object(Bucket=local_s3.bucket, Key=key, Body=(EVENTS / key).read_bytes())
    assert s3_trigger.lambda_handler(event, lambda_context)["jobs"][key]["status"] == "queued"
    worker_poller.drain()
    assert len(manifest(s3, local_s3.bucket, "results/sample fox request.json")["images"]) == 2


def test_poller_builds_the_event_lambda_gets() -> None:
    message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}", "Attributes": {"ApproximateReceiveCount": "1"}}
    (record,) = sqs_event([message], queue_arn="arn:aws:sqs:us-east-1:1:q", region="us-east-1")["Records"]
    assert (record["messageId"], record["eventSource"], record["body"]) == ("m1", "aws:sqs", "{}")


def test_a_message_redriven_from_the_dlq_runs_again_but_a_permanent_failure_does_not(openai_jobs, local_s3, s3, lambda_context) -> None:
    job_id = f"redrive-{uuid.uuid4().hex[:8]}"
    last_try = sqs_record({"id": job_id, "prompt": f"flaky:3:{job_id}", "model": "gpt-image-1-mini", "size": "1024x1024"}, receive_count=3)
    assert worker.lambda_handler({"Records": [last_try]}, lambda_context)["batchItemFailures"]  # to the DLQ
    assert manifest(s3, local_s3.bucket, f"results/{job_id}.json")["status"] == "failed"
    for attempt in (1, 2, 3):  # redriven: a fresh receive count; the provider recovers on its 4th request
        redriven = {**last_try, "attributes": {**last_try["attributes"], "ApproximateReceiveCount": str(attempt)}}
        worker.lambda_handler({"Records": [redriven]}, lambda_context)
    assert manifest(s3, local_s3.bucket, f"results/{job_id}.json")["status"] == "succeeded"

    invalid_id = f"perm-{uuid.uuid4().hex[:8]}"
    invalid = sqs_record({"id": invalid_id, "prompt": "fail:policy", "model": "gpt-image-1-mini", "size": "1024x1024"})
    worker.lambda_handler({"Records": [invalid]}, lambda_context)
    before = len(openai_jobs.requests)
    worker.lambda_handler({"Records": [invalid]}, lambda_context)
    assert len(openai_jobs.requests) == before
