"""``GET /v1/organization/usage/images`` in OpenAI's shape, from the usage counters.

A page is ``limit`` consecutive buckets of ``bucket_width``, aligned to UTC multiples of the width, every one present
(an empty bucket has no results). Each result is one group of the counters of its bucket: the fields grouped by are
set, the others null (``project_id`` always), plus ``cost``: its USD, or null when any request of the group had no
price (a partial sum would read as a total).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, ValidationError, model_validator

from imagegen.errors import InvalidRequestError, invalid_request_from
from imagegen.models import Model
from imagegen.usage import table
from imagegen.usage.ledger import CounterItem, UsageLedger, bucket_start
from imagegen.usage.records import Source

GroupField = Literal["model", "size", "source", "user_id", "api_key_id", "project_id"]
# OpenAI's limits on ``limit`` (it counts buckets), by width.
DEFAULT_LIMITS: dict[table.Width, int] = {"1m": 60, "1h": 24, "1d": 7}
MAX_LIMITS: dict[table.Width, int] = {"1m": 1440, "1h": 168, "1d": 31}
# Bucket starts are 10 digits in the counters' sort keys (table.counter_sk): until the year 2286.
MAX_TIME = 9_999_999_999
# A result's group fields, in the order of OpenAI's example.
RESULT_FIELDS: tuple[GroupField, ...] = ("size", "source", "project_id", "user_id", "api_key_id", "model")
# The parameters that are arrays (the others are given once).
_ARRAYS = frozenset({"group_by", "models", "sizes", "sources", "user_ids", "api_key_ids", "project_ids"})
# The page cursor: the bucket the next page starts at, and the range it belongs to.
_CURSOR = re.compile(r"(\d{1,10})\.([0-9a-f]{16})")


class UsageQuery(Model):
    """The Usage API's query parameters (OpenAI's names and limits). ``end_time`` None is now (this second
    included); ``limit`` None the width's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_time: int = Field(ge=0, le=MAX_TIME)
    end_time: int | None = Field(default=None, ge=0, le=MAX_TIME)
    bucket_width: table.Width = "1d"
    group_by: tuple[GroupField, ...] = ()
    limit: int | None = Field(default=None, ge=1)
    page: str | None = None
    models: tuple[str, ...] | None = None
    sizes: tuple[str, ...] | None = None
    sources: tuple[Source, ...] | None = None
    user_ids: tuple[str, ...] | None = None
    api_key_ids: tuple[str, ...] | None = None
    project_ids: tuple[str, ...] | None = None  # accepted; no usage has a project, so it matches nothing

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]] | None) -> Self:
        """From API Gateway's ``multiValueQueryStringParameters`` (None when there is no query string). Arrays come
        as the SDKs send them (``group_by[]=model``) or repeated (``group_by=model&group_by=size``), or both."""
        values: dict[str, Any] = {}
        for sent, given in (params or {}).items():
            name = sent.removesuffix("[]")
            if name not in cls.model_fields:
                raise InvalidRequestError(f"Unknown parameter: '{sent}'.", param=sent, code="unknown_parameter")
            given = [given] if isinstance(given, str) else list(given)
            if name in _ARRAYS:
                values.setdefault(name, []).extend(given)
            elif name in values or len(given) != 1:
                raise InvalidRequestError(f"Invalid '{name}': give it once.", param=name)
            else:
                values[name] = given[0]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise invalid_request_from(exc.errors()) from None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.end_time is not None and self.end_time <= self.start_time:
            raise InvalidRequestError("Invalid 'end_time': it must be after 'start_time'.", param="end_time")
        most = MAX_LIMITS[self.bucket_width]
        if self.limit is not None and self.limit > most:
            raise InvalidRequestError(f"Invalid 'limit': at most {most} buckets of {self.bucket_width}.", param="limit")
        if self.page is not None:
            self.cursor_start()  # a cursor of another range, or made up, is refused here
        return self

    @property
    def page_limit(self) -> int:
        """Buckets per page."""
        return DEFAULT_LIMITS[self.bucket_width] if self.limit is None else self.limit

    def cursor(self, start: int) -> str:
        """The ``next_page`` of a page ending at bucket ``start``."""
        return f"{start}.{self._range_digest()}"

    def cursor_start(self) -> int | None:
        """The bucket ``page`` starts at (None without one); a 400 naming ``page`` when it is no cursor of this
        range: not one this API made, or made for another ``start_time``, ``end_time`` or ``bucket_width``."""
        if self.page is None:
            return None
        parsed = _CURSOR.fullmatch(self.page)
        width = table.WIDTH_SECONDS[self.bucket_width]
        start = int(parsed.group(1)) if parsed else -1
        past_end = self.end_time is not None and start >= self.end_time
        if parsed is None or parsed.group(2) != self._range_digest() or start % width or start <= self.start_time or past_end:
            raise _bad_page()
        return start

    def page_range(self, now: int) -> PageRange:
        """The buckets of this page, and whether more follow."""
        width = table.WIDTH_SECONDS[self.bucket_width]
        # end_time is exclusive. Without it the range ends now, and the second ``now`` has begun: a record stamped
        # in it (a request answered within the same second) is in range, and so is a bucket it begins.
        end = self.end_time if self.end_time is not None else now + 1
        cursor = self.cursor_start()
        first = bucket_start(self.start_time, self.bucket_width) if cursor is None else cursor
        if self.page is not None and first >= end:  # end_time omitted: a cursor from the future
            raise _bad_page()
        count = max(0, min(self.page_limit, -(-(end - first) // width)))
        stop = first + count * width
        return PageRange(start=first, stop=stop, width=width, next_start=stop if stop < end else None)

    def _range_digest(self) -> str:
        identity = f"{self.start_time}\n{self.end_time}\n{self.bucket_width}"
        return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _bad_page() -> InvalidRequestError:
    return InvalidRequestError("Invalid 'page': pass the 'next_page' of the previous page of this query.", param="page")


@dataclass(frozen=True, slots=True)
class PageRange:
    """A page's buckets: starts ``start, start + width, ...`` below ``stop``; ``next_start`` that of the next page."""

    start: int
    stop: int
    width: int
    next_start: int | None


def usage_page(query: UsageQuery, items: Iterable[CounterItem], *, now: int) -> dict[str, Any]:
    """OpenAI's page of image usage buckets for ``query`` from the counters ``items`` (of the query's scope and
    width; those outside the page's buckets or its filters are left out)."""
    span = query.page_range(now)
    groups: dict[int, dict[tuple[str | None, ...], _Sum]] = {start: {} for start in range(span.start, span.stop, span.width)}
    for item in items:
        bucket = groups.get(item.start)
        if bucket is None or not _selected(query, item):
            continue
        key = tuple(_value(item, name) if name in query.group_by else None for name in RESULT_FIELDS)
        bucket.setdefault(key, _Sum()).add(item)
    data = [
        {
            "object": "bucket",
            "start_time": start,
            "end_time": start + span.width,
            "results": [_result(key, total) for key, total in sorted(results.items(), key=lambda pair: _order(pair[0]))],
        }
        for start, results in groups.items()
    ]
    next_page = None if span.next_start is None else query.cursor(span.next_start)
    return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}


def read_usage(ledger: UsageLedger, query: UsageQuery, *, caller: str, admin: bool, now: int | None = None) -> dict[str, Any]:
    """The page ``caller`` may read: its own usage, or every caller's for an admin (``USAGE_ADMIN_KEYS``). A filter
    naming another caller's key finds nothing in a caller's own counters."""
    now = ledger.now() if now is None else now
    span = query.page_range(now)
    scope = table.ALL_CALLERS if admin else caller
    return usage_page(query, ledger.counters(scope, query.bucket_width, span.start, span.stop), now=now)


@dataclass(slots=True)
class _Sum:
    images: int = 0
    requests: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0

    def add(self, item: CounterItem) -> None:
        self.images += item.images
        self.requests += item.requests
        self.cost_usd += item.cost_usd
        self.unpriced += item.unpriced


def _value(item: CounterItem, name: GroupField) -> str | None:
    return None if name == "project_id" else getattr(item, name)


def _selected(query: UsageQuery, item: CounterItem) -> bool:
    if query.project_ids is not None:
        return False
    wanted = (
        (query.models, item.model),
        (query.sizes, item.size),
        (query.sources, item.source),
        (query.user_ids, item.user_id),
        (query.api_key_ids, item.api_key_id),
    )
    return all(allowed is None or value in allowed for allowed, value in wanted)


def _order(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is not None, value or "") for value in key)


def _result(key: tuple[str | None, ...], total: _Sum) -> dict[str, Any]:
    result: dict[str, Any] = {"object": "organization.usage.images.result", "images": total.images, "num_model_requests": total.requests}
    result |= dict(zip(RESULT_FIELDS, key, strict=True))
    # The exact Decimal sum, converted to a JSON number once.
    result["cost"] = None if total.unpriced else {"value": float(total.cost_usd), "currency": "usd"}
    return result
