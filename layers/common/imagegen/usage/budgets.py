"""Budgets checked before a provider is called: an atomic reservation on the month's budget counters.

A reservation is one ``TransactWriteItems`` that adds the request's images (and its cost estimate) to the budget
counter of the caller and to that of its end user, each ``ADD`` conditioned on staying within its limits. DynamoDB
evaluates each condition atomically with its update, and the transaction all or nothing, so two concurrent requests
cannot both take the last image and a refused request counts nowhere. What was produced settles the reservation
(``settle_items``, in the ledger's transaction); a failed generation releases it (``release``).

A counter is kept only where a limit applies: a caller with no limits of its own has no counter, even when its end
users have one. A budget that starts in the middle of a month starts from zero.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import InsufficientQuotaError, QueueError
from imagegen.observability import logger
from imagegen.usage.budget_document import BudgetLimits, BudgetsDocument
from imagegen.usage.table import TTL_ATTRIBUTE, budget_key, number

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The ledger's transaction element (one TransactItems entry of the low-level client). ledger.py did not exist when
# this was written; the alias belongs there (docs/usage.md), and this one is the same type.
TransactItem = dict[str, Any]

BUDGET_TTL_DAYS = 400
# Concurrent transactions on one counter may cancel each other (reason TransactionConflict) even where both fit:
# such a transaction wrote nothing and is tried again, a few times, after a short jittered pause.
CONFLICT_ATTEMPTS = 4
CONFLICT_PAUSE_SECONDS = 0.025
_UNAVAILABLE = "The usage table is unavailable; nothing was generated. Try again."

Kind = Literal["key", "user"]


def month_of(when: dt.datetime) -> str:
    """The UTC calendar month of ``when``, ``YYYY-MM``: a budget counter's sort key."""
    return when.astimezone(dt.UTC).strftime("%Y-%m")


def month_end(when: dt.datetime) -> dt.datetime:
    """When the budgets of ``when``'s UTC month reset: the first instant of the next month."""
    utc = when.astimezone(dt.UTC)
    return dt.datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` added, and where: the counters of ``kinds`` for ``month``. ``estimate_usd`` None: no cost was
    reserved (the model has no price)."""

    caller: str
    end_user: str | None
    month: str
    kinds: tuple[Kind, ...]
    images: int
    estimate_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class MonthUsage:
    """One budget's counter for the current month: used so far (reservations in flight included), its limits and
    when it resets."""

    month: str
    images: int
    usd: Decimal
    limits: BudgetLimits
    resets_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Budget:
    kind: Kind
    limits: BudgetLimits


class BudgetGuard:
    """The ``BUDGETS`` limits enforced on the usage table's budget counters (``budget#key#...``, ``budget#user#...``)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        budgets: BudgetsDocument,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self._table = table
        self._budgets = budgets
        self._clock = clock

    def reserve(self, *, caller: str, end_user: str | None, images: int, estimate_usd: Decimal | None) -> Reservation | None:
        """Reserve ``images`` and ``estimate_usd`` on the caller's and the end user's budgets of this month, or raise
        InsufficientQuotaError (429) naming the budget that has no room; QueueError when the table fails. None, and no
        table call, when no limit applies to either. ``estimate_usd`` None (a model without a price) reserves images
        only: a USD limit then stops the request only once it is spent (its cost, unknown, is not counted)."""
        budgets = self._applicable(caller, end_user)
        if not budgets:
            return None
        now = self._clock()
        month = month_of(now)
        _refuse_alone(budgets, images, estimate_usd, now)  # a fresh counter passes attribute_not_exists: refused here
        expires = {"N": str(int((now + dt.timedelta(days=BUDGET_TTL_DAYS)).timestamp()))}
        items = [self._reserve_item(budget, caller, end_user, month, images, estimate_usd, expires) for budget in budgets]
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=items)
                break
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [reason.get("Code") for reason in reasons]
                if "ConditionalCheckFailed" in codes:
                    index = codes.index("ConditionalCheckFailed")
                    budget = budgets[index]
                    refused = _full(budget.limits, reasons[index].get("Item") or {}, images, estimate_usd)
                    raise _refusal(budget.kind, refused, budget.limits, now) from None
                if "TransactionConflict" not in codes or attempt + 1 == CONFLICT_ATTEMPTS:
                    raise QueueError(_UNAVAILABLE) from exc
                time.sleep(CONFLICT_PAUSE_SECONDS * (attempt + 1) * random.uniform(0.5, 1.5))
            except BotoCoreError as exc:
                raise QueueError(_UNAVAILABLE) from exc
        return Reservation(caller, end_user, month, tuple(budget.kind for budget in budgets), images, estimate_usd)

    def admit(self, *, caller: str, end_user: str | None, images: int, estimate_usd: Decimal | None) -> None:
        """The 429 ``reserve`` would raise now, from the counters as they are, reserving nothing: for a job queued
        to run later (its worker reserves), so that a request with no room is refused when it is made, not accepted
        and failed. Concurrent requests may still take the room before the worker runs; it then refuses the job.
        QueueError when the table fails."""
        budgets = self._applicable(caller, end_user)
        if not budgets:
            return
        now = self._clock()
        month = month_of(now)
        _refuse_alone(budgets, images, estimate_usd, now)
        for budget in budgets:
            used = self._counter(budget.kind, caller, end_user, month)
            if (refused := _over(budget.limits, used, images, estimate_usd)) is not None:
                raise _refusal(budget.kind, refused, budget.limits, now)

    def settle_items(self, reservation: Reservation, *, images: int, cost_usd: Decimal | None) -> list[TransactItem]:
        """The updates (unconditional) that turn ``reservation`` into what was used: ``images`` produced, costing
        ``cost_usd`` (None: unpriced, so the estimate is given back). For the ledger's transaction, beside the usage
        record; none when nothing changes."""
        usd = None if cost_usd is None and reservation.estimate_usd is None else (cost_usd or 0) - (reservation.estimate_usd or 0)
        return self._adjust_items(reservation, images - reservation.images, usd)

    def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back (the provider or the store failed). Best effort: a failure is logged, not
        raised, as the request has failed already; the counter then keeps the reservation until the month ends."""
        usd = None if reservation.estimate_usd is None else -reservation.estimate_usd
        items = self._adjust_items(reservation, -reservation.images, usd)
        try:
            self._client.transact_write_items(TransactItems=items)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "budget reservation not released",
                extra={"month": reservation.month, "kinds": list(reservation.kinds), "images": reservation.images, "error": str(exc)},
            )

    def month_usage(self, caller: str, end_user: str | None = None) -> MonthUsage:
        """The caller's budget this month, or (``end_user`` given) that end user's under the caller. A budget with no
        counter (nothing used, or no limit) reads zero; QueueError when the table fails."""
        now = self._clock()
        month = month_of(now)
        kind: Kind = "key" if end_user is None else "user"
        item = self._counter(kind, caller, end_user, month)
        limits = self._budgets.for_key(caller) if end_user is None else self._budgets.for_user(end_user)
        return MonthUsage(month=month, images=int(_read(item, "images")), usd=_read(item, "usd"), limits=limits, resets_at=month_end(now))

    def _applicable(self, caller: str, end_user: str | None) -> list[_Budget]:
        budgets = [_Budget("key", self._budgets.for_key(caller))]
        if end_user:
            budgets.append(_Budget("user", self._budgets.for_user(end_user)))
        return [budget for budget in budgets if budget.limits.limited]

    def _counter(self, kind: Kind, caller: str, end_user: str | None, month: str) -> Mapping[str, Any]:
        """A budget counter's item as it is (empty when there is none); QueueError when the table fails."""
        try:
            answer = self._client.get_item(TableName=self._table, Key=self._key(kind, caller, end_user, month), ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise QueueError("The usage table is unavailable; try again.") from exc
        item: Mapping[str, Any] = answer.get("Item", {})
        return item

    def _key(self, kind: Kind, caller: str, end_user: str | None, month: str) -> dict[str, Any]:
        return {name: {"S": value} for name, value in budget_key(kind, caller, month, end_user).items()}

    def _reserve_item(
        self, budget: _Budget, caller: str, end_user: str | None, month: str, images: int, usd: Decimal | None, expires: dict[str, str]
    ) -> TransactItem:
        values: dict[str, Any] = {":images": number(images), ":expires": expires}
        conditions = []
        if budget.limits.images_per_month is not None:
            conditions.append("(attribute_not_exists(images) OR images <= :images_room)")
            values[":images_room"] = number(budget.limits.images_per_month - images)
        if usd is not None:
            values[":usd"] = number(usd)
            if budget.limits.usd_per_month is not None:
                conditions.append("(attribute_not_exists(usd) OR usd <= :usd_room)")
                values[":usd_room"] = number(budget.limits.usd_per_month - usd)
        elif budget.limits.usd_per_month is not None:  # unpriced: nothing to reserve, but a spent budget stops it
            conditions.append("(attribute_not_exists(usd) OR usd < :usd_limit)")
            values[":usd_limit"] = number(budget.limits.usd_per_month)
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(budget.kind, caller, end_user, month),
            "UpdateExpression": f"ADD images :images{', usd :usd' if usd is not None else ''} "
            f"SET {TTL_ATTRIBUTE} = if_not_exists({TTL_ATTRIBUTE}, :expires)",
            "ExpressionAttributeValues": values,
        }
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
            update["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"  # what was used, to say which limit was hit
        return {"Update": update}

    def _adjust_items(self, reservation: Reservation, images: int, usd: Decimal | int | None) -> list[TransactItem]:
        adds = {name: value for name, value in (("images", images), ("usd", usd)) if value}
        if not adds:
            return []
        expression = "ADD " + ", ".join(f"{name} :{name}" for name in adds)
        values = {f":{name}": number(value) for name, value in adds.items()}
        return [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": self._key(kind, reservation.caller, reservation.end_user, reservation.month),
                    "UpdateExpression": expression,
                    "ExpressionAttributeValues": values,
                }
            }
            for kind in reservation.kinds
        ]


def _refuse_alone(budgets: Sequence[_Budget], images: int, usd: Decimal | None, now: dt.datetime) -> None:
    """The 429 for a request that by itself is over one of ``budgets``' whole limits (no reset can help it)."""
    for budget in budgets:
        if (refused := _exceeded(budget.limits, images, usd)) is not None:
            raise _refusal(budget.kind, refused, budget.limits, now, alone=(images, usd))


def _exceeded(limits: BudgetLimits, images: int, usd: Decimal | None) -> Literal["images", "usd"] | None:
    """The limit that this request alone is over, if any."""
    if limits.images_per_month is not None and images > limits.images_per_month:
        return "images"
    if usd is not None and limits.usd_per_month is not None and usd > limits.usd_per_month:
        return "usd"
    return None


def _over(limits: BudgetLimits, item: Mapping[str, Any], images: int, usd: Decimal | None) -> Literal["images", "usd"] | None:
    """The limit a reservation of ``images`` and ``usd`` on the counter ``item`` would fail, if any: the conditions
    of ``_reserve_item``, evaluated here."""
    if limits.images_per_month is not None and int(_read(item, "images")) + images > limits.images_per_month:
        return "images"
    if limits.usd_per_month is not None:
        spent = _read(item, "usd")
        if (spent + usd > limits.usd_per_month) if usd is not None else (spent >= limits.usd_per_month):
            return "usd"
    return None


def _full(limits: BudgetLimits, item: Mapping[str, Any], images: int, usd: Decimal | None) -> Literal["images", "usd"]:
    """The limit a refused reservation hit, from the counter as it was (the cancellation's ALL_OLD item)."""
    return _over(limits, item, images, usd) or ("images" if limits.images_per_month is not None else "usd")


def _refusal(
    kind: Kind, limit: Literal["images", "usd"], limits: BudgetLimits, now: dt.datetime, *, alone: tuple[int, Decimal | None] | None = None
) -> InsufficientQuotaError:
    """The 429 naming the budget (the key's or the end user's), its limit and when it resets; ``alone``: the request's
    images and estimate, when the request by itself is over the limit (then waiting for the reset cannot help)."""
    whose = "this API key" if kind == "key" else "this end user (the request's safety_identifier or user) under this API key"
    amount = f"{limits.images_per_month} images" if limit == "images" else f"{limits.usd_per_month} USD"
    if alone is not None:
        images, usd = alone
        asked = f"{images} images" if limit == "images" else f"up to {usd} USD"
        return InsufficientQuotaError(f"This request asks for {asked}, more than the whole monthly budget of {whose}: {amount}.")
    resets = month_end(now).strftime("%Y-%m-%dT%H:%M:%SZ")
    return InsufficientQuotaError(f"The monthly budget of {whose} is used up: {amount} per UTC month. It resets at {resets}.")


def _read(item: Mapping[str, Any], name: str) -> Decimal:
    return Decimal(item[name]["N"]) if name in item else Decimal(0)
