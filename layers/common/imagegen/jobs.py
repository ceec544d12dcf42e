"""Asynchronous jobs: the API and the S3 trigger queue them, the SQS worker runs them, the API reports them.

Every accepted job ends as a result (``status: succeeded`` + ``results/`` manifest), a recorded failure
(``status: failed``), or, after the queue's ``maxReceiveCount`` transient failures, in the dead-letter queue
(recorded as failed too). A permanent error (bad options, content policy) is recorded and never retried. Request
objects under ``requests/`` go through the same queue, so they share its retries, dead-letter queue and the
worker's concurrency cap (a burst of objects waits in the queue instead of failing as provider 429s).

A job is a generation, an edit or a variation (the message's ``operation``). An edit's or a variation's images travel
by reference: keys under ``inputs/`` (the API stores the uploads there before queueing; a trusted producer may name
its own) or ``image_url``s, which the worker fetches and stores under ``inputs/`` as a synchronous edit does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import ValidationError

from imagegen.deadline import Deadline
from imagegen.errors import (
    ConflictError,
    ImageGenError,
    InsufficientQuotaError,
    InvalidRequestError,
    JobNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueError,
    StorageError,
    invalid_request_from,
)
from imagegen.inputs import EditSources, stored_sources
from imagegen.job_store import JobQueue, JobTable, seconds_of
from imagegen.observability import logger
from imagegen.options import (
    JOB_ID_PATTERN,
    RESULTS_PREFIX,
    ErrorDetail,
    ImageEditJobRequest,
    ImageEditOptions,
    ImageGenerationRequest,
    ImageJobRequest,
    ImageVariationJobRequest,
    ImageVariationOptions,
    Job,
    JobRequest,
    JobView,
    StoredImage,
    Usage,
    parse_job_request,
    validate_result_key,
)
from imagegen.planning import GenerationPlan
from imagegen.service import Generation, ImageService, get_service
from imagegen.settings import get_settings
from imagegen.usage.meter import QUEUE_CALLER

if TYPE_CHECKING:
    pass

REQUESTS_PREFIX = "requests/"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# How long an Idempotency-Key submit holds its job before a retry may take it over, when the caller gives no lease:
# the API function's timeout (API Gateway ends the request at 29 s).
SUBMIT_LEASE_SECONDS = 30.0


def idempotent_job_id(owner: str, key: str) -> str:
    """The job of an ``Idempotency-Key`` submit: one per (caller, key), never shared between callers."""
    from imagegen.http import check_idempotency_key  # the API's adapter: only the API's submits get here

    check_idempotency_key(key)
    return "ik-" + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()[:40]


def request_hash(request: ImageGenerationRequest) -> str:
    """The request's fingerprint, whichever spelling (camelCase or snake_case) and key order it came in."""
    canonical = json.dumps(request.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _queued(job_id: str, plan: GenerationPlan, *, owner: str | None, seconds: int) -> Job:
    """A job as recorded when it is submitted through the API."""
    return Job(
        id=job_id,
        status="queued",
        created=seconds,
        updated=seconds,
        model=plan.requested_model,  # a route's id until the job is done, then the model that served it
        response_format=plan.response_format,
        owner=owner,
    )


@dataclass
class JobService:
    images: ImageService
    table: JobTable | None
    queue: JobQueue | None
    max_receive_count: int
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    @property
    def accepts_jobs(self) -> bool:
        return self.table is not None and self.queue is not None

    def submit(
        self,
        request: ImageGenerationRequest,
        *,
        job_id: str,
        owner: str,
        idempotency_key: str | None = None,
        lease_seconds: float = SUBMIT_LEASE_SECONDS,
    ) -> tuple[Job, bool]:
        """Validate now (a bad request is a 400 now, not a failed job later), check the caller's budgets (a 429 now
        when they have no room; the worker reserves), record the job (readable by ``owner`` only), queue it. Returns
        the job and whether it is a replay.

        With ``idempotency_key`` the job's id is derived from (``owner``, key) and the row is created under a
        DynamoDB condition: a retry gets the same job and queues nothing; the same key with another body is a 422
        ``idempotency_key_reused``. The row is marked once its message is sent; a retry that finds it unmarked
        after its creator's lease (``lease_seconds``: the creating invocation's remaining time) has passed takes it
        over and queues it (the creator died between the two writes), and before then answers 409
        ``idempotency_key_in_progress``, as the synchronous path does."""
        assert self.table is not None and self.queue is not None, "async jobs are not configured"
        plan = self.images.plan(request)
        now = self.clock()
        seconds = seconds_of(now)
        job = _queued(job_id, plan, owner=owner, seconds=seconds)
        if idempotency_key is not None:
            job = job.model_copy(
                update={
                    "id": idempotent_job_id(owner, idempotency_key),
                    "lease_until": seconds + max(1, math.ceil(lease_seconds)),
                    "request_hash": request_hash(request),
                }
            )
        try:
            self.images.meter.admit(plan, caller=owner)
        except InsufficientQuotaError:
            if idempotency_key is None or self.table.get(job.id) is None:
                raise
            # the key's earlier submit: answered as it was, whatever the budget holds now
        if not self.table.create(job):
            if idempotency_key is None:
                raise QueueError("A job with this request's id exists already; try again.")
            job, replayed = self._existing_submit(job, now=now)
            if replayed:
                return job, True
        message = ImageJobRequest.model_validate({**request.model_dump(exclude_none=True), "id": job.id, "model": plan.requested_model})
        try:
            self.queue.send(message)
        except QueueError as error:
            if idempotency_key is None:
                self.table.save(_failed(job, error, seconds))
            else:  # the key's retry queues it at once, instead of finding a failed job (or, failing that, after the lease)
                with suppress(QueueError):
                    self.table.settle_submit(job.model_copy(update={"lease_until": 0}))
            raise
        if idempotency_key is not None:
            try:
                self.table.settle_submit(job.model_copy(update={"enqueued": True}))
            except QueueError:  # queued all the same: answer it; a retry after the lease may queue a duplicate, run once
                logger.warning("the job was queued but could not be marked so", extra={"job_id": job.id})
        return job, False

    def submit_inputs(
        self,
        options: ImageEditOptions | ImageVariationOptions,
        sources: EditSources,
        *,
        job_id: str,
        owner: str,
        deadline: Deadline,
        json_form: bool = False,
    ) -> Job:
        """An edit (``ImageEditOptions``) or a variation from the API, queued: its inputs read and checked now (a bad
        image is a 400 now, not a failed job later), stored under ``inputs/``, the job recorded (readable by ``owner``
        only) and its message queued with the inputs as keys, which the worker reads as trusted."""
        assert self.table is not None and self.queue is not None, "async jobs are not configured"
        plan = self.images.plan_inputs(options, sources, deadline=deadline, json_form=json_form)
        assert plan.inputs is not None  # plan_inputs plans every input it read
        self.images.meter.admit(plan, caller=owner)  # before its inputs are stored
        now = self.clock()
        seconds = seconds_of(now)
        job = _queued(job_id, plan, owner=owner, seconds=seconds)
        # A job not recorded, or not queued, keeps none of its inputs
        with self.images.stored_inputs(plan, request_id=job_id, deadline=deadline, now=now, sources=sources) as keys:
            message = _inputs_message(options, stored_sources(keys, sources), job_id=job_id, model=plan.model.id)
            if not self.table.create(job):
                raise QueueError("A job with this request's id exists already; try again.")
            try:
                self.queue.send(message)
            except QueueError as error:
                self.table.save(_failed(job, error, seconds))
                raise
        return job

    def _existing_submit(self, job: Job, *, now: dt.datetime) -> tuple[Job, bool]:
        """The job an earlier submit with this key created and True, to answer it again; or that job taken over
        (its creator died before queueing it) and False: this call must queue it."""
        from imagegen.http import IDEMPOTENCY_HEADER, idempotency_key_reused  # the API's adapter: only its submits get here

        assert self.table is not None
        existing = self.table.get(job.id)
        if existing is None:  # expired and deleted between the two calls
            raise QueueError("The jobs table changed under this request; try again.")
        if existing.request_hash is None or not hmac.compare_digest(existing.request_hash, job.request_hash or ""):
            raise idempotency_key_reused()
        unsent = existing.status == "queued" and existing.attempts == 0 and not existing.enqueued
        if not unsent:
            return self._as_read(existing), True
        taken = existing.model_copy(update={"lease_until": job.lease_until, "updated": job.updated})
        if (existing.lease_until or 0) >= seconds_of(now) or not self.table.take_over(taken, now=now):
            raise ConflictError(
                f"A request with this {IDEMPOTENCY_HEADER} is still being queued; retry in a few seconds.",
                param=IDEMPOTENCY_HEADER,
                code="idempotency_key_in_progress",
            )
        return taken, False

    def view(self, job_id: str, *, owner: str) -> JobView:
        """The job, for the caller who created it; anyone else (and a job from the queue or a request object, which
        has no owner) is told there is no such job, as if the id did not exist. A job still ``running`` after its
        lease reads as ``failed`` (``job_run_expired``): its worker crashed or timed out. The record is left as it
        is, so a later delivery of its message may still take it up: it then reads ``running`` again."""
        job = self.table.get(job_id) if self.table is not None and _JOB_ID.match(job_id) else None
        if job is None or job.owner is None or not hmac.compare_digest(job.owner, owner):
            raise JobNotFoundError(f"No job with id '{job_id}'.", param="id")
        data = None
        if job.status == "succeeded":
            data = self.images.answer(job.images, response_format=job.response_format, created=job.created).data
        job = self._as_read(job)
        return JobView(
            id=job.id,
            status=job.status,
            created=job.created,
            updated=job.updated,
            model=job.model,
            data=data,
            usage=job.usage,
            error=job.error,
        )

    def _as_read(self, job: Job) -> Job:
        """The job as its owner is told about it: still ``running`` after its lease, it has failed."""
        if job.status == "running" and job.lease_until is not None and job.lease_until < seconds_of(self.clock()):
            return job.model_copy(update={"status": "failed", "error": abandoned_run_error(job)})
        return job

    def run_message(
        self,
        body: str,
        *,
        message_id: str,
        sent_at: dt.datetime,
        receive_count: int,
        deadline: Deadline,
        receipt_handle: str | None = None,
    ) -> Job | None:
        """One SQS message. Returns the finished job (None for a redelivery of a finished one); raises a retryable
        error for SQS to deliver the message again: after the provider's ``Retry-After`` when it gave one (the
        message's visibility is changed to it), at once when this invocation had no time left to start it (a batch
        of several whose earlier messages took the time), else after the queue's visibility timeout."""
        assert self.table is not None, "the worker needs the jobs table"
        try:
            deadline.require("start the job")
        except ImageGenError:
            self._come_back(receipt_handle, 0)
            raise
        try:
            request = parse_job_request(body)
        except ValidationError as exc:
            job_id, manifest_key = _declared_in(body)
            job = self.table.begin(job_id or message_id, created=sent_at)
            return self._record(job, failed=invalid_request_from(exc.errors()), manifest_key=manifest_key) if job else None
        job_id = request.id or message_id
        job = self.table.begin(job_id, created=sent_at)
        if job is None:
            logger.info("job finished, or being run by another invocation: message acknowledged", extra={"job_id": job_id})
            return None
        job = job.model_copy(update={"model": request.model or job.model})
        manifest_key = request.result_key
        try:
            generation = self._produce(request, job_id=job_id, deadline=deadline, when=sent_at, caller=job.owner or QUEUE_CALLER)
        except ImageGenError as error:
            if error.retryable and receive_count < self.max_receive_count:
                self.table.save(job.model_copy(update={"status": "queued", "error": ErrorDetail(**error.body()["error"])}))
                if (wait := _retry_after_seconds(error)) is not None:
                    self._come_back(receipt_handle, wait)
                raise
            self._record(job, failed=error, manifest_key=manifest_key)
            if error.retryable:
                raise  # the last attempt: recorded as failed, and the message goes on to the dead-letter queue
            return job
        return self._record(
            job.model_copy(update={"model": generation.plan.model.id, "response_format": generation.plan.response_format}),
            images=list(generation.images),
            usage=generation.usage,
            manifest_key=manifest_key,
        )

    def _produce(self, request: JobRequest, *, job_id: str, deadline: Deadline, when: dt.datetime, caller: str) -> Generation:
        """The job's images, stored, and its usage recorded for ``caller`` under the job's id (once, whatever the
        deliveries). An edit's or a variation's inputs are read as trusted (keys under inputs/ are
        this deployment's); a key that names no object is the request's fault, a 400 never retried."""
        # No answer-size limit: the results go to S3 and the manifest; a job submitted through the API was checked
        # against the synchronous limit when it was accepted (its GET is a synchronous answer).
        if isinstance(request, ImageJobRequest):
            return self.images.produce(request, request_id=job_id, deadline=deadline, when=when, caller=caller, max_response_bytes=None)
        sources = EditSources.of_edit(request) if isinstance(request, ImageEditJobRequest) else EditSources.of_variation(request)
        plan = self.images.plan_inputs(request, sources, deadline=deadline, json_form=True, trusted=True, max_response_bytes=None)
        # ``when`` dates the keys of the inputs it stores (fetched image_urls) as of the images: a retry rewrites them
        return self.images.run(plan, request_id=job_id, deadline=deadline, when=when, sources=sources, caller=caller)

    def _come_back(self, receipt_handle: str | None, seconds: int) -> None:
        if self.queue is not None and receipt_handle is not None:
            self.queue.come_back_in(receipt_handle, seconds)

    def queue_request_object(self, key: str, *, created: dt.datetime, sequencer: str | None, size: int | None = None) -> Job:
        """One request object under ``requests/``: queued as a job whose manifest goes to ``results/<same relative
        key>``. A malformed object is answered there at once (``failed``), never queued nor retried; so is one larger
        than the API's body limit (``size``, from the notification, is checked before anything is read, and what is
        read is checked again) and one S3 will not give (gone, or access denied): S3 invokes the trigger
        asynchronously, so an error would be retried twice and parked in its dead-letter queue, to no avail.

        The job id is the object's ``id`` (or its key), a hash of the key and the notification's ``sequencer`` (or
        ETag): a duplicate notification of one write is one job (the worker acknowledges a finished id), another
        write of the key, or another key with the same ``id``, is another job.
        """
        if self.queue is None:
            raise RuntimeError("request objects need the jobs queue: JOBS_QUEUE_URL is not set")
        relative = key.removeprefix(REQUESTS_PREFIX)
        manifest_key = RESULTS_PREFIX + relative
        job = Job(
            id=_object_job_id(relative, None, sequencer), status="queued", created=seconds_of(created), updated=seconds_of(self.clock())
        )
        try:
            validate_result_key(manifest_key)
        except ValueError as exc:
            logger.warning("request object key cannot name its manifest; ignored", extra={"key": key, "reason": str(exc)})
            return _failed(job, InvalidRequestError(f"The object key cannot name its manifest: {exc}", param="key"), job.updated)
        limit = self.images.settings.max_request_bytes
        if size is not None and size > limit:
            return self._record(job, failed=_too_large(size, limit), manifest_key=manifest_key)
        try:
            body = self.images.store.get(key)
        except StorageError as error:
            unreadable = _unreadable(error)
            if unreadable is None:
                raise  # transient (throttled, unreachable): the event is retried
            logger.warning("request object unreadable; answered as failed", extra={"key": key, "code": unreadable.code})
            return self._record(job, failed=unreadable, manifest_key=manifest_key)
        if len(body) > limit:  # rewritten larger since the notification
            return self._record(job, failed=_too_large(len(body), limit), manifest_key=manifest_key)
        try:
            request = parse_job_request(body)
        except ValidationError as exc:
            return self._record(job, failed=invalid_request_from(exc.errors()), manifest_key=manifest_key)
        job = job.model_copy(update={"id": _object_job_id(relative, request.id, sequencer), "model": request.model})
        self.queue.send(request.model_copy(update={"id": job.id, "result_key": manifest_key}))
        return job

    def _record(
        self,
        job: Job,
        *,
        failed: ImageGenError | None = None,
        images: list[StoredImage] | None = None,
        usage: Usage | None = None,
        manifest_key: str | None = None,
    ) -> Job:
        """Write the results manifest, then the table (when there is one): a reader who sees ``succeeded`` finds the
        manifest."""
        now = seconds_of(self.clock())
        if failed is not None:
            logger.info("job failed", extra={"job_id": job.id, "code": failed.code, "retryable": failed.retryable})
            done = _failed(job, failed, now)
        else:
            update = {"status": "succeeded", "updated": now, "images": images or [], "usage": usage, "error": None, "retryable": False}
            done = job.model_copy(update=update)
        self.images.store.put_json(manifest_key or f"{RESULTS_PREFIX}{job.id}.json", done.model_dump_json(indent=2))
        if self.table is not None:
            self.table.save(done)
        return done


def _inputs_message(
    options: ImageEditOptions | ImageVariationOptions, stored: EditSources, *, job_id: str, model: str
) -> ImageEditJobRequest | ImageVariationJobRequest:
    """The queued message of an edit or a variation from the API: its options, with its inputs as stored keys."""
    fields = {**options.model_dump(exclude_none=True, exclude={"images", "mask", "markup", "image"}), "id": job_id, "model": model}
    if isinstance(options, ImageEditOptions):
        return ImageEditJobRequest.model_validate(
            {**fields, "operation": "edit", "images": list(stored.images), "mask": stored.mask, "markup": stored.markup}
        )
    return ImageVariationJobRequest.model_validate({**fields, "operation": "variation", "image": stored.images[0]})


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request object is {size} bytes; request objects may be at most {limit} bytes, as request bodies (MAX_REQUEST_BYTES)."
    )


# GetObject errors no retry of the event can cure: the object is gone, the trigger may not read it (a KMS key it
# cannot use, a bucket policy; and S3 answers AccessDenied for a missing key to a role without s3:ListBucket), or it
# is archived.
_UNREADABLE: dict[str, Callable[[], ImageGenError]] = {
    "NoSuchKey": lambda: InvalidRequestError(
        "The request object was deleted before it could be read.", param="key", code="request_object_not_found"
    ),
    "AccessDenied": lambda: PermissionDeniedError(
        "The S3 trigger may not read this request object (AccessDenied: its KMS key, a bucket policy, or the object is gone).",
        param="key",
        code="request_object_unreadable",
    ),
    "InvalidObjectState": lambda: InvalidRequestError(
        "The request object is archived (its storage class must be restored before it can be read).",
        param="key",
        code="request_object_archived",
    ),
}


def _unreadable(error: StorageError) -> ImageGenError | None:
    cause = error.__cause__
    code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
    make = _UNREADABLE.get(code or "")
    return make() if make is not None else None


def _retry_after_seconds(error: ImageGenError) -> int | None:
    """The provider's ``Retry-After`` (whole seconds, as the providers give it), or None."""
    value = error.headers.get("Retry-After")
    try:
        return math.ceil(float(value)) if value is not None else None
    except ValueError:
        return None


def abandoned_run_error(job: Job) -> ErrorDetail:
    return ErrorDetail(
        message=(
            f"The worker running this job stopped before it finished (attempt {job.attempts}: it crashed or ran out of time). "
            "If the queue delivers the job again it runs again and this status changes; otherwise submit it again."
        ),
        type="api_error",
        param=None,
        code="job_run_expired",
    )


def _failed(job: Job, error: ImageGenError, now: int) -> Job:
    return job.model_copy(
        update={"status": "failed", "updated": now, "error": ErrorDetail(**error.body()["error"]), "retryable": error.retryable}
    )


def _object_job_id(relative_key: str, declared: str | None, sequencer: str | None) -> str:
    """``<declared id or key>-<key hash>-<sequencer>``, within JOB_ID_PATTERN's 64 characters."""
    digest = hashlib.sha256(relative_key.encode()).hexdigest()[:8]
    write = _UNSAFE.sub("", sequencer or "")[-16:]
    stem = (declared or _UNSAFE.sub("-", relative_key.removesuffix(".json")) or "request")[: 62 - len(digest) - len(write)]
    return "-".join(part for part in (stem, digest, write) if part)


def _declared_in(body: str) -> tuple[str | None, str | None]:
    """The caller's job id and manifest key from a message that failed validation, each where it is valid: the
    failure is answered where the caller looks for it."""
    try:
        fields = json.loads(body)
        job_id, key = fields.get("id"), fields.get("result_key", fields.get("resultKey"))
    except (ValueError, AttributeError):
        return None, None
    try:
        manifest_key = validate_result_key(key) if isinstance(key, str) else None
    except ValueError:
        manifest_key = None
    return (job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None), manifest_key


@lru_cache(maxsize=1)
def get_job_service() -> JobService:
    from imagegen.clients import dynamodb_client, sqs_client

    settings = get_settings()
    images = get_service()
    table = (
        JobTable(
            dynamodb_client(), settings.jobs_table, ttl_days=settings.job_ttl_days, clock=images.clock, run_seconds=settings.job_run_seconds
        )
        if settings.jobs_table
        else None
    )
    queue = JobQueue(sqs_client(), settings.jobs_queue_url) if settings.jobs_queue_url else None
    return JobService(images=images, table=table, queue=queue, max_receive_count=settings.max_receive_count, clock=images.clock)
