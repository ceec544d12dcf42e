"""The request deadline: the earlier of the Lambda's remaining time and API Gateway's 29 s from the request's arrival."""

from __future__ import annotations

import time

import pytest

from imagegen.deadline import API_GATEWAY_TIMEOUT_SECONDS, Deadline
from tests.conftest import FakeLambdaContext

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def remaining(deadline: Deadline) -> float:
    return round(deadline.remaining(), 1)


def test_a_fresh_request_has_the_gateway_time_less_the_margin() -> None:
    deadline = Deadline.for_api_request(
        FakeLambdaContext(remaining_millis=29_000), request_time_epoch_ms=int(NOW * 1000), margin_seconds=2.5, wall_clock=lambda: NOW
    )
    assert remaining(deadline) == 26.5


def test_a_cold_start_counts_against_the_gateway_not_the_function() -> None:
    # The request reached API Gateway 12 s ago (an init of 12 s); the function's own timeout still shows 29 s left.
    deadline = Deadline.for_api_request(
        FakeLambdaContext(remaining_millis=29_000),
        request_time_epoch_ms=int((NOW - 12) * 1000),
        margin_seconds=2.5,
        wall_clock=lambda: NOW,
    )
    assert remaining(deadline) == API_GATEWAY_TIMEOUT_SECONDS - 12 - 2.5


def test_the_function_timeout_wins_when_it_is_earlier() -> None:
    deadline = Deadline.for_api_request(
        FakeLambdaContext(remaining_millis=10_000), request_time_epoch_ms=int(NOW * 1000), margin_seconds=2.5, wall_clock=lambda: NOW
    )
    assert remaining(deadline) == 7.5


def test_without_a_request_time_only_the_function_counts() -> None:
    deadline = Deadline.for_api_request(FakeLambdaContext(remaining_millis=29_000), request_time_epoch_ms=None, margin_seconds=2.5)
    assert remaining(deadline) == 26.5


def test_a_request_the_gateway_has_already_cut_has_no_time_left() -> None:
    deadline = Deadline.for_api_request(
        FakeLambdaContext(remaining_millis=29_000), request_time_epoch_ms=int((time.time() - 40) * 1000), margin_seconds=2.5
    )
    with pytest.raises(Exception, match="No time left"):
        deadline.require("call the image provider")
