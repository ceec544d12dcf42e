"""The jobs' storage: the jobs table (DynamoDB) and the job queue (SQS), the data-access half of ``imagegen.jobs``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import QueueError
from imagegen.observability import logger
from imagegen.options import Job, JobRequest, JobStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

# SQS's longest visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200


def seconds_of(when: dt.datetime) -> int:
    return int(when.timestamp())


class JobTable:
    """The jobs table (DynamoDB): one item per job, ``expires_at`` as its TTL attribute."""

    def __init__(self, client: DynamoDBClient, table: str, *, ttl_days: int, clock: Callable[[], dt.datetime], run_seconds: int) -> None:
        self._client = client
        self._table = table
        self._ttl = dt.timedelta(days=ttl_days)
        self._clock = clock
        self._run = dt.timedelta(seconds=run_seconds)

    def create(self, job: Job) -> bool:
        """Put a new job; False (and nothing written) when a job with its id exists."""
        return self._put_if(job, "attribute_not_exists(id)")

    def take_over(self, job: Job, *, now: dt.datetime) -> bool:
        """Put ``job`` (with a lease of its own) over an Idempotency-Key submit whose creator went away before its
        message was sent: only while no worker has touched it, it is not marked sent and its creator's lease has passed.
        One retry wins; False for the others (and for a job that is no longer such a submit)."""
        return self._put_if(job, _UNSENT + " AND lease_until < :now", {":now": {"N": str(seconds_of(now))}})

    def settle_submit(self, job: Job) -> bool:
        """Put ``job`` (marked queued, or its lease released) over the submit it was created as, unless a worker has
        begun it already (then the message was sent, and the worker's record stands): False then."""
        return self._put_if(job, "#status = :queued AND attempts = :zero")

    def get(self, job_id: str) -> Job | None:
        item = self._call(self._client.get_item, TableName=self._table, Key={"id": {"S": job_id}}, ConsistentRead=True).get("Item")
        return None if item is None else Job.model_validate_json(item["doc"]["S"]).model_copy(update=_live_fields(item))

    def begin(self, job_id: str, *, created: dt.datetime) -> Job | None:
        """Mark the job running under a lease of the longest run (the worker's timeout), creating it for a message
        from the user's own producer; None when it already finished, so a redelivered message is acknowledged
        without a second generation, and None while another run holds the lease: a duplicate message (SQS delivers
        at least once, S3 notifies at least once) is not generated, nor billed, twice. A run that died (its function
        timed out or crashed) has let its lease pass, and its message, visible again after the longer visibility
        timeout, runs it. A job that failed for a transient reason runs again: that is a message redriven from the
        dead-letter queue; beginning it clears ``retryable``, so that while it runs it is held like any other."""
        now = self._clock()
        answer = self._call(
            self._client.update_item,
            conditional=True,
            TableName=self._table,
            Key={"id": {"S": job_id}},
            UpdateExpression=(
                "SET #status = :running, updated = :now, lease_until = :lease, retryable = :false, "
                "created = if_not_exists(created, :created), doc = if_not_exists(doc, :doc), "
                "expires_at = if_not_exists(expires_at, :expires) ADD attempts :one"
            ),
            ConditionExpression=(
                "attribute_not_exists(id) OR #status = :queued OR (#status = :running AND lease_until < :now) OR retryable = :true"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":running": {"S": "running"},
                ":queued": {"S": "queued"},
                ":now": {"N": str(seconds_of(now))},
                ":lease": {"N": str(seconds_of(now + self._run))},
                ":created": {"N": str(seconds_of(created))},
                ":doc": {"S": Job(id=job_id, status="queued", created=seconds_of(created), updated=seconds_of(now)).model_dump_json()},
                ":expires": {"N": str(seconds_of(now + self._ttl))},
                ":one": {"N": "1"},
                ":true": {"BOOL": True},
                ":false": {"BOOL": False},
            },
            ReturnValues="ALL_NEW",
        )
        if answer is None:
            return None
        item = answer["Attributes"]
        return Job.model_validate_json(item["doc"]["S"]).model_copy(update=_live_fields(item))

    def save(self, job: Job) -> None:
        self._call(self._client.put_item, TableName=self._table, Item=self._item(job))

    def _put_if(self, job: Job, condition: str, values: dict[str, Any] | None = None) -> bool:
        names = {"#status": "status"} if "#status" in condition else None
        known = {":queued": {"S": "queued"}, ":zero": {"N": "0"}, ":false": {"BOOL": False}}
        values = {**{name: value for name, value in known.items() if name in condition}, **(values or {})}
        written = self._call(
            self._client.put_item,
            conditional=True,
            TableName=self._table,
            Item=self._item(job),
            ConditionExpression=condition,
            **({"ExpressionAttributeNames": names} if names else {}),
            **({"ExpressionAttributeValues": values} if values else {}),
        )
        return written is not None

    def _item(self, job: Job) -> dict[str, Any]:
        expires = seconds_of(dt.datetime.fromtimestamp(job.created, dt.UTC) + self._ttl)
        item = {
            "id": {"S": job.id},
            "status": {"S": job.status},
            "created": {"N": str(job.created)},
            "updated": {"N": str(job.updated)},
            "attempts": {"N": str(job.attempts)},
            "retryable": {"BOOL": job.status == "failed" and job.retryable},
            "enqueued": {"BOOL": job.enqueued},
            "expires_at": {"N": str(expires)},
            "doc": {"S": job.model_dump_json()},
        }
        if job.lease_until is not None:
            item["lease_until"] = {"N": str(job.lease_until)}
        return item

    @staticmethod
    def _call(operation: Callable[..., Any], *, conditional: bool = False, **kwargs: Any) -> Any:
        """One table call; a conditional write whose condition failed is None (``conditional``), any other failure a
        retryable QueueError."""
        try:
            return operation(**kwargs)
        except ClientError as exc:
            if conditional and _condition_failed(exc):
                return None
            raise QueueError("The jobs table is unavailable; try again.") from exc
        except BotoCoreError as exc:
            raise QueueError("The jobs table is unavailable; try again.") from exc


def _live_fields(item: dict[str, Any]) -> dict[str, Any]:
    """The attributes updated in place (status, attempts, times) win over the stored document."""
    status: JobStatus = item["status"]["S"]
    fields: dict[str, Any] = {
        "status": status,
        "updated": int(item["updated"]["N"]),
        "attempts": int(item.get("attempts", {"N": "0"})["N"]),
    }
    if "lease_until" in item:
        fields["lease_until"] = int(item["lease_until"]["N"])
    if "enqueued" in item:
        fields["enqueued"] = item["enqueued"]["BOOL"]
    return fields


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


# An Idempotency-Key submit whose message was never sent: queued, untouched by any worker, not marked sent.
_UNSENT = "#status = :queued AND attempts = :zero AND enqueued = :false"


class JobQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, request: JobRequest) -> None:
        try:
            self._client.send_message(QueueUrl=self._queue_url, MessageBody=request.model_dump_json(exclude_none=True))
        except (BotoCoreError, ClientError) as exc:
            raise QueueError("The job queue is unavailable; nothing was queued. Try again.") from exc

    def come_back_in(self, receipt_handle: str, seconds: int) -> bool:
        """A received message is delivered again ``seconds`` from now (SQS ChangeMessageVisibility counts from the
        call), not after the queue's visibility timeout; False (logged) when SQS refuses, and then it is."""
        seconds = min(max(0, seconds), MAX_VISIBILITY_SECONDS)
        try:
            self._client.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("could not change the message's visibility; it comes back after the queue's timeout", extra={"error": str(exc)})
            return False
        return True
