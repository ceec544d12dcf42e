"""What the providers that draw one image per call share: the ``n`` calls of a request run side by side and awaited
until the request's deadline, and the aspect ratio a size is sent as (providers that take a ratio, not pixels)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from typing import TypeVar

from imagegen.deadline import Deadline
from imagegen.errors import ProviderTimeoutError
from imagegen.observability import logger

T = TypeVar("T")


def side_by_side(executor: Executor, calls: Sequence[Callable[[], T]], deadline: Deadline, *, provider: str) -> list[T]:
    """Every call's result, in order, each run on ``executor`` and awaited only until the deadline (boto3 has no
    per-call timeout, so even one call runs there). The first failure is the request's error (the
    calls not started are cancelled; those running finish, and may be billed, at the provider). A call still running
    at the deadline is abandoned: a 504."""
    remaining = deadline.require(f"call {provider}")
    futures: list[Future[T]] = [executor.submit(call) for call in calls]
    done, pending = wait(futures, timeout=remaining, return_when=FIRST_EXCEPTION)
    for future in pending:
        future.cancel()
    errors = [error for future in futures if future in done and (error := future.exception()) is not None]
    if errors:
        raise errors[0]
    if pending:
        logger.warning("provider calls outlived the deadline", extra={"provider": provider, "calls": len(calls), "pending": len(pending)})
        raise ProviderTimeoutError(f"{provider} did not answer within {remaining:.1f} s.")
    return [future.result() for future in futures]


def nearest_ratio(width: int, height: int, ratios: Sequence[str]) -> str:
    """The ratio of ``ratios`` ("16:9") nearest to ``width``:``height``, by the logarithm of the ratio (so 2:1 and
    1:2 are as far from 1:1): providers draw sizes near, not exactly at, their ratios (Gemini's 848x1264 for 2:3)."""
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        across, down = (int(side) for side in ratio.split(":"))
        return abs(math.log(across / down) - wanted)

    return min(ratios, key=distance)
