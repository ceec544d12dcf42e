"""The one Logger, Tracer and Metrics of the service; names and levels come from POWERTOOLS_* variables."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# A bug (a 500 from the API, an unexpected exception in the worker): template.yaml's InternalErrorsAlarm watches it,
# with the service dimension Powertools adds to every metric.
INTERNAL_ERRORS_METRIC = "InternalErrors"


def count_bug() -> None:
    """Count one bug: never a client's mistake nor a provider's failure, which have their own answers."""
    metrics.add_metric(name=INTERNAL_ERRORS_METRIC, unit=MetricUnit.Count, value=1)
