"""Time budgets: how long a provider call may take so that the answer still leaves before the Lambda ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imagegen.errors import ProviderTimeoutError

# An API Gateway REST API ends the integration 29 s after the request reached it (requestContext.requestTimeEpoch),
# whatever the function's own timeout: a cold start's init counts against it.
API_GATEWAY_TIMEOUT_SECONDS = 29.0


class RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock by which provider work must be done."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_context(cls, context: RemainingTime, *, margin_seconds: float) -> Deadline:
        """The Lambda's remaining time minus the margin kept to store the images and answer."""
        return cls.after(context.get_remaining_time_in_millis() / 1000 - margin_seconds)

    @classmethod
    def for_api_request(
        cls,
        context: RemainingTime,
        *,
        request_time_epoch_ms: int | None,
        margin_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> Deadline:
        """The earlier of the Lambda's remaining time and API Gateway's 29 s from the request's arrival, less the
        margin: a request that waited through a cold start (or in a queue of API Gateway's) has less than the
        function's timeout left. Without a request time (a hand-made event) only the Lambda's time counts."""
        lambda_seconds = context.get_remaining_time_in_millis() / 1000
        if request_time_epoch_ms is None:
            return cls.after(lambda_seconds - margin_seconds)
        gateway_seconds = request_time_epoch_ms / 1000 + API_GATEWAY_TIMEOUT_SECONDS - wall_clock()
        return cls.after(min(lambda_seconds, gateway_seconds) - margin_seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def require(self, what: str) -> float:
        """Seconds left for ``what``; a 504 when none are."""
        remaining = self.remaining()
        if remaining <= 0.05:
            raise ProviderTimeoutError(f"No time left to {what} before the request deadline.")
        return remaining
