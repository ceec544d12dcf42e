"""S3 trigger: a JSON request object written under ``requests/`` becomes a job on the jobs queue; the worker
generates it and writes ``results/<same key>``. A malformed object is answered in ``results/`` at once.

Queueing, not generating here, gives request objects the worker's retries, dead-letter queue and concurrency cap.
The notification filters on the ``requests/`` prefix and ``.json`` suffix; nothing here writes under ``requests/``.
An object above the API's body limit (MAX_REQUEST_BYTES, from the event's size, before reading it) or one S3 will not
give (NoSuchKey, AccessDenied) is answered with a failed manifest. Only a transient failure (the queue or S3
unreachable) raises: Lambda retries the event twice, then parks it in the trigger's DLQ."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagegen import snapstart  # noqa: F401  (registers the SnapStart restore hooks: docs/snapstart.md)
from imagegen.jobs import REQUESTS_PREFIX, get_job_service
from imagegen.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    jobs = get_job_service()
    handled = {}
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)
        if not key.startswith(REQUESTS_PREFIX):
            logger.warning("ignoring an object outside requests/", extra={"key": key})
            continue
        created = dt.datetime.fromisoformat(record.event_time.replace("Z", "+00:00"))
        # S3 puts a sequencer on every ObjectCreated record; a hand-written event may only have the ETag
        written = record.s3.get_object.get("sequencer") or record.s3.get_object.get("eTag")
        # The object's size as written: an oversized one is answered without being read
        size = record.s3.get_object.get("size")
        job = jobs.queue_request_object(key, created=created, sequencer=written, size=int(size) if size is not None else None)
        logger.info("request object handled", extra={"key": key, "job_id": job.id, "status": job.status})
        handled[key] = {"id": job.id, "status": job.status}
    return {"jobs": handled}
