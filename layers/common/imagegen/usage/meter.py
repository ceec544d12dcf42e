"""The usage of one generation, from before its provider call to its record (docs/usage.md): the budgets reserved
first (or a 429 before anything is written or billed), then, once its images are stored, the record with its cost
written exactly once together with the reservation's settlement; or, when it failed, the reservation released."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imagegen.errors import ImageGenError
from imagegen.observability import logger, metrics
from imagegen.pictures import inspect
from imagegen.planning import GenerationPlan
from imagegen.usage.budgets import BudgetGuard, Reservation
from imagegen.usage.prices import PriceBook, price_book
from imagegen.usage.records import SOURCES, TokenCounts, UsageRecord

if TYPE_CHECKING:
    from imagegen.settings import Settings
    from imagegen.usage.ledger import UsageLedger

# An SQS message sent straight to the jobs queue, or a request object (queued as one), has no API key behind it.
QUEUE_CALLER = "queue"


@dataclass(frozen=True, slots=True)
class Charge:
    """One generation being metered: who it is for and what was reserved (None: no budget applies)."""

    plan: GenerationPlan
    caller: str
    record_id: str
    reservation: Reservation | None


@dataclass
class Meter:
    """Prices always (the cost metrics); budgets and the ledger when the deployment has a usage table."""

    prices: PriceBook
    guard: BudgetGuard | None = None
    ledger: UsageLedger | None = None
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def reserve(self, plan: GenerationPlan, *, caller: str, record_id: str) -> Charge:
        """The budgets' reservation for ``plan``, before anything is written or a provider called: an
        InsufficientQuotaError (429) when a budget has no room."""
        reservation = None
        if self.guard is not None:
            reservation = self.guard.reserve(
                caller=caller, end_user=plan.safety_identifier, images=plan.n, estimate_usd=self.prices.estimate(plan)
            )
        return Charge(plan=plan, caller=caller, record_id=record_id, reservation=reservation)

    def admit(self, plan: GenerationPlan, *, caller: str) -> None:
        """For a job queued now and run later (its worker reserves): the 429 a reservation would raise now, with
        nothing reserved, so that a caller whose budget has no room is told so instead of getting a job that fails."""
        if self.guard is not None:
            self.guard.admit(caller=caller, end_user=plan.safety_identifier, images=plan.n, estimate_usd=self.prices.estimate(plan))

    def release(self, charge: Charge) -> None:
        """The generation failed: nothing was produced, so nothing is counted."""
        if self.guard is not None and charge.reservation is not None:
            self.guard.release(charge.reservation)

    def settle(self, charge: Charge, *, images: Sequence[bytes], usage: Mapping[str, Any] | None, at: int) -> UsageRecord:
        """The generation's images are stored: its record (cost from the price data) written once with the budgets'
        settlement. A record that exists already (a redelivered job that recorded) releases this run's reservation
        instead. A failing usage table does not fail the request: its images are billed and stored, and are
        answered; the loss is logged and counted (``UsageNotRecorded``)."""
        plan = charge.plan
        size, tokens, cost = self._priced(plan, images, usage)
        record = UsageRecord(
            id=charge.record_id,
            at=at,
            caller=charge.caller,
            end_user=plan.safety_identifier,
            model=plan.model.id,
            provider=plan.model.provider,
            size=size,
            quality=plan.quality,
            images=len(images),
            source=SOURCES[plan.operation],
            tokens=tokens,
            cost_usd=cost,
        )
        self._write(record, charge.reservation)
        count_cost(record)
        return record

    def lost(self, charge: Charge, *, images: Sequence[bytes], usage: Mapping[str, Any] | None) -> None:
        """The provider answered but its images could not be stored (the request failed): the caller is not billed
        (its reservation is released by the run), but the deployment paid, so the cost is counted all the same
        (``CostUSD``, which the daily-spend alarm sums) with ``UndeliveredImages``, and logged."""
        plan = charge.plan
        _, _, cost = self._priced(plan, images, usage)
        logger.error(
            "the provider's images were paid for but not delivered: storing them failed",
            extra={"record_id": charge.record_id, "model": plan.model.id, "images": len(images), "cost_usd": str(cost)},
        )
        with single_metric(name="UndeliveredImages", unit=MetricUnit.Count, value=len(images), namespace=metrics.namespace) as metric:
            metric.add_dimension(name="model", value=plan.model.id)
        if cost is not None:
            metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=float(cost))

    def _priced(
        self, plan: GenerationPlan, images: Sequence[bytes], usage: Mapping[str, Any] | None
    ) -> tuple[str, TokenCounts | None, Decimal | None]:
        """What ``images`` cost from the price data: the size as produced, the tokens reported, the cost (None: unpriced)."""
        size = produced_size(plan, images)
        tokens = TokenCounts.of(usage)
        return size, tokens, self.prices.cost(plan.model.id, size=size, quality=plan.quality, images=len(images), tokens=tokens)

    def record_cached(self, plan: GenerationPlan, *, caller: str, record_id: str, images: int, size: str, at: int) -> UsageRecord:
        """A request answered from the cache: recorded as ``cached``, at cost 0 (no provider was called), and not
        counted against any budget."""
        record = UsageRecord(
            id=record_id,
            at=at,
            caller=caller,
            end_user=plan.safety_identifier,
            model=plan.model.id,
            provider=plan.model.provider,
            size=size,
            quality=plan.quality,
            images=images,
            source=SOURCES[plan.operation],
            cost_usd=Decimal(0),
            cached=True,
        )
        self._write(record, None)
        metrics.add_metric(name="CacheHits", unit=MetricUnit.Count, value=1)
        return record

    def _write(self, record: UsageRecord, reservation: Reservation | None) -> None:
        if self.ledger is None:
            return
        extra = []
        if self.guard is not None and reservation is not None:
            extra = self.guard.settle_items(reservation, images=record.images, cost_usd=record.cost_usd)
        try:
            written = self.ledger.record(record, extra=extra)
        except ImageGenError as error:
            logger.error("usage not recorded: the usage table failed", extra={"record_id": record.id, "code": error.code})
            metrics.add_metric(name="UsageNotRecorded", unit=MetricUnit.Count, value=1)
            return
        if not written:
            logger.info("usage recorded already (a retried job): counted once", extra={"record_id": record.id})
            if self.guard is not None and reservation is not None:
                self.guard.release(reservation)


def produced_size(plan: GenerationPlan, images: Sequence[bytes]) -> str:
    """The size as produced: the plan's, or for ``auto`` the first image's own dimensions (what it is billed at)."""
    if plan.size != "auto" or not images:
        return plan.size
    try:
        picture = inspect(images[0], param="image")
    except ImageGenError:  # an SVG, or bytes no header reader knows: the size stays unknown
        return plan.size
    return f"{picture.width}x{picture.height}"


def count_cost(record: UsageRecord) -> None:
    """``CostUSD`` of the deployment (what the daily-spend alarm sums) and per model; unpriced generations counted
    as ``UnpricedImages`` instead, never as 0."""
    if record.cost_usd is None:
        metrics.add_metric(name="UnpricedImages", unit=MetricUnit.Count, value=record.images)
        return
    value = float(record.cost_usd)
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=value)
    with single_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=value, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="model", value=record.model)


def meter_of(settings: Settings) -> Meter:
    """The meter of this deployment: the ledger and budgets in USAGE_TABLE when it is set."""
    if settings.usage_table is None:
        return Meter(prices=price_book())
    from imagegen.clients import dynamodb_client
    from imagegen.usage.ledger import UsageLedger

    client = dynamodb_client()
    guard = BudgetGuard(client, settings.usage_table, settings.budgets) if settings.budgets is not None else None
    return Meter(prices=price_book(), guard=guard, ledger=UsageLedger(client, settings.usage_table))
