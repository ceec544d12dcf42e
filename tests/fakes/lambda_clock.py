"""A Lambda context whose remaining time runs down as the invocation does, as Lambda's own does (the shared
FakeLambdaContext's stays where a test set it). Tests that measure "answered before the Lambda ends" use it: time
the handler spends before it reads its deadline (cold-start work, imports) then counts, as it does in Lambda."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.conftest import FakeLambdaContext


@dataclass
class CountdownContext(FakeLambdaContext):
    started: float = field(default_factory=time.monotonic)

    def budget(self, millis: int) -> float:
        """Start the invocation's clock at ``millis`` left; returns the monotonic time by which it ends."""
        self.remaining_millis, self.started = millis, time.monotonic()
        return self.started + millis / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.remaining_millis - (time.monotonic() - self.started) * 1000))
