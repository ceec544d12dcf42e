"""Budgets: the BUDGETS document (defaults, overrides, validation naming the path), the reservation's requests as
DynamoDB receives them (botocore's Stubber: no network), the 429 it raises, and the UTC month it counts in."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from pydantic import Json, TypeAdapter, ValidationError

from imagegen.errors import InsufficientQuotaError, QueueError
from imagegen.usage.budget_document import BudgetLimits, BudgetsDocument
from imagegen.usage.budgets import BudgetGuard, Reservation, month_end, month_of

KEY, OTHER_KEY = "key-0123456789abcdef", "iam-fedcba9876543210"
TABLE = "usage"
JANUARY = dt.datetime(2025, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
DOCUMENT = TypeAdapter(Json[BudgetsDocument])


def parse(document: dict[str, Any]) -> BudgetsDocument:
    return DOCUMENT.validate_python(json.dumps(document))


# -- the document ------------------------------------------------------------------------------------------------


def test_an_override_replaces_the_fields_it_names_and_keeps_the_defaults_others() -> None:
    budgets = parse(
        {
            "per_key": {"images_per_month": 1000, "usd_per_month": 50},
            "per_user": {"images_per_month": 100},
            "keys": {KEY: {"usd_per_month": 500.25}, OTHER_KEY: {"images_per_month": None}},
            "users": {"alice@example.com": {"usd_per_month": 5}, "bob": {}},
        }
    )
    assert budgets.for_key(KEY) == BudgetLimits(images_per_month=1000, usd_per_month=Decimal("500.25"))
    assert budgets.for_key(OTHER_KEY) == BudgetLimits(images_per_month=None, usd_per_month=Decimal(50))  # explicit null
    assert budgets.for_key("key-ffffffffffffffff") == BudgetLimits(images_per_month=1000, usd_per_month=Decimal(50))
    assert budgets.for_user("alice@example.com") == BudgetLimits(images_per_month=100, usd_per_month=Decimal(5))
    assert budgets.for_user("bob") == budgets.for_user("carol") == BudgetLimits(images_per_month=100)
    assert isinstance(budgets.for_key(KEY).usd_per_month, Decimal)  # exact, never a float


def test_an_empty_document_limits_nothing() -> None:
    budgets = parse({})
    assert not budgets.for_key(KEY).limited
    assert not budgets.for_user("alice").limited
    assert parse({"users": {"alice": {"images_per_month": 0}}}).for_user("alice").limited  # zero is a limit


@pytest.mark.parametrize(
    ("document", "location", "words"),
    [
        ({"keys": {"sk-live-123": {"images_per_month": 1}}}, ("keys", "sk-live-123", "[key]"), "not a caller id"),
        ({"keys": {"key-0123456789ABCDEF": {}}}, ("keys", "key-0123456789ABCDEF", "[key]"), "not a caller id"),
        ({"per_key": {"images": 10}}, ("per_key", "images"), "Extra inputs"),
        ({"per_user": {"images_per_month": -1}}, ("per_user", "images_per_month"), "greater than or equal to 0"),
        ({"per_user": {"images_per_month": 10.5}}, ("per_user", "images_per_month"), "valid integer"),
        ({"per_user": {"images_per_month": "10"}}, ("per_user", "images_per_month"), "valid integer"),
        ({"users": {"alice": {"usd_per_month": -0.01}}}, ("users", "alice", "usd_per_month"), "greater than or equal to 0"),
        ({"users": {"alice": {"usd_per_month": "NaN"}}}, ("users", "alice", "usd_per_month"), "finite"),
        ({"users": {"": {"images_per_month": 1}}}, ("users", "", "[key]"), "at least 1 character"),
        ({"per_team": {}}, ("per_team",), "Extra inputs"),
    ],
)
def test_a_bad_document_is_refused_naming_the_path(document: dict[str, Any], location: tuple[str, ...], words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse(document)
    error = raised.value.errors()[0]
    assert error["loc"] == location
    assert words in error["msg"]


def test_a_document_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        DOCUMENT.validate_python("{per_key: 1}")
    assert raised.value.errors()[0]["type"] == "json_invalid"


# -- the 429 -----------------------------------------------------------------------------------------------------


def test_the_budget_error_is_openais_insufficient_quota_and_says_do_not_retry() -> None:
    error = InsufficientQuotaError("The monthly budget of this API key is used up.")
    assert error.status_code == 429
    assert error.body() == {
        "error": {
            "message": "The monthly budget of this API key is used up.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    assert error.headers == {"x-should-retry": "false"}
    assert "retry-after" not in {name.lower() for name in error.headers}
    assert not error.retryable  # the worker records the job failed at once


def test_the_api_answers_it_with_its_header() -> None:
    from imagegen.http import error_response

    response = error_response(InsufficientQuotaError("used up"))
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert json.loads(str(response.body))["error"]["code"] == "insufficient_quota"


# -- months ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "month", "reset"),
    [
        (JANUARY, "2025-01", dt.datetime(2025, 2, 1, tzinfo=dt.UTC)),
        (dt.datetime(2024, 12, 31, 23, 59, tzinfo=dt.UTC), "2024-12", dt.datetime(2025, 1, 1, tzinfo=dt.UTC)),
        (dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC), "2024-02", dt.datetime(2024, 3, 1, tzinfo=dt.UTC)),
        # 00:30 on the 1st in Paris is still the last day of the previous month in UTC
        (dt.datetime(2025, 3, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2025-02", dt.datetime(2025, 3, 1, tzinfo=dt.UTC)),
    ],
)
def test_a_month_is_the_utc_calendar_month(when: dt.datetime, month: str, reset: dt.datetime) -> None:
    assert month_of(when) == month
    assert month_end(when) == reset


# -- reservations, as DynamoDB receives them ---------------------------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def guard(client: Any, document: dict[str, Any], now: dt.datetime = JANUARY) -> BudgetGuard:
    return BudgetGuard(client, TABLE, parse(document), clock=Clock(now))


def key_of(kind: str, subject: str, month: str) -> dict[str, Any]:
    return {"pk": {"S": f"budget#{kind}#{subject}"}, "sk": {"S": month}}


def test_no_limit_no_table_call(stubbed: tuple[Any, Stubber]) -> None:
    client, _ = stubbed  # no response queued: any call would fail the test
    budgets = guard(client, {"per_user": {"images_per_month": 5}, "keys": {OTHER_KEY: {"images_per_month": 5}}})
    assert budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=Decimal("0.04")) is None
    assert guard(client, {}).reserve(caller=KEY, end_user="alice", images=1, estimate_usd=None) is None


def test_one_transaction_conditions_each_counter_on_its_own_limits(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    expires = str(int((JANUARY + dt.timedelta(days=400)).timestamp()))
    key_update = {
        "TableName": TABLE,
        "Key": key_of("key", KEY, "2025-01"),
        "UpdateExpression": "ADD images :images, usd :usd SET expires_at = if_not_exists(expires_at, :expires)",
        "ConditionExpression": (
            "(attribute_not_exists(images) OR images <= :images_room) AND (attribute_not_exists(usd) OR usd <= :usd_room)"
        ),
        "ExpressionAttributeValues": {
            ":images": {"N": "3"},
            ":expires": {"N": expires},
            ":images_room": {"N": "7"},
            ":usd": {"N": "0.750"},
            ":usd_room": {"N": "0.250"},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    user_update = {  # only an images limit: the cost is counted, not conditioned
        "TableName": TABLE,
        "Key": key_of("user", f"{KEY}#alice", "2025-01"),
        "UpdateExpression": "ADD images :images, usd :usd SET expires_at = if_not_exists(expires_at, :expires)",
        "ConditionExpression": "(attribute_not_exists(images) OR images <= :images_room)",
        "ExpressionAttributeValues": {
            ":images": {"N": "3"},
            ":expires": {"N": expires},
            ":images_room": {"N": "97"},
            ":usd": {"N": "0.750"},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    stubber.add_response("transact_write_items", {}, {"TransactItems": [{"Update": key_update}, {"Update": user_update}]})
    document = {"per_key": {"images_per_month": 10, "usd_per_month": 1}, "per_user": {"images_per_month": 100}}
    reservation = guard(client, document).reserve(caller=KEY, end_user="alice", images=3, estimate_usd=Decimal("0.750"))
    assert reservation == Reservation(KEY, "alice", "2025-01", ("key", "user"), 3, Decimal("0.750"))


def test_an_unpriced_model_reserves_images_only(stubbed: tuple[Any, Stubber]) -> None:
    # no dollars reserved, but the USD limit still conditions it: a spent budget stops an unpriced model too
    client, stubber = stubbed
    update = {
        "TableName": TABLE,
        "Key": key_of("key", KEY, "2025-02"),
        "UpdateExpression": "ADD images :images SET expires_at = if_not_exists(expires_at, :expires)",
        "ExpressionAttributeValues": {":images": {"N": "1"}, ":expires": ANY, ":usd_limit": {"N": "1"}},
        "ConditionExpression": "(attribute_not_exists(usd) OR usd < :usd_limit)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    stubber.add_response("transact_write_items", {}, {"TransactItems": [{"Update": update}]})
    february = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)  # the month rolled over: a new counter
    reservation = guard(client, {"per_key": {"usd_per_month": 1}}, february).reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    assert reservation is not None and (reservation.month, reservation.estimate_usd) == ("2025-02", None)


def test_the_month_is_taken_at_reservation_time(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    clock = Clock(JANUARY)
    budgets = BudgetGuard(client, TABLE, parse({"per_key": {"images_per_month": 10}}), clock=clock)
    for month in ("2025-01", "2025-02"):
        stubber.add_response("transact_write_items", {}, {"TransactItems": ANY})
        reservation = budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
        assert reservation is not None and reservation.month == month
        clock.now += dt.timedelta(seconds=1)
    # a reservation of January settles on January's counter, even in February
    january = Reservation(KEY, None, "2025-01", ("key",), 1, None)
    assert budgets.settle_items(january, images=0, cost_usd=None)[0]["Update"]["Key"] == key_of("key", KEY, "2025-01")


def cancelled(stubber: Stubber, *reasons: dict[str, Any]) -> None:
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled",
        modeled_fields={"CancellationReasons": list(reasons)},
    )


@pytest.mark.parametrize(
    ("reasons", "words"),
    [
        (
            [{"Code": "ConditionalCheckFailed", "Item": {"images": {"N": "10"}, "usd": {"N": "0.5"}}}, {"Code": "None"}],
            "budget of this API key is used up: 10 images per UTC month. It resets at 2025-02-01T00:00:00Z.",
        ),
        (
            [{"Code": "ConditionalCheckFailed", "Item": {"images": {"N": "2"}, "usd": {"N": "0.99"}}}, {"Code": "None"}],
            "budget of this API key is used up: 1 USD per UTC month. It resets at 2025-02-01T00:00:00Z.",
        ),
        (
            [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": {"images": {"N": "3"}}}],
            "budget of this end user (the request's safety_identifier or user) under this API key is used up: 3 images",
        ),
    ],
)
def test_a_failed_condition_is_a_429_naming_the_budget(stubbed: tuple[Any, Stubber], reasons: list[dict[str, Any]], words: str) -> None:
    client, stubber = stubbed
    cancelled(stubber, *reasons)
    document = {"per_key": {"images_per_month": 10, "usd_per_month": 1}, "per_user": {"images_per_month": 3}}
    with pytest.raises(InsufficientQuotaError) as raised:
        guard(client, document).reserve(caller=KEY, end_user="alice", images=1, estimate_usd=Decimal("0.04"))
    assert words in raised.value.message
    assert raised.value.headers == {"x-should-retry": "false"}


@pytest.mark.parametrize(
    ("images", "estimate", "words"),
    [(11, None, "asks for 11 images, more than the whole monthly budget of this API key: 10 images."), (1, "2.5", "up to 2.5 USD")],
)
def test_a_request_over_the_whole_limit_is_refused_without_a_call(
    stubbed: tuple[Any, Stubber], images: int, estimate: str | None, words: str
) -> None:
    client, _ = stubbed
    budgets = guard(client, {"per_key": {"images_per_month": 10, "usd_per_month": 2}})
    with pytest.raises(InsufficientQuotaError, match="more than the whole") as raised:
        budgets.reserve(caller=KEY, end_user=None, images=images, estimate_usd=None if estimate is None else Decimal(estimate))
    assert words in raised.value.message


def test_a_transaction_conflict_is_tried_again(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    cancelled(stubber, {"Code": "TransactionConflict"})
    stubber.add_response("transact_write_items", {})
    assert guard(client, {"per_key": {"images_per_month": 10}}).reserve(caller=KEY, end_user=None, images=1, estimate_usd=None) is not None


def test_conflicts_that_persist_and_other_failures_are_a_retryable_table_error(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    budgets = guard(client, {"per_key": {"images_per_month": 10}})
    for _ in range(4):
        cancelled(stubber, {"Code": "TransactionConflict"})
    with pytest.raises(QueueError) as raised:
        budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    assert raised.value.retryable
    stubber.add_client_error("transact_write_items", service_error_code="ProvisionedThroughputExceededException", http_status_code=400)
    with pytest.raises(QueueError):
        budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)


# -- settling and releasing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "cost", "adds"),
    [
        (2, Decimal("0.08"), {":images": {"N": "-1"}, ":usd": {"N": "-0.04"}}),  # fewer images, cheaper than estimated
        (3, None, {":usd": {"N": "-0.12"}}),  # unpriced after all: the estimate is given back
        (3, Decimal("0.12"), None),  # as reserved: nothing to write
    ],
)
def test_settling_adds_the_difference_to_each_counter(images: int, cost: Decimal | None, adds: dict[str, Any] | None) -> None:
    budgets = BudgetGuard(None, TABLE, parse({}), clock=Clock(JANUARY))  # type: ignore[arg-type]  # builds items only
    reservation = Reservation(KEY, "alice", "2025-01", ("key", "user"), 3, Decimal("0.12"))
    items = budgets.settle_items(reservation, images=images, cost_usd=cost)
    if adds is None:
        assert items == []
        return
    assert [item["Update"]["Key"] for item in items] == [key_of("key", KEY, "2025-01"), key_of("user", f"{KEY}#alice", "2025-01")]
    for item in items:
        assert item["Update"]["ExpressionAttributeValues"] == adds
        assert "ConditionExpression" not in item["Update"]
        assert item["Update"]["UpdateExpression"] == "ADD " + ", ".join(f"{name[1:]} {name}" for name in adds)


def test_settling_an_images_only_reservation_counts_the_cost() -> None:
    budgets = BudgetGuard(None, TABLE, parse({}), clock=Clock(JANUARY))  # type: ignore[arg-type]
    items = budgets.settle_items(Reservation(KEY, None, "2025-01", ("key",), 1, None), images=1, cost_usd=Decimal("0.04"))
    assert items[0]["Update"]["ExpressionAttributeValues"] == {":usd": {"N": "0.04"}}


def test_a_failed_release_is_logged_not_raised(stubbed: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture) -> None:
    client, stubber = stubbed
    stubber.add_client_error("transact_write_items", service_error_code="InternalServerError", http_status_code=500)
    guard(client, {}).release(Reservation(KEY, None, "2025-01", ("key",), 2, Decimal("0.08")))
    assert "budget reservation not released" in caplog.text
