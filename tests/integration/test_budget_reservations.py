"""Budget reservations against moto's DynamoDB over HTTP: concurrent requests cannot overspend a budget, the key's
and the end user's counters move together or not at all, settling and releasing, and the 429 as the official python
SDK receives it (one request, no retries).

Plain moto's transactions are not isolated: its ``transact_write_items`` snapshots the table and, when a condition
fails, restores that snapshot, losing what a concurrent transaction wrote meanwhile (measured: 20 threads over a
budget of 10 granted 11-13 in 7 of 120 runs). DynamoDB serialises transactions, so each condition is evaluated
atomically with its update; devtools.moto_isolated, which every MotoServer runs, gives the same guarantee, and
``test_the_server_does_interleave_concurrent_requests`` shows it still serves the requests concurrently, so the
reservations are not merely arriving one at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import openai
import pytest
from botocore.config import Config

from devtools.aws_local import MotoServer, create_usage_table
from devtools.procs import LOOPBACK
from imagegen.errors import ImageGenError, InsufficientQuotaError
from imagegen.usage.budget_document import BudgetsDocument
from imagegen.usage.budgets import BudgetGuard, Reservation

KEY = "key-0123456789abcdef"
THREADS = 20


@pytest.fixture(scope="module")
def isolated_moto(moto_server: MotoServer) -> MotoServer:
    """The shared moto server: devtools.moto_isolated gives its DynamoDB transactions DynamoDB's isolation."""
    return moto_server


def client_of(server: MotoServer) -> Any:
    """A client of its own, as each Lambda container has; a connection per thread."""
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        config=Config(max_pool_connections=THREADS, retries={"mode": "standard", "total_max_attempts": 1}),
    )


def guard(server: MotoServer, table: str, document: dict[str, Any]) -> BudgetGuard:
    return BudgetGuard(client_of(server), table, BudgetsDocument.model_validate(document))


def counter(server: MotoServer, table: str, kind: str, subject: str) -> dict[str, Any] | None:
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    key = {"pk": {"S": f"budget#{kind}#{subject}"}, "sk": {"S": month}}
    item: dict[str, Any] | None = client_of(server).get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    return item


def number(item: dict[str, Any] | None, name: str) -> Decimal:
    assert item is not None
    return Decimal(item[name]["N"])


def concurrently(action: Callable[[int], object]) -> list[object]:
    """``action(thread index)`` in THREADS threads released together; each one's result, or the exception it raised."""
    start = threading.Barrier(THREADS)

    def one(index: int) -> object:
        start.wait()
        try:
            return action(index)
        except Exception as exc:  # collected: the test counts refusals
            return exc

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS)))


# -- concurrency -------------------------------------------------------------------------------------------------


def test_the_server_does_interleave_concurrent_requests(isolated_moto: MotoServer) -> None:
    """The premise of the concurrency tests: a read-then-write from THREADS threads loses updates on this server, so
    its requests overlap; a budget checked that way (read, compare, write) would be overspent."""
    table = create_usage_table(isolated_moto.client("dynamodb"), "isolated-premise")
    client = client_of(isolated_moto)
    key = {"pk": {"S": "premise"}, "sk": {"S": "0"}}

    def read_then_write(_: int) -> None:
        item = client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        client.put_item(TableName=table, Item={**key, "n": {"N": str(int(item["n"]["N"]) + 1 if item else 1)}})

    concurrently(read_then_write)
    assert int(client.get_item(TableName=table, Key=key)["Item"]["n"]["N"]) < THREADS


def test_concurrent_requests_take_exactly_the_images_left(isolated_moto: MotoServer) -> None:
    table = create_usage_table(isolated_moto.client("dynamodb"), "isolated-images")
    guards = [guard(isolated_moto, table, {"per_key": {"images_per_month": 10}}) for _ in range(THREADS)]  # one per "container"
    results = concurrently(lambda index: guards[index].reserve(caller=KEY, end_user=None, images=1, estimate_usd=None))
    assert sum(isinstance(result, Reservation) for result in results) == 10
    assert sum(isinstance(result, InsufficientQuotaError) for result in results) == 10
    assert number(counter(isolated_moto, table, "key", KEY), "images") == 10


def test_concurrent_requests_take_exactly_the_dollars_left(isolated_moto: MotoServer) -> None:
    table = create_usage_table(isolated_moto.client("dynamodb"), "isolated-usd")
    budgets = guard(isolated_moto, table, {"per_user": {"usd_per_month": "1.00"}})

    results = concurrently(lambda _: budgets.reserve(caller=KEY, end_user="alice", images=1, estimate_usd=Decimal("0.10")))
    assert sum(isinstance(result, Reservation) for result in results) == 10
    refused = [result for result in results if isinstance(result, InsufficientQuotaError)]
    assert len(refused) == 10
    assert "end user" in refused[0].message and "1.00 USD" in refused[0].message
    item = counter(isolated_moto, table, "user", f"{KEY}#alice")
    assert (number(item, "usd"), number(item, "images")) == (Decimal("1.00"), 10)  # exact: no float on the way
    assert counter(isolated_moto, table, "key", KEY) is None  # the key itself has no limit: no counter


# -- one transaction for the key and the end user ----------------------------------------------------------------


def test_an_end_user_over_budget_leaves_the_keys_counter_unchanged(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 100}, "users": {"alice": {"images_per_month": 2}}})
    assert budgets.reserve(caller=KEY, end_user="alice", images=2, estimate_usd=None) is not None
    with pytest.raises(InsufficientQuotaError) as raised:
        budgets.reserve(caller=KEY, end_user="alice", images=1, estimate_usd=None)
    assert "budget of this end user" in raised.value.message and "2 images per UTC month" in raised.value.message
    assert "It resets at " in raised.value.message
    assert number(counter(moto_server, usage_table, "key", KEY), "images") == 2  # the refused one counted nowhere
    assert number(counter(moto_server, usage_table, "user", f"{KEY}#alice"), "images") == 2
    # another end user of the same key has room, and the key counts both
    assert budgets.reserve(caller=KEY, end_user="bob", images=1, estimate_usd=None) is not None
    assert number(counter(moto_server, usage_table, "key", KEY), "images") == 3


def test_a_key_over_budget_is_refused_naming_the_key_and_the_limit(moto_server: MotoServer, usage_table: str) -> None:
    # room for images, not for dollars: the message names the limit that was hit (read from the cancellation)
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 10, "usd_per_month": "0.10"}})
    assert budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=Decimal("0.06")) is not None
    with pytest.raises(InsufficientQuotaError) as raised:
        budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=Decimal("0.06"))
    assert "budget of this API key is used up: 0.10 USD" in raised.value.message
    assert number(counter(moto_server, usage_table, "key", KEY), "usd") == Decimal("0.06")


def test_an_unpriced_request_passes_a_usd_budget_with_room_and_stops_at_a_spent_one(moto_server: MotoServer, usage_table: str) -> None:
    # a model without a price reserves no dollars, but a USD budget already used up refuses it all the same
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 10, "usd_per_month": "0.10"}})
    assert budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None) is not None
    assert budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=Decimal("0.10")) is not None
    with pytest.raises(InsufficientQuotaError) as raised:
        budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    assert "budget of this API key is used up: 0.10 USD" in raised.value.message
    assert number(counter(moto_server, usage_table, "key", KEY), "images") == 2


def test_a_reservation_larger_than_the_limit_writes_nothing(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 3}, "per_user": {"images_per_month": 10}})
    with pytest.raises(InsufficientQuotaError, match="asks for 4 images"):
        budgets.reserve(caller=KEY, end_user="alice", images=4, estimate_usd=None)
    assert counter(moto_server, usage_table, "key", KEY) is None
    assert counter(moto_server, usage_table, "user", f"{KEY}#alice") is None


@pytest.mark.parametrize(
    ("used", "images", "estimate"),
    [
        ((0, "0"), 4, "0.01"),  # more images than the limit: refused alone
        ((2, "0.05"), 1, "0.01"),  # room for both
        ((3, "0.05"), 1, "0.01"),  # the images are used up
        ((2, "0.09"), 1, "0.01"),  # exactly the dollars left
        ((2, "0.09"), 1, "0.02"),  # a cent too many
        ((2, "0.09"), 1, None),  # unpriced, dollars left
        ((2, "0.10"), 1, None),  # unpriced, the dollars spent
    ],
)
def test_admit_refuses_exactly_what_a_reservation_would_and_reserves_nothing(
    moto_server: MotoServer, usage_table: str, used: tuple[int, str], images: int, estimate: str | None
) -> None:
    # The check at a job's submission: from the counter as it is, the same answer as the worker's reservation
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 3, "usd_per_month": "0.10"}})
    if used[0]:
        budgets.reserve(caller=KEY, end_user=None, images=used[0], estimate_usd=Decimal(used[1]))
    before = counter(moto_server, usage_table, "key", KEY)
    usd = None if estimate is None else Decimal(estimate)

    def outcome(call: Callable[..., object]) -> str | None:
        try:
            call(caller=KEY, end_user=None, images=images, estimate_usd=usd)
        except InsufficientQuotaError as error:
            return error.message
        return None

    admitted = outcome(budgets.admit)
    assert counter(moto_server, usage_table, "key", KEY) == before  # nothing reserved
    assert admitted == outcome(budgets.reserve)  # refused alike, with the same message


def test_the_counter_expires_after_400_days(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 3}})
    budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    first = number(counter(moto_server, usage_table, "key", KEY), "expires_at")
    assert abs(first - Decimal(dt.datetime.now(dt.UTC).timestamp() + 400 * 86400)) < 60
    budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    assert number(counter(moto_server, usage_table, "key", KEY), "expires_at") == first  # set once, by the first


# -- settling, releasing, reading --------------------------------------------------------------------------------


def test_release_gives_everything_back(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 2, "usd_per_month": 1}, "per_user": {"images_per_month": 2}})
    reservation = budgets.reserve(caller=KEY, end_user="alice", images=2, estimate_usd=Decimal("0.34"))
    assert reservation is not None
    budgets.release(reservation)
    for kind, subject in (("key", KEY), ("user", f"{KEY}#alice")):
        item = counter(moto_server, usage_table, kind, subject)
        assert (number(item, "images"), number(item, "usd")) == (0, 0)
    assert budgets.reserve(caller=KEY, end_user="alice", images=2, estimate_usd=Decimal("0.34")) is not None  # room again


def test_settling_turns_the_reservation_into_what_was_used(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 4, "usd_per_month": 1}, "per_user": {"usd_per_month": 1}})
    reservation = budgets.reserve(caller=KEY, end_user="alice", images=4, estimate_usd=Decimal("0.668"))
    assert reservation is not None
    # 3 images produced, costing less than the upper bound; in the ledger's transaction, here on its own
    client_of(moto_server).transact_write_items(TransactItems=budgets.settle_items(reservation, images=3, cost_usd=Decimal("0.1260")))
    usage = budgets.month_usage(KEY)
    assert (usage.images, usage.usd) == (3, Decimal("0.1260"))
    assert usage.month == dt.datetime.now(dt.UTC).strftime("%Y-%m") and usage.limits.images_per_month == 4
    assert usage.resets_at.day == 1 and usage.resets_at > dt.datetime.now(dt.UTC)
    user = budgets.month_usage(KEY, "alice")
    assert (user.images, user.usd, user.limits.usd_per_month) == (3, Decimal("0.1260"), 1)
    # the image given back is available again
    assert budgets.reserve(caller=KEY, end_user="alice", images=1, estimate_usd=Decimal("0.01")) is not None
    assert budgets.month_usage(KEY, "bob").images == 0  # no counter yet


def test_no_limit_no_counter(moto_server: MotoServer, usage_table: str) -> None:
    budgets = guard(moto_server, usage_table, {"keys": {"key-ffffffffffffffff": {"images_per_month": 1}}})
    assert budgets.reserve(caller=KEY, end_user="alice", images=5, estimate_usd=Decimal(1)) is None
    assert counter(moto_server, usage_table, "key", KEY) is None


# -- the 429 as the official python SDK sees it ------------------------------------------------------------------


class Answering(ThreadingHTTPServer):
    """A loopback server answering every POST with one error, counting the requests."""

    def __init__(self, error: ImageGenError, headers: dict[str, str]) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.requests += 1
                body = json.dumps(error.body()).encode()
                self.send_response(error.status_code)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__((LOOPBACK, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __exit__(self, *args: Any) -> None:
        self.shutdown()
        super().__exit__(*args)


@pytest.mark.parametrize(("ours", "requests"), [(True, 1), (False, 3)])
def test_the_sdk_sends_one_request_when_told_not_to_retry(moto_server: MotoServer, usage_table: str, ours: bool, requests: int) -> None:
    budgets = guard(moto_server, usage_table, {"per_key": {"images_per_month": 0}})
    with pytest.raises(InsufficientQuotaError) as raised:
        budgets.reserve(caller=KEY, end_user=None, images=1, estimate_usd=None)
    # the control: the same body without our header (a 10 ms Retry-After so its two retries are quick)
    headers = raised.value.headers if ours else {"retry-after-ms": "10"}
    with Answering(raised.value, headers) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=f"http://{LOOPBACK}:{server.server_address[1]}/v1")
        with pytest.raises(openai.RateLimitError) as seen:
            client.images.generate(model="gpt-image-1", prompt="a cat")
        assert server.requests == requests
    assert (seen.value.status_code, seen.value.code, seen.value.type, seen.value.param) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
        None,
    )
    assert seen.value.body == raised.value.body()["error"]  # the SDK's view of the body: exactly ours
