"""Time budgets: how long a provider call may take so that the answer still leaves before the Lambda ends."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from imagegen.errors import ProviderTimeoutError


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

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def require(self, what: str) -> float:
        """Seconds left for ``what``; a 504 when none are."""
        remaining = self.remaining()
        if remaining <= 0.05:
            raise ProviderTimeoutError(f"No time left to {what} before the request deadline.")
        return remaining
