"""imagegen.usage.ledger and report against moto's DynamoDB over HTTP: a record is written once (a second write of
its id returns False and changes nothing, its extra items included), every field of it stored; the six counters with
their TTLs; a transaction is all or nothing; table failures are retryable errors; the Query's pages are all read; a
caller reads its own usage and an admin everyone's; and many records queried back through read_usage equal the sums
computed here from the records themselves. How DynamoDB reports a cancellation is checked through botocore's own
parsing of the bodies the service and moto send (a loopback server answering them)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import secrets
from collections import defaultdict
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import boto3
import pytest
from botocore.config import Config
from openai.types.admin.organization.usage_images_response import DataResultOrganizationUsageImagesResult, UsageImagesResponse

from devtools.aws_local import MotoServer
from devtools.procs import LOOPBACK
from imagegen.errors import QueueError
from imagegen.usage import table
from imagegen.usage.budget_document import BudgetsDocument
from imagegen.usage.budgets import BudgetGuard
from imagegen.usage.ledger import COUNTER_TTL_SECONDS, CounterItem, UsageLedger, bucket_start
from imagegen.usage.records import TokenCounts, UsageRecord
from imagegen.usage.report import UsageQuery, read_usage

pytestmark = pytest.mark.integration

ALICE, BOB = "key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb"
AT = 1_767_225_600 + 3 * 86_400 + 5 * 3_600 + 17 * 60 + 42  # 2026-01-04T05:17:42Z
DAY = 86_400
WIDTHS: tuple[table.Width, ...] = ("1m", "1h", "1d")


@pytest.fixture
def dynamodb(moto_server: MotoServer) -> Any:
    return moto_server.client("dynamodb")


@pytest.fixture
def ledger(dynamodb: Any, usage_table: str) -> UsageLedger:
    return UsageLedger(dynamodb, usage_table, clock=lambda: dt.datetime.fromtimestamp(AT + DAY, dt.UTC))


def usage(record_id: str | None = None, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "id": record_id or f"req-{secrets.token_hex(6)}",
        "at": AT,
        "caller": ALICE,
        "end_user": "alice@example.com",
        "model": "gpt-image-1",
        "provider": "openai",
        "size": "1024x1024",
        "quality": "high",
        "images": 2,
        "source": "image.generation",
        "tokens": TokenCounts(text_in=12, image_in=0, image_out=8320),
        "cost_usd": Decimal("0.33376"),
    }
    return UsageRecord(**(values | fields))


def budget_add(usage_table: str, images: int, *, condition: str | None = None) -> dict[str, Any]:
    """A budget counter update as BudgetGuard.settle_items makes them (key table.budget_key, images and usd)."""
    key = {name: {"S": value} for name, value in table.budget_key("key", ALICE, "2026-01").items()}
    update: dict[str, Any] = {
        "TableName": usage_table,
        "Key": key,
        "UpdateExpression": "ADD images :n, usd :usd",
        "ExpressionAttributeValues": {":n": {"N": str(images)}, ":usd": {"N": "0.5"}},
    }
    if condition:
        update["ConditionExpression"] = condition
    return {"Update": update}


def get(dynamodb: Any, usage_table: str, key: dict[str, str]) -> dict[str, Any] | None:
    item: dict[str, Any] | None = dynamodb.get_item(
        TableName=usage_table, Key={name: {"S": value} for name, value in key.items()}, ConsistentRead=True
    ).get("Item")
    return item


def everything(dynamodb: Any, usage_table: str) -> list[dict[str, Any]]:
    """The whole table (a test's view; the code under test never scans)."""
    items: list[dict[str, Any]] = dynamodb.scan(TableName=usage_table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


# -- exactly once --------------------------------------------------------------------------------------------------


def test_a_record_is_stored_with_every_field(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    record = usage("req-1")
    assert ledger.record(record) is True
    item = get(dynamodb, usage_table, table.record_key("req-1"))
    assert item == {
        "pk": {"S": "record#req-1"},
        "sk": {"S": "record"},
        "id": {"S": "req-1"},
        "at": {"N": str(AT)},
        "caller": {"S": ALICE},
        "end_user": {"S": "alice@example.com"},
        "model": {"S": "gpt-image-1"},
        "provider": {"S": "openai"},
        "size": {"S": "1024x1024"},
        "quality": {"S": "high"},
        "images": {"N": "2"},
        "source": {"S": "image.generation"},
        "tokens": {"M": {"text_in": {"N": "12"}, "image_in": {"N": "0"}, "image_out": {"N": "8320"}, "text_out": {"N": "0"}}},
        "cost_usd": {"N": "0.33376"},
        "cached": {"BOOL": False},
        "expires_at": {"N": str(AT + 400 * DAY)},
    }


def test_an_unpriced_record_has_no_cost_and_optional_fields_are_absent(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    assert ledger.record(usage("req-2", cost_usd=None, tokens=None, end_user=None, quality=None, cached=True)) is True
    item = get(dynamodb, usage_table, table.record_key("req-2"))
    assert item is not None
    assert not {"cost_usd", "tokens", "end_user", "quality"} & item.keys()
    assert item["cached"] == {"BOOL": True}
    counters = ledger.counters(ALICE, "1d", bucket_start(AT, "1d"), bucket_start(AT, "1d") + DAY)
    assert [(c.user_id, c.cost_usd, c.unpriced, c.requests) for c in counters] == [(None, Decimal(0), 1, 1)]


def test_a_record_written_twice_counts_once(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    assert ledger.record(usage("req-3")) is True
    before = everything(dynamodb, usage_table)
    # The same id again (an SQS redelivery, a retried job), even with other numbers: nothing is written.
    assert ledger.record(usage("req-3", images=5, cost_usd=Decimal("9"))) is False
    assert everything(dynamodb, usage_table) == before
    for width in WIDTHS:
        for scope in (ALICE, table.ALL_CALLERS):
            (counter,) = ledger.counters(scope, width, 0, table.WIDTH_SECONDS[width] + AT)
            assert (counter.images, counter.requests, counter.cost_usd) == (2, 1, Decimal("0.33376"))


def test_extra_items_are_applied_in_the_same_transaction_and_not_when_the_record_exists(
    ledger: UsageLedger, dynamodb: Any, usage_table: str
) -> None:
    key = table.budget_key("key", ALICE, "2026-01")
    assert ledger.record(usage("req-4"), extra=[budget_add(usage_table, 2)]) is True
    assert get(dynamodb, usage_table, key) == {**{k: {"S": v} for k, v in key.items()}, "images": {"N": "2"}, "usd": {"N": "0.5"}}
    assert ledger.record(usage("req-4"), extra=[budget_add(usage_table, 2)]) is False
    budget = get(dynamodb, usage_table, key)
    assert budget is not None and budget["images"] == {"N": "2"}


def test_a_transaction_is_all_or_nothing(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    """An extra item whose condition fails cancels the record and its counters too; it is no duplicate (the
    record's own reason is None), so it is raised, retryable."""
    with pytest.raises(QueueError) as caught:
        ledger.record(usage("req-5"), extra=[budget_add(usage_table, 1, condition="attribute_exists(images)")])
    assert caught.value.retryable and caught.value.status_code >= 500
    assert everything(dynamodb, usage_table) == []


def test_settling_a_real_budget_reservation_beside_the_record(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    """The interface with imagegen.usage.budgets: settle_items go in the record's transaction, once."""
    guard = BudgetGuard(dynamodb, usage_table, BudgetsDocument.model_validate({"per_key": {"images_per_month": 10, "usd_per_month": 5}}))
    first = guard.reserve(caller=ALICE, end_user=None, images=3, estimate_usd=Decimal("1.00"))
    assert first is not None
    assert ledger.record(usage("req-6", images=2), extra=guard.settle_items(first, images=2, cost_usd=Decimal("0.33376"))) is True
    assert (guard.month_usage(ALICE).images, guard.month_usage(ALICE).usd) == (2, Decimal("0.33376"))
    # A redelivery reserves again and finds its record written: its settlement is not applied (the caller releases).
    again = guard.reserve(caller=ALICE, end_user=None, images=3, estimate_usd=Decimal("1.00"))
    assert again is not None
    assert ledger.record(usage("req-6", images=2), extra=guard.settle_items(again, images=2, cost_usd=Decimal("0.33376"))) is False
    guard.release(again)
    assert (guard.month_usage(ALICE).images, guard.month_usage(ALICE).usd) == (2, Decimal("0.33376"))


# -- counters --------------------------------------------------------------------------------------------------------


def test_six_counters_at_every_width_with_their_ttls(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    assert ledger.record(usage(at=AT)) is True
    assert ledger.record(usage(at=AT + 1, end_user="bob", cost_usd=Decimal("0.011"))) is True
    assert ledger.record(usage(at=AT + 2, cost_usd=Decimal("0.1"))) is True
    starts = {"1m": 1_767_503_820, "1h": 1_767_502_800, "1d": 1_767_484_800}  # 05:17:00, 05:00:00, 00:00:00 UTC
    ttls = {"1m": 8 * DAY, "1h": 93 * DAY, "1d": 400 * DAY}
    assert ttls == COUNTER_TTL_SECONDS
    for width in WIDTHS:
        for scope in (ALICE, table.ALL_CALLERS):
            found = ledger.counters(scope, width, starts[width], starts[width] + 1)
            by_user = {counter.user_id: counter for counter in found}
            assert by_user.keys() == {"alice@example.com", "bob"}
            assert by_user["alice@example.com"] == CounterItem(
                start=starts[width],
                model="gpt-image-1",
                size="1024x1024",
                source="image.generation",
                user_id="alice@example.com",
                api_key_id=ALICE,
                images=4,
                requests=2,
                cost_usd=Decimal("0.43376"),
                unpriced=0,
            )
            assert (by_user["bob"].images, by_user["bob"].cost_usd) == (2, Decimal("0.011"))
            # The range is [start, end): the bucket before and the one after hold nothing.
            assert ledger.counters(scope, width, starts[width] - 1, starts[width]) == []
            assert ledger.counters(scope, width, starts[width] + 1, starts[width] + 10**6) == []
    items = [item for item in everything(dynamodb, usage_table) if item["pk"]["S"].startswith("usage#")]
    assert len(items) == 12  # two groups x two scopes x three widths
    for item in items:
        width = item["pk"]["S"].rsplit("#", 1)[1]
        start = int(item["sk"]["S"].split("#")[0])
        assert int(item["expires_at"]["N"]) == start + ttls[width]


def test_counters_reads_every_page_of_the_query(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    """DynamoDB (and moto) answer at most 1 MB per Query page: 150 counters of 20 kB are three pages or more."""
    start = bucket_start(AT, "1h")
    pk = table.counter_pk(ALICE, "1h")
    written = 150
    for first in range(0, written, 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": pk},
                        "sk": {"S": table.counter_sk(start, f"{n:032x}")},
                        "model": {"S": f"m{n}"},
                        "size": {"S": "1024x1024"},
                        "source": {"S": "image.edit"},
                        "api_key_id": {"S": ALICE},
                        "images": {"N": str(n)},
                        "requests": {"N": "1"},
                        "pad": {"S": "x" * 20_000},
                    }
                }
            }
            for n in range(first, first + 25)
        ]
        dynamodb.batch_write_item(RequestItems={usage_table: requests})
    first_page = dynamodb.query(TableName=usage_table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": pk}})
    assert "LastEvaluatedKey" in first_page and len(first_page["Items"]) < written  # the premise: pages
    found = ledger.counters(ALICE, "1h", start, start + 3600)
    assert sorted(counter.images for counter in found) == list(range(written))


def test_table_failures_are_retryable_errors(moto_server: MotoServer, usage_table: str) -> None:
    missing = UsageLedger(moto_server.client("dynamodb"), "no-such-table")
    with pytest.raises(QueueError) as caught:
        missing.record(usage())
    assert caught.value.retryable
    with pytest.raises(QueueError):
        missing.counters(ALICE, "1d", 0, DAY)
    unreachable = boto3.session.Session().client(
        "dynamodb",
        endpoint_url=f"http://{LOOPBACK}:1",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(connect_timeout=0.5, retries={"total_max_attempts": 1}),
    )
    with pytest.raises(QueueError) as caught:
        UsageLedger(unreachable, usage_table).record(usage())
    assert caught.value.retryable


# -- how a cancellation is reported --------------------------------------------------------------------------------


class CannedDynamoDB:
    """A loopback endpoint answering every call with one DynamoDB error body, so botocore parses it as it parses the
    service's (the same JSON 1.0 protocol and modeled exception)."""

    def __init__(self, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-RequestId", "canned")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)

    def __enter__(self) -> Any:
        Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return boto3.session.Session().client(
            "dynamodb",
            endpoint_url=f"http://{LOOPBACK}:{self.server.server_address[1]}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


CANCELLED = "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"


def cancellation(codes: list[str], *, reasons: bool = True) -> dict[str, Any]:
    """A TransactionCanceledException body: the service's (a reason per item, ``None`` for the others, no Message for
    them) or, without ``reasons``, only the message that lists the codes."""
    body: dict[str, Any] = {
        "__type": CANCELLED,
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(codes)}]",
    }
    if reasons:
        body["CancellationReasons"] = [
            {"Code": code, "Message": "The conditional request failed"} if code != "None" else {"Code": "None"} for code in codes
        ]
    return body


@pytest.mark.parametrize("reasons", [True, False], ids=["reasons", "message-only"])
def test_the_records_own_condition_failing_is_a_duplicate(reasons: bool) -> None:
    codes = ["ConditionalCheckFailed"] + ["None"] * 6
    with CannedDynamoDB(cancellation(codes, reasons=reasons)) as client:
        assert UsageLedger(client, "t").record(usage()) is False


@pytest.mark.parametrize(
    "codes",
    [["None"] * 6 + ["ConditionalCheckFailed"], ["TransactionConflict"] + ["None"] * 6, ["None", "ThrottlingError"] + ["None"] * 5],
    ids=["extra-condition", "conflict", "throttled"],
)
@pytest.mark.parametrize("reasons", [True, False], ids=["reasons", "message-only"])
def test_any_other_cancellation_is_retryable(codes: list[str], reasons: bool) -> None:
    with CannedDynamoDB(cancellation(codes, reasons=reasons)) as client, pytest.raises(QueueError) as caught:
        UsageLedger(client, "t").record(usage())
    assert caught.value.retryable


def test_moto_reports_cancellation_reasons_as_the_service_does(ledger: UsageLedger, dynamodb: Any, usage_table: str) -> None:
    """The premise of the duplicate test on moto: its body carries CancellationReasons, parsed by botocore."""
    assert ledger.record(usage("req-7")) is True
    item = {name: {"S": value} for name, value in table.record_key("req-7").items()}
    put = {"Put": {"TableName": usage_table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as caught:
        dynamodb.transact_write_items(TransactItems=[put])
    assert caught.value.response["CancellationReasons"][0]["Code"] == "ConditionalCheckFailed"


# -- read back through the Usage API ----------------------------------------------------------------------------------


def query(**params: Any) -> UsageQuery:
    return UsageQuery.from_params({name: value if isinstance(value, list) else [str(value)] for name, value in params.items()})


def results(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [result for bucket in page["data"] for result in bucket["results"]]


def test_a_caller_reads_its_own_usage_and_an_admin_everyones(ledger: UsageLedger) -> None:
    assert ledger.record(usage(caller=ALICE, images=2, end_user="u1")) is True
    assert ledger.record(usage(caller=BOB, images=5, end_user="u1", cost_usd=None)) is True
    day = bucket_start(AT, "1d")
    ungrouped = query(start_time=day, end_time=day + DAY)
    (alice,) = results(read_usage(ledger, ungrouped, caller=ALICE, admin=False))
    assert (alice["images"], alice["cost"]) == (2, {"value": 0.33376, "currency": "usd"})
    (bob,) = results(read_usage(ledger, ungrouped, caller=BOB, admin=False))
    assert (bob["images"], bob["cost"]) == (5, None)
    (admin,) = results(read_usage(ledger, ungrouped, caller=ALICE, admin=True))
    assert (admin["images"], admin["num_model_requests"], admin["cost"]) == (7, 2, None)
    # Two keys' end users named u1 are two users: grouped by user and key, two results; by user alone, one sum.
    by_key = read_usage(
        ledger, query(start_time=day, end_time=day + DAY, **{"group_by[]": ["user_id", "api_key_id"]}), caller=ALICE, admin=True
    )
    assert sorted((r["api_key_id"], r["user_id"], r["images"]) for r in results(by_key)) == [(ALICE, "u1", 2), (BOB, "u1", 5)]
    # A filter naming another caller's key finds nothing, never that caller's usage.
    spying = query(start_time=day, end_time=day + DAY, **{"api_key_ids[]": [BOB], "group_by[]": ["api_key_id"]})
    page = read_usage(ledger, spying, caller=ALICE, admin=False)
    assert results(page) == [] and len(page["data"]) == 1
    (filtered,) = results(read_usage(ledger, spying, caller=ALICE, admin=True))
    assert (filtered["api_key_id"], filtered["images"]) == (BOB, 5)


def test_end_time_defaults_to_the_ledgers_clock(ledger: UsageLedger) -> None:
    assert ledger.record(usage()) is True
    page = read_usage(ledger, query(start_time=AT - 2 * 3600, bucket_width="1h"), caller=ALICE, admin=False)
    # The clock says AT + 1 day: 26 hourly buckets from 03:00, 24 on the first page.
    assert len(page["data"]) == 24 and page["has_more"]
    assert [bucket["start_time"] for bucket in page["data"] if bucket["results"]] == [bucket_start(AT, "1h")]


def test_many_records_read_back_equal_the_sums_of_the_records(ledger: UsageLedger) -> None:
    """70 records: 30 within two hours (read by the minute), the others over four days (by the hour and the day);
    each caller's pages and the admin's, walked through next_page, against sums computed here from the records."""
    rng = random.Random("usage-ledger")
    base = bucket_start(AT, "1d")
    records = []
    for n in range(70):
        priced = rng.random() < 0.8
        record = usage(
            f"r-{n}",
            at=base + 3600 + rng.randrange(2 * 3600) if n < 30 else base + rng.randrange(4 * DAY),
            caller=rng.choice((ALICE, BOB)),
            end_user=rng.choice((None, "u1", "u2")),
            model=rng.choice(("gpt-image-1", "gpt-image-1-mini")),
            size=rng.choice(("1024x1024", "1536x1024")),
            source=rng.choice(("image.generation", "image.edit", "image.variation")),
            images=rng.randint(1, 4),
            cost_usd=Decimal(rng.randint(1, 400_000)) / Decimal(1_000_000) if priced else None,
        )
        assert ledger.record(record) is True
        records.append(record)
    assert ledger.record(records[0]) is False  # a duplicate among them counts once
    ranges: dict[table.Width, tuple[int, int, int]] = {
        "1m": (base + 3600, base + 3 * 3600, 1440),
        "1h": (base, base + 4 * DAY, 50),
        "1d": (base, base + 4 * DAY, 3),
    }
    for (width, (start, end, limit)), (caller, admin) in itertools.product(ranges.items(), ((ALICE, False), (BOB, False), (ALICE, True))):
        read = read_back(ledger, width, start, end, limit, caller=caller, admin=admin)
        mine = [record for record in records if (admin or record.caller == caller) and start <= record.at < end]
        assert read == summed(mine, width), (width, caller, admin)


GROUPED = ["model", "user_id", "source"]


def summed(records: list[UsageRecord], width: table.Width) -> dict[tuple[Any, ...], tuple[int, int, Decimal | None]]:
    """Each (bucket, model, end user, source)'s images, requests and cost (None when one was unpriced)."""
    seconds = table.WIDTH_SECONDS[width]
    totals: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0), False])
    for record in records:
        total = totals[(record.at - record.at % seconds, record.model, record.end_user, record.source)]
        total[0] += record.images
        total[1] += 1
        total[2] += record.cost_usd or 0
        total[3] |= record.cost_usd is None
    return {key: (images, requests, None if unpriced else cost) for key, (images, requests, cost, unpriced) in totals.items()}


def read_back(
    ledger: UsageLedger, width: table.Width, start: int, end: int, limit: int, *, caller: str, admin: bool
) -> dict[tuple[Any, ...], tuple[int, int, Decimal | None]]:
    """Every page of the range through read_usage, each one validated by the OpenAI SDK's model; every bucket once."""
    seen: dict[tuple[Any, ...], tuple[int, int, Decimal | None]] = {}
    starts: list[int] = []
    sent: dict[str, Any] = {"start_time": start, "end_time": end, "bucket_width": width, "limit": limit, "group_by[]": GROUPED}
    while True:
        page = read_usage(ledger, query(**sent), caller=caller, admin=admin)
        parsed = UsageImagesResponse.model_validate(page)
        assert all(isinstance(result, DataResultOrganizationUsageImagesResult) for bucket in parsed.data for result in bucket.results)
        for bucket in page["data"]:
            starts.append(bucket["start_time"])
            for result in bucket["results"]:
                cost = result["cost"]
                key = (bucket["start_time"], result["model"], result["user_id"], result["source"])
                seen[key] = (result["images"], result["num_model_requests"], None if cost is None else Decimal(repr(cost["value"])))
        if not page["has_more"]:
            assert page["next_page"] is None
            break
        sent["page"] = page["next_page"]
    assert starts == list(range(start, end, table.WIDTH_SECONDS[width]))
    return seen
