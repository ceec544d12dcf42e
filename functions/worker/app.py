"""SQS worker: one message = one job (the options plus an optional ``id``). Partial batch failures: only the
messages that hit a transient error are delivered again (after the provider's Retry-After when it gave one);
permanent failures are recorded, not retried. The mapping hands it one message per invocation (template.yaml's
BatchSize 1), so every job has the whole timeout; a larger batch still works: a message the invocation has no time
left to start is handed back at once, untried."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagegen import snapstart  # noqa: F401  (registers the SnapStart restore hooks: docs/snapstart.md)
from imagegen.deadline import Deadline
from imagegen.errors import ImageGenError
from imagegen.jobs import get_job_service
from imagegen.observability import count_bug, logger, metrics, tracer

# A batch whose every message hit a transient error is reported item by item, not as a function error: the
# Errors alarm is for bugs.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    jobs = get_job_service()
    attributes = record.attributes
    try:
        jobs.run_message(
            record.body,
            message_id=record.message_id,
            sent_at=dt.datetime.fromtimestamp(int(attributes.sent_timestamp) / 1000, dt.UTC),
            receive_count=int(attributes.approximate_receive_count),
            deadline=Deadline.from_context(processor.lambda_context, margin_seconds=jobs.images.settings.response_margin_seconds),
            receipt_handle=record.receipt_handle,
        )
    except ImageGenError:
        raise  # an answer of ours: recorded (or to be retried) by run_message
    except Exception:
        logger.exception("unhandled error running a job message", extra={"message_id": record.message_id})
        count_bug()  # the message fails and comes back; InternalErrorsAlarm sees the bug
        raise


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
