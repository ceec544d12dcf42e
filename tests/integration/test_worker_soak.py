"""Soak: 500+ messages through the real queue (moto server) and the worker, with injected transient provider
failures. Every message ends as a result, a recorded failure, or in the dead-letter queue, and no result is
duplicated. Bounded in count and time; loopback only."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from devtools.poller import SqsPoller
from functions.worker import app as worker

pytestmark = pytest.mark.integration

MESSAGES = 520
TIME_BUDGET_SECONDS = 240


def kind_of(index: int) -> str:
    return ["ok", "ok", "ok", "ok", "ok", "ok", "flaky1", "flaky1", "flaky2", "dead", "invalid", "ok"][index % 12]


def body(index: int, run: str) -> dict:
    job_id = f"soak-{run}-{index}"
    prompts = {"ok": f"soak {index}", "flaky1": f"flaky:1:{job_id}", "flaky2": f"flaky:2:{job_id}", "dead": f"flaky:99:{job_id}"}
    if kind_of(index) == "invalid":
        return {"id": job_id, "prompt": "x", "reponseFormat": "url"}
    return {"id": job_id, "prompt": prompts[kind_of(index)], "model": "gpt-image-1-mini", "size": "1024x1024"}


def test_every_message_is_accounted_for_once(job_resources, moto_server, fake_openai, local_s3, s3, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-soak")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")  # every transient failure goes back to SQS
    sqs = moto_server.client("sqs")
    run = str(int(time.time()))
    for start in range(0, MESSAGES, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(body(i, run))} for i in range(start, min(start + 10, MESSAGES))]
        assert not sqs.send_message_batch(QueueUrl=job_resources.queue_url, Entries=entries).get("Failed")

    poller = SqsPoller(
        sqs,
        job_resources.queue_url,
        job_resources.queue_arn,
        lambda e: worker.lambda_handler(e, lambda_context),
        region="us-east-1",
        batch_size=10,  # the template's is 1; a producer's mapping may batch, and the worker stays correct
    )
    started, idle = time.monotonic(), 0
    while idle < 4 and time.monotonic() - started < TIME_BUDGET_SECONDS:
        idle = 0 if poller.poll_once(wait_seconds=1) else idle + 1
    elapsed = time.monotonic() - started

    dead_letters = []
    while batch := sqs.receive_message(QueueUrl=job_resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        dead_letters += [json.loads(message["Body"])["id"] for message in batch]
        sqs.delete_message_batch(
            QueueUrl=job_resources.dlq_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )

    outcomes: Counter[str] = Counter()
    image_keys: list[str] = []
    for index in range(MESSAGES):
        job_id = body(index, run)["id"]
        manifest = json.loads(s3.get_object(Bucket=local_s3.bucket, Key=f"results/{job_id}.json")["Body"].read())
        expected = {"ok": "succeeded", "flaky1": "succeeded", "flaky2": "succeeded", "dead": "failed", "invalid": "failed"}[kind_of(index)]
        assert manifest["status"] == expected, (job_id, manifest)
        outcomes[manifest["status"]] += 1
        image_keys += [image["key"] for image in manifest["images"]]

    dead_expected = sorted(body(i, run)["id"] for i in range(MESSAGES) if kind_of(i) == "dead")
    assert sorted(dead_letters) == dead_expected
    assert len(image_keys) == len(set(image_keys)) == outcomes["succeeded"]
    stored: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=local_s3.bucket, Prefix="images/"):
        stored.update(obj["Key"].split("/")[4] for obj in page.get("Contents", []) if f"/soak-{run}-" in obj["Key"])
    assert set(stored.values()) == {1}  # one image per succeeded job, however often its message was delivered
    assert sum(stored.values()) == outcomes["succeeded"]
    print(
        f"\nsoak: {MESSAGES} messages in {elapsed:.1f} s, {poller.stats['batches']} batches, "
        f"{outcomes['succeeded']} succeeded, {outcomes['failed']} failed ({len(dead_letters)} in the DLQ), "
        f"{poller.stats['failed']} transient failures retried"
    )
