"""Usage records written exactly once, with the counters the Usage API reads, in one DynamoDB transaction.

A record's conditional Put comes first in its ``TransactWriteItems``, then the six counter updates (the caller's scope
and every caller's, at each width), then the caller's extra items (the budget settlement). A record that exists
already cancels the whole transaction: a redelivered message or a retried job is counted once, and its extra items
are not applied either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import QueueError
from imagegen.usage import table
from imagegen.usage.records import UsageRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TransactItem = dict[str, Any]
"""One element of the low-level client's ``TransactItems``: ``{"Put": {...}}``, ``{"Update": {...}}``, ..."""

DAY = 86_400
RECORD_TTL_SECONDS = 400 * DAY
# docs/usage.md's retention: minute counters 8 days, hour counters 93 days, day counters as long as the records.
COUNTER_TTL_SECONDS: dict[table.Width, int] = {"1m": 8 * DAY, "1h": 93 * DAY, "1d": 400 * DAY}
# A counter item's group fields: item attribute -> the record's value.
GROUP_FIELDS = ("model", "size", "source", "user_id", "api_key_id")
_UNAVAILABLE = "The usage table is unavailable; try again."
# "Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed, None]"
_REASONS_IN_MESSAGE = re.compile(r"\[([^\]]*)\]\s*$")


@dataclass(frozen=True, slots=True)
class CounterItem:
    """One counter: what one group (model, size, source, end user, caller) used in one bucket of one width."""

    start: int  # the bucket's start, Unix seconds (a UTC multiple of the width)
    model: str
    size: str
    source: str
    user_id: str | None  # the end user (the record's end_user)
    api_key_id: str  # the caller
    images: int
    requests: int
    cost_usd: Decimal  # the priced requests' cost
    unpriced: int  # requests without a price: the group's cost is unknown when > 0


def bucket_start(at: int, width: table.Width) -> int:
    """The start of the UTC bucket of ``width`` holding ``at`` (Unix time is UTC: multiples of the width)."""
    seconds = table.WIDTH_SECONDS[width]
    return at - at % seconds


def group_digest(model: str, size: str, source: str, user_id: str | None, api_key_id: str) -> str:
    """The counter's group within a bucket: one item per distinct (model, size, source, end user, caller)."""
    canonical = json.dumps([model, size, source, user_id, api_key_id], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UsageLedger:
    """The usage table's records and counters (DynamoDB, the low-level client)."""

    def __init__(self, client: DynamoDBClient, table_name: str, *, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def now(self) -> int:
        """Unix seconds by the ledger's clock (a report's default end)."""
        return int(self._clock().timestamp())

    def record(self, record: UsageRecord, *, extra: Sequence[TransactItem] = ()) -> bool:
        """Write ``record``, its counters and ``extra`` in one transaction. False (nothing written) when the record
        exists already; a retryable QueueError when the table fails."""
        items = [self._record_put(record), *self._counter_updates(record), *extra]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _first_reason(exc) == "ConditionalCheckFailed":
                return False
            raise QueueError(_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise QueueError(_UNAVAILABLE) from exc
        return True

    def counters(self, scope: str, width: table.Width, start: int, end: int) -> list[CounterItem]:
        """The counters of ``scope`` at ``width`` whose bucket starts in ``[start, end)``: one Query (every page of it)
        on the scope's partition, never the records."""
        found: list[CounterItem] = []
        if end <= start:
            return found
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": table.PK, "#sk": table.SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": table.counter_pk(scope, width)},
                # Sort keys are "<10-digit start>#<hex digest>": every key of a start s >= start sorts after the bare
                # digits of start, and every key of a start s <= end - 1 before "<end - 1>~" ('#' < '~').
                ":low": {"S": f"{start:010d}"},
                ":high": {"S": f"{end - 1:010d}~"},
            },
            "ConsistentRead": True,
        }
        while True:
            try:
                answer = self._client.query(**request)
            except (ClientError, BotoCoreError) as exc:
                raise QueueError(_UNAVAILABLE) from exc
            found.extend(_counter_item(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return found
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def _record_put(self, record: UsageRecord) -> TransactItem:
        item: dict[str, Any] = {name: {"S": value} for name, value in table.record_key(record.id).items()}
        item |= {
            "id": {"S": record.id},
            "at": {"N": str(record.at)},
            "caller": {"S": record.caller},
            "model": {"S": record.model},
            "provider": {"S": record.provider},
            "size": {"S": record.size},
            "images": {"N": str(record.images)},
            "source": {"S": record.source},
            "cached": {"BOOL": record.cached},
            table.TTL_ATTRIBUTE: {"N": str(record.at + RECORD_TTL_SECONDS)},
        }
        if record.end_user is not None:
            item["end_user"] = {"S": record.end_user}
        if record.quality is not None:
            item["quality"] = {"S": record.quality}
        if record.tokens is not None:
            counts = {"text_in": record.tokens.text_in, "image_in": record.tokens.image_in}
            counts |= {"image_out": record.tokens.image_out, "text_out": record.tokens.text_out}
            item["tokens"] = {"M": {name: {"N": str(count)} for name, count in counts.items()}}
        if record.cost_usd is not None:
            item["cost_usd"] = table.number(record.cost_usd)
        return {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": table.PK},
            }
        }

    def _counter_updates(self, record: UsageRecord) -> list[TransactItem]:
        group = {"model": record.model, "size": record.size, "source": record.source, "user_id": record.end_user}
        group["api_key_id"] = record.caller
        digest = group_digest(record.model, record.size, record.source, record.end_user, record.caller)
        present = [name for name in GROUP_FIELDS if group[name] is not None]
        names = {f"#{name}": name for name in present} | {"#images": "images", "#requests": "requests", "#ttl": table.TTL_ATTRIBUTE}
        values: dict[str, Any] = {f":{name}": {"S": group[name]} for name in present}
        values |= {":images": {"N": str(record.images)}, ":one": {"N": "1"}}
        sets = [f"#{name} = if_not_exists(#{name}, :{name})" for name in present]
        adds = ["#images :images", "#requests :one"]
        if record.cost_usd is None:
            names["#unpriced"] = "unpriced"
            adds.append("#unpriced :one")
        else:
            names["#cost"] = "cost_usd"
            values[":cost"] = table.number(record.cost_usd)
            adds.append("#cost :cost")
        updates: list[TransactItem] = []
        for scope in dict.fromkeys((record.caller, table.ALL_CALLERS)):
            for width, ttl in COUNTER_TTL_SECONDS.items():
                start = bucket_start(record.at, width)
                update = {
                    "TableName": self._table,
                    "Key": {table.PK: {"S": table.counter_pk(scope, width)}, table.SK: {"S": table.counter_sk(start, digest)}},
                    # The TTL is the bucket's, the same for every write: it can be set each time.
                    "UpdateExpression": f"SET {', '.join([*sets, '#ttl = :ttl'])} ADD {', '.join(adds)}",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {**values, ":ttl": {"N": str(start + ttl)}},
                }
                updates.append({"Update": update})
        return updates


def _first_reason(exc: ClientError) -> str | None:
    """The cancellation reason of a transaction's first item (the record's Put). botocore puts the modeled
    ``CancellationReasons`` of a TransactionCanceledException beside ``Error`` in the response, from the real service
    and from moto alike (both send them in the JSON error body); the message lists the same codes in brackets, which
    is read when the list is missing."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = exc.response.get("CancellationReasons")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        code = reasons[0].get("Code")
        return code if isinstance(code, str) else None
    listed = _REASONS_IN_MESSAGE.search(str(exc.response.get("Error", {}).get("Message", "")))
    return listed.group(1).split(",")[0].strip() if listed else None


def _counter_item(item: dict[str, Any]) -> CounterItem:
    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> Decimal:
        value = item.get(name)
        return Decimal(0) if value is None else Decimal(value["N"])

    return CounterItem(
        start=int(str(item[table.SK]["S"]).split("#", 1)[0]),
        model=text("model") or "",
        size=text("size") or "",
        source=text("source") or "",
        user_id=text("user_id"),
        api_key_id=text("api_key_id") or "",
        images=int(number("images")),
        requests=int(number("requests")),
        cost_usd=number("cost_usd"),
        unpriced=int(number("unpriced")),
    )
