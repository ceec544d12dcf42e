"""The one Logger, Tracer and Metrics of the service; names and levels come from POWERTOOLS_* variables.

Tracing: where Powertools would trace nothing (``POWERTOOLS_TRACE_DISABLED``, outside Lambda, ``sam local``, the template's
``XRayTracing=false``), the Tracer gets a provider that records nothing, so that a cold start does not import the X-Ray
SDK for it (Powertools' default provider is the SDK's recorder, imported even when tracing is off: ~130 ms of CPU,
README Performance). Where it traces, it patches only what the functions call out with: botocore and httpx, not
every library the SDK knows (sqlite3, http.client under botocore's urllib3, which would trace each AWS call twice).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

TRACED_MODULES = ("botocore", "httpx")


class _NoSegment(BaseSegment):
    """A segment that records nothing."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class NoTracing(BaseProvider):
    """Powertools' provider interface, recording nothing: the Tracer's provider when tracing is off."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncGenerator[BaseSegment, None]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def make_tracer() -> Tracer:
    """X-Ray, patching TRACED_MODULES, when Powertools would trace; else a Tracer whose provider records nothing."""
    if Tracer._is_tracer_disabled():  # Powertools' own rule: POWERTOOLS_TRACE_DISABLED, outside Lambda, sam local
        return Tracer(provider=NoTracing(), disabled=True, auto_patch=False)
    return Tracer(patch_modules=TRACED_MODULES)


logger = Logger()
tracer = make_tracer()
metrics = Metrics()

# A bug (a 500 from the API, an unexpected exception in the worker): template.yaml's InternalErrorsAlarm watches it,
# with the service dimension Powertools adds to every metric.
INTERNAL_ERRORS_METRIC = "InternalErrors"


def count_bug() -> None:
    """Count one bug: never a client's mistake nor a provider's failure, which have their own answers."""
    metrics.add_metric(name=INTERNAL_ERRORS_METRIC, unit=MetricUnit.Count, value=1)
