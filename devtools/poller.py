"""What AWS does between services, done locally: the SQS event source mapping (receive, invoke the worker with an
SQS event, delete what succeeded, leave ``batchItemFailures`` to come back) and S3 event notifications for
request objects (list ``requests/``, invoke the trigger with an S3 event once per new object)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)
Invoke = Callable[[dict[str, Any]], Any]
# The worker's event source mapping in template.yaml, and Lambda's default BatchSize for SQS.
WORKER_MAPPING = "WorkerJobsQueueMapping"
SQS_DEFAULT_BATCH_SIZE = 10


def template_batch_size(mapping: str = WORKER_MAPPING, template: Path | None = None) -> int:
    """The BatchSize of ``mapping`` in template.yaml (a number, or a parameter's default): the local event source
    hands the worker the batches the deployed one would. Read once per process (again if the file changes)."""
    from devtools.sam_template import TEMPLATE

    path = (template or TEMPLATE).resolve()
    return _batch_size(path, path.stat().st_mtime_ns, mapping)


@lru_cache(maxsize=8)
def _batch_size(path: Path, modified_ns: int, mapping: str) -> int:
    from devtools.sam_template import load_template, parameter_values

    template = load_template(path)
    size = template["Resources"][mapping]["Properties"].get("BatchSize", SQS_DEFAULT_BATCH_SIZE)
    if isinstance(size, dict) and set(size) == {"Ref"}:
        size = parameter_values(template)[size["Ref"]]
    if isinstance(size, dict):
        raise ValueError(f"{mapping}'s BatchSize is neither a number nor a parameter: {size}")
    return int(size)


def sqs_event(messages: list[dict[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers it."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def s3_event(bucket: str, key: str, size: int, etag: str, *, region: str, when: dt.datetime) -> dict[str, Any]:
    """An ObjectCreated:Put notification; keys arrive URL-encoded, as S3 sends them. The sequencer (S3's is an
    increasing hex string per key) is the write time and the ETag: another write of the key, another sequencer."""
    etag = etag.strip('"')
    sequencer = f"{int(when.timestamp() * 1_000_000):016X}{etag[:8].upper()}"
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag, "sequencer": sequencer},
                },
            }
        ]
    }


class SqsPoller:
    """The event source mapping: ``poll_once`` handles one batch (at most ``batch_size`` messages: by default the
    template's BatchSize for the worker); ``run`` loops until ``stop``."""

    def __init__(
        self, sqs: SQSClient, queue_url: str, queue_arn: str, invoke: Invoke, *, region: str, batch_size: int | None = None
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.invoke = invoke
        self.region = region
        self.batch_size = template_batch_size() if batch_size is None else batch_size
        self.stats = {"batches": 0, "succeeded": 0, "failed": 0}
        self._stop = threading.Event()

    def poll_once(self, wait_seconds: int = 1) -> int:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        response = self.invoke(sqs_event(messages, queue_arn=self.queue_arn, region=self.region))  # type: ignore[arg-type]
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])} if isinstance(response, dict) else None
        if failed is None:  # the function itself failed: the whole batch comes back
            failed = {message["MessageId"] for message in messages}
        done = [message for message in messages if message["MessageId"] not in failed]
        if done:
            entries = [{"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(done)]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]
        self.stats["batches"] += 1
        self.stats["succeeded"] += len(done)
        self.stats["failed"] += len(failed)
        return len(messages)

    def drain(self, *, until: float = 30.0, idle_polls: int = 3) -> None:
        """Poll until the queue has stayed empty for ``idle_polls`` polls (retried messages come back after the
        visibility timeout), or ``until`` seconds have passed."""
        deadline, idle = time.monotonic() + until, 0
        while time.monotonic() < deadline and idle < idle_polls:
            idle = 0 if self.poll_once(wait_seconds=1) else idle + 1

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a local poller keeps polling, as the managed one does
                log.exception("SQS poller: batch failed")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()


class S3RequestWatcher:
    """S3 notifications for ``requests/*.json``: each new (key, ETag) is delivered once."""

    def __init__(self, s3: S3Client, bucket: str, invoke: Invoke, *, region: str, interval: float = 1.0) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.invoke = invoke
        self.region = region
        self.interval = interval
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()

    def _objects(self) -> list[dict[str, Any]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="requests/")
        return [obj for page in pages for obj in page.get("Contents", []) if obj["Key"].endswith(".json")]  # type: ignore[misc]

    def prime(self) -> None:
        """Treat every object already there as notified."""
        self.seen.update((obj["Key"], obj["ETag"]) for obj in self._objects())

    def scan_once(self) -> int:
        delivered = 0
        for obj in self._objects():
            identity = (obj["Key"], obj["ETag"])
            if identity in self.seen:
                continue
            self.seen.add(identity)
            when = obj["LastModified"].astimezone(dt.UTC)
            self.invoke(s3_event(self.bucket, obj["Key"], obj["Size"], obj["ETag"], region=self.region, when=when))
            delivered += 1
        return delivered

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # keep watching, like the real notification pipeline
                log.exception("S3 request watcher: scan failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
