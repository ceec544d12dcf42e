"""S3 trigger: a JSON request object written under ``requests/`` produces its images and ``results/<key>``.
The notification filters on the ``requests/`` prefix and ``.json`` suffix; nothing here writes under ``requests/``."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagegen.deadline import Deadline
from imagegen.jobs import REQUESTS_PREFIX, get_job_service
from imagegen.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    jobs = get_job_service()
    finished = {}
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)
        if not key.startswith(REQUESTS_PREFIX):
            logger.warning("ignoring an object outside requests/", extra={"key": key})
            continue
        deadline = Deadline.from_context(context, margin_seconds=jobs.images.settings.response_margin_seconds)
        created = dt.datetime.fromisoformat(record.event_time.replace("Z", "+00:00"))
        job = jobs.run_request_object(key, created=created, deadline=deadline)
        finished[key] = job.status
    return {"results": finished}
