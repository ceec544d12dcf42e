"""imagegen.usage.report: the Usage API's query parameters as API Gateway hands them over (both SDKs' wire lines
from docs/research/usage-and-prices.md section 4.1, and the repeated spelling), every bad value a 400 naming its
field, OpenAI's limits; and the page built from counter items: UTC-aligned buckets, empty ones present, pages walked
through next_page, every grouping, the cost exact or null, the filters, and the installed OpenAI SDK's own model."""

from __future__ import annotations

import itertools
from collections import defaultdict
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from openai.types.admin.organization.usage_images_response import DataResultOrganizationUsageImagesResult, UsageImagesResponse

from imagegen.errors import InvalidRequestError
from imagegen.usage.ledger import CounterItem
from imagegen.usage.report import UsageQuery, usage_page

# Measured by the research with both SDKs against a loopback server (section 4.1), verbatim.
PYTHON_WIRE = (
    "/v1/organization/usage/images?start_time=1&api_key_ids%5B%5D=k&bucket_width=1h&end_time=2&group_by%5B%5D=model"
    "&group_by%5B%5D=size&limit=3&models%5B%5D=gpt-image-1&page=cur&project_ids%5B%5D=p&sizes%5B%5D=1024x1024"
    "&sources%5B%5D=image.edit&user_ids%5B%5D=u"
)
NODE_WIRE = (
    "/v1/organization/usage/images?start_time=1&end_time=2&bucket_width=1h&group_by%5B%5D=model&group_by%5B%5D=size"
    "&limit=3&sizes%5B%5D=1024x1024&sources%5B%5D=image.edit&user_ids%5B%5D=u&api_key_ids%5B%5D=k&models%5B%5D=gpt-image-1"
    "&page=cur"
)
DAY, HOUR, MINUTE = 86_400, 3_600, 60
NOV_1 = 1_730_419_200  # 2024-11-01T00:00Z, the spec example's start
RESULT_FIELDS = ("size", "source", "project_id", "user_id", "api_key_id", "model")


def multi_value(url: str, *, drop: tuple[str, ...] = ()) -> dict[str, list[str]] | None:
    """A path's query as API Gateway's ``multiValueQueryStringParameters`` (names and values decoded)."""
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name not in drop:
            params.setdefault(name, []).append(value)
    return params or None


def refused(params: dict[str, list[str]] | None) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        UsageQuery.from_params(params)
    error = caught.value
    assert error.status_code == 400
    body = error.body()["error"]
    assert body["type"] == "invalid_request_error" and body["param"] == error.param and body["message"]
    return error


def item(start: int, **fields: Any) -> CounterItem:
    values: dict[str, Any] = {
        "model": "gpt-image-1",
        "size": "1024x1024",
        "source": "image.generation",
        "user_id": None,
        "api_key_id": "key-aaaaaaaaaaaaaaaa",
        "images": 1,
        "requests": 1,
        "cost_usd": Decimal("0.042"),
        "unpriced": 0,
    }
    return CounterItem(start=start, **(values | fields))


# -- the query -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", [PYTHON_WIRE, NODE_WIRE], ids=["python", "node"])
def test_both_sdks_wire_lines_parse_every_parameter(wire: str) -> None:
    query = UsageQuery.from_params(multi_value(wire, drop=("page",)))
    assert query.start_time == 1 and query.end_time == 2 and query.bucket_width == "1h" and query.limit == 3
    assert query.group_by == ("model", "size")
    assert query.models == ("gpt-image-1",) and query.sizes == ("1024x1024",) and query.sources == ("image.edit",)
    assert query.user_ids == ("u",) and query.api_key_ids == ("k",)
    assert query.project_ids == (("p",) if "project_ids" in wire else None)
    # Their page is a made-up cursor ("cur"): refused naming it.
    assert refused(multi_value(wire)).param == "page"


def test_repeated_arrays_read_as_the_bracket_spelling_and_both_together_merge() -> None:
    brackets = UsageQuery.from_params({"start_time": ["5"], "group_by[]": ["model", "user_id"], "models[]": ["a", "b"]})
    repeated = UsageQuery.from_params({"start_time": ["5"], "group_by": ["model", "user_id"], "models": ["a", "b"]})
    assert brackets == repeated
    assert brackets.group_by == ("model", "user_id") and brackets.models == ("a", "b")
    both = UsageQuery.from_params({"start_time": ["5"], "group_by[]": ["model"], "group_by": ["size"]})
    assert set(both.group_by) == {"model", "size"}


def test_defaults() -> None:
    query = UsageQuery.from_params({"start_time": ["100"]})
    assert (query.end_time, query.bucket_width, query.group_by, query.limit, query.page) == (None, "1d", (), None, None)
    assert query.page_limit == 7
    for name in ("models", "sizes", "sources", "user_ids", "api_key_ids", "project_ids"):
        assert getattr(query, name) is None


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        (None, "start_time", "missing_required_parameter"),
        ({"end_time": ["5"]}, "start_time", "missing_required_parameter"),
        ({"start_time": ["soon"]}, "start_time", "invalid_type"),
        ({"start_time": ["1.5"]}, "start_time", "invalid_type"),
        ({"start_time": [""]}, "start_time", "invalid_type"),
        ({"start_time": ["-1"]}, "start_time", "invalid_value"),
        ({"start_time": ["10000000000"]}, "start_time", "invalid_value"),
        ({"start_time": ["1", "2"]}, "start_time", "invalid_value"),
        ({"start_time": ["10"], "end_time": ["later"]}, "end_time", "invalid_type"),
        ({"start_time": ["10"], "end_time": ["10"]}, "end_time", "invalid_value"),
        ({"start_time": ["10"], "end_time": ["9"]}, "end_time", "invalid_value"),
        ({"start_time": ["10"], "bucket_width": ["1w"]}, "bucket_width", "invalid_value"),
        ({"start_time": ["10"], "bucket_width": ["1d", "1h"]}, "bucket_width", "invalid_value"),
        ({"start_time": ["10"], "limit": ["0"]}, "limit", "invalid_value"),
        ({"start_time": ["10"], "limit": ["-3"]}, "limit", "invalid_value"),
        ({"start_time": ["10"], "limit": ["many"]}, "limit", "invalid_type"),
        ({"start_time": ["10"], "limit": ["32"]}, "limit", "invalid_value"),
        ({"start_time": ["10"], "bucket_width": ["1h"], "limit": ["169"]}, "limit", "invalid_value"),
        ({"start_time": ["10"], "bucket_width": ["1m"], "limit": ["1441"]}, "limit", "invalid_value"),
        ({"start_time": ["10"], "group_by[]": ["model", "project"]}, "group_by[1]", "invalid_value"),
        ({"start_time": ["10"], "group_by": ["line_item"]}, "group_by[0]", "invalid_value"),
        ({"start_time": ["10"], "sources[]": ["image.upscale"]}, "sources[0]", "invalid_value"),
        ({"start_time": ["10"], "page": ["cur"]}, "page", "invalid_value"),
        ({"start_time": ["10"], "project": ["p"]}, "project", "unknown_parameter"),
        ({"start_time": ["10"], "line_items[]": ["x"]}, "line_items[]", "unknown_parameter"),
        ({"start_time": ["10"], "start_time[]x": ["1"]}, "start_time[]x", "unknown_parameter"),
    ],
)
def test_every_bad_parameter_is_a_400_naming_it(params: dict[str, list[str]] | None, param: str, code: str) -> None:
    error = refused(params)
    assert (error.param, error.code) == (param, code)
    assert param.split("[")[0] in error.message


@pytest.mark.parametrize(("width", "default", "most"), [("1m", 60, 1440), ("1h", 24, 168), ("1d", 7, 31)])
def test_limit_defaults_and_maxima_by_width(width: str, default: int, most: int) -> None:
    seconds = {"1m": MINUTE, "1h": HOUR, "1d": DAY}[width]
    far = NOV_1 + 2000 * seconds
    query = UsageQuery.from_params({"start_time": [str(NOV_1)], "end_time": [str(far)], "bucket_width": [width]})
    assert len(usage_page(query, [], now=far)["data"]) == default
    widest = UsageQuery.from_params({"start_time": [str(NOV_1)], "end_time": [str(far)], "bucket_width": [width], "limit": [str(most)]})
    assert len(usage_page(widest, [], now=far)["data"]) == most
    assert refused({"start_time": [str(NOV_1)], "bucket_width": [width], "limit": [str(most + 1)]}).param == "limit"


def _page_of(start: int, *, width: str = "1d", limit: int = 7, **params: list[str]) -> UsageQuery:
    return UsageQuery.from_params(
        {"start_time": [str(start)], "end_time": [str(start + 100 * DAY)], "bucket_width": [width], "limit": [str(limit)], **params}
    )


def test_a_cursor_is_refused_for_another_range_misaligned_or_past_the_end() -> None:
    query = _page_of(NOV_1, limit=2)
    cursor = usage_page(query, [], now=NOV_1)["next_page"]
    assert isinstance(cursor, str)
    assert UsageQuery.from_params({**_params(query), "page": [cursor]}).cursor_start() == NOV_1 + 2 * DAY
    position, digest = cursor.split(".")
    forged = [
        f"{int(position) + 1}.{digest}",  # not a bucket start
        f"{NOV_1}.{digest}",  # the first page's own start: no cursor points there
        f"{NOV_1 + 100 * DAY}.{digest}",  # at end_time: nothing left
        f"{position}.{'0' * 16}",
        f"{position}",
        cursor + "x",
    ]
    for page in forged:
        assert refused({**_params(query), "page": [page]}).param == "page", page
    # The same cursor belongs to its range only: another start, end or width refuses it.
    for other in ({"start_time": [str(NOV_1 + DAY)]}, {"end_time": [str(NOV_1 + 50 * DAY)]}, {"bucket_width": ["1h"]}):
        assert refused({**_params(query), **other, "page": [cursor]}).param == "page", other
    # A page size may change from one page to the next.
    assert UsageQuery.from_params({**_params(query), "limit": ["5"], "page": [cursor]}).page_limit == 5


def test_a_cursor_beyond_now_is_refused_when_end_time_is_now() -> None:
    query = UsageQuery.from_params({"start_time": [str(NOV_1)], "limit": ["1"]})
    cursor = usage_page(query, [], now=NOV_1 + 3 * DAY - 1)["next_page"]
    assert cursor is not None
    later = UsageQuery.from_params({"start_time": [str(NOV_1)], "page": [cursor]})
    assert [bucket["start_time"] for bucket in usage_page(later, [], now=NOV_1 + 3 * DAY - 1)["data"]] == [NOV_1 + DAY, NOV_1 + 2 * DAY]
    # The bucket the cursor points at begins in the second after now: not begun yet
    with pytest.raises(InvalidRequestError) as caught:
        usage_page(later, [], now=NOV_1 + DAY - 1)
    assert caught.value.param == "page"


def _params(query: UsageQuery) -> dict[str, list[str]]:
    sent = query.model_dump(exclude_none=True, exclude={"page"})
    return {name: [str(value)] for name, value in sent.items() if not isinstance(value, tuple)}


# -- the page --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "seconds"), [("1m", MINUTE), ("1h", HOUR), ("1d", DAY)])
def test_buckets_are_utc_multiples_of_the_width_and_every_one_is_present(width: str, seconds: int) -> None:
    start, end = NOV_1 + 5 * seconds + 17, NOV_1 + 9 * seconds + 1  # neither on a boundary
    query = UsageQuery.from_params({"start_time": [str(start)], "end_time": [str(end)], "bucket_width": [width]})
    page = usage_page(query, [item(NOV_1 + 7 * seconds, images=3)], now=end)
    starts = [bucket["start_time"] for bucket in page["data"]]
    # The bucket holding start_time through the one holding end_time - 1: 5, 6, 7, 8, 9.
    assert starts == [NOV_1 + n * seconds for n in range(5, 10)]
    assert all(bucket["end_time"] == bucket["start_time"] + seconds and bucket["object"] == "bucket" for bucket in page["data"])
    assert [len(bucket["results"]) for bucket in page["data"]] == [0, 0, 1, 0, 0]
    assert page["data"][2]["results"][0]["images"] == 3
    assert (page["object"], page["has_more"], page["next_page"]) == ("page", False, None)


def test_end_time_defaults_to_now() -> None:
    query = UsageQuery.from_params({"start_time": [str(NOV_1)], "bucket_width": ["1h"]})
    page = usage_page(query, [], now=NOV_1 + 3 * HOUR + 1)
    assert [bucket["start_time"] for bucket in page["data"]] == [NOV_1 + n * HOUR for n in range(4)]
    assert not page["has_more"]
    assert usage_page(query, [], now=NOV_1 - 1)["data"] == []  # nothing has begun yet


@pytest.mark.parametrize(("width", "seconds"), [("1m", MINUTE), ("1h", HOUR), ("1d", DAY)])
def test_without_end_time_the_bucket_begun_this_second_is_on_the_page(width: str, seconds: int) -> None:
    # A record stamped in the very second a bucket begins, read in that same second (a fast request on a minute's
    # first second): ``now`` is that second, which has begun, so its bucket and the record are on the page.
    begun = NOV_1 + 4 * seconds
    query = UsageQuery.from_params({"start_time": [str(NOV_1)], "bucket_width": [width]})
    page = usage_page(query, [item(begun, images=2)], now=begun)
    assert [bucket["start_time"] for bucket in page["data"]] == [NOV_1 + n * seconds for n in range(5)]
    assert [result["images"] for result in page["data"][-1]["results"]] == [2]
    assert not page["has_more"]
    # An explicit end_time stays exclusive, as OpenAI documents it.
    bounded = UsageQuery.from_params({"start_time": [str(NOV_1)], "end_time": [str(begun)], "bucket_width": [width]})
    assert [bucket["start_time"] for bucket in usage_page(bounded, [item(begun)], now=begun)["data"]][-1] == NOV_1 + 3 * seconds


def test_items_outside_the_page_are_left_out() -> None:
    query = _page_of(NOV_1, limit=2)
    page = usage_page(query, [item(NOV_1 - DAY), item(NOV_1 + 2 * DAY), item(NOV_1 + DAY, images=4)], now=NOV_1)
    assert [[result["images"] for result in bucket["results"]] for bucket in page["data"]] == [[], [4]]


def _spread() -> list[CounterItem]:
    """Counters over 20 days: two models, sizes, sources, users (and none) and callers, priced and unpriced."""
    found = []
    for n, (model, size, source, user, key) in enumerate(
        itertools.product(
            ("gpt-image-1", "dall-e-3"),
            ("1024x1024", "1536x1024"),
            ("image.generation", "image.edit"),
            (None, "u1", "u2"),
            ("key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb"),
        )
    ):
        unpriced = 1 if model == "dall-e-3" and size == "1536x1024" else 0
        cost = Decimal(0) if unpriced else Decimal(n % 7 + 1) / Decimal(1000)
        values = {"model": model, "size": size, "source": source, "user_id": user, "api_key_id": key}
        found.append(item(NOV_1 + (n % 20) * DAY, **values, images=n % 5 + 1, requests=n % 3 + 1, cost_usd=cost, unpriced=unpriced))
    return found


def _expected(items: list[CounterItem], group_by: tuple[str, ...]) -> dict[tuple[Any, ...], tuple[int, int, Decimal | None]]:
    """Each (bucket, group)'s images, requests and cost, summed straight from the counter items."""
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0), 0])
    for counter in items:
        group = tuple(None if name == "project_id" else getattr(counter, name) for name in group_by)
        total = sums[(counter.start, *group)]
        total[0] += counter.images
        total[1] += counter.requests
        total[2] += counter.cost_usd
        total[3] += counter.unpriced
    return {key: (images, requests, None if unpriced else cost) for key, (images, requests, cost, unpriced) in sums.items()}


def _observed(pages: list[dict[str, Any]], group_by: tuple[str, ...]) -> dict[tuple[Any, ...], tuple[int, int, Decimal | None]]:
    seen: dict[tuple[Any, ...], tuple[int, int, Decimal | None]] = {}
    for page in pages:
        for bucket in page["data"]:
            for result in bucket["results"]:
                assert result["object"] == "organization.usage.images.result"
                assert result["project_id"] is None
                for name in RESULT_FIELDS:
                    if name not in group_by:
                        assert result[name] is None, (name, group_by)
                key = (bucket["start_time"], *(result[name] for name in group_by))
                assert key not in seen, f"{key} twice"
                cost = result["cost"]
                assert cost is None or (cost["currency"] == "usd" and isinstance(cost["value"], float))
                seen[key] = (result["images"], result["num_model_requests"], None if cost is None else Decimal(repr(cost["value"])))
    return seen


GROUPINGS = [combo for size in range(0, 7) for combo in itertools.combinations(RESULT_FIELDS, size)]


@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda combo: "+".join(combo) or "none")
def test_every_grouping_sums_the_counters_of_its_group(group_by: tuple[str, ...]) -> None:
    items = _spread()
    query = _page_of(NOV_1, limit=31, **({"group_by[]": list(group_by)} if group_by else {}))
    page = usage_page(query, items, now=NOV_1)
    assert _observed([page], group_by) == _expected(items, group_by)


def test_pages_walked_through_next_page_cover_the_range_once() -> None:
    items = _spread()
    first = _page_of(NOV_1 + 3 * HOUR, limit=3, **{"group_by[]": ["model", "user_id"]})
    pages, query = [], first
    while True:
        pages.append(usage_page(query, items, now=NOV_1))
        assert len(pages[-1]["data"]) <= 3
        if not pages[-1]["has_more"]:
            break
        assert isinstance(pages[-1]["next_page"], str)
        query = UsageQuery.from_params({**_params(first), "group_by[]": ["model", "user_id"], "page": [pages[-1]["next_page"]]})
    starts = [bucket["start_time"] for page in pages for bucket in page["data"]]
    assert starts == [NOV_1 + n * DAY for n in range(101)]  # the last holds end_time - 1: 100 days and 3 hours on
    assert len(pages) == 34 and pages[-1]["next_page"] is None
    assert _observed(pages, ("model", "user_id")) == _expected(items, ("model", "user_id"))


def test_cost_is_null_when_any_request_of_the_group_was_unpriced() -> None:
    items = [
        item(NOV_1, model="a", cost_usd=Decimal("0.04")),
        item(NOV_1, model="b", cost_usd=Decimal("0.04"), size="1536x1024"),
        item(NOV_1, model="b", cost_usd=Decimal(0), unpriced=1),
    ]
    by_model = usage_page(_page_of(NOV_1, limit=1, **{"group_by[]": ["model"]}), items, now=NOV_1)["data"][0]["results"]
    assert {result["model"]: result["cost"] for result in by_model} == {"a": {"value": 0.04, "currency": "usd"}, "b": None}
    (everything,) = usage_page(_page_of(NOV_1, limit=1), items, now=NOV_1)["data"][0]["results"]
    assert everything["cost"] is None and everything["images"] == 3 and everything["num_model_requests"] == 3
    by_size = usage_page(_page_of(NOV_1, limit=1, **{"group_by[]": ["model", "size"]}), items, now=NOV_1)["data"][0]["results"]
    assert {(result["model"], result["size"]): result["cost"] for result in by_size} == {
        ("a", "1024x1024"): {"value": 0.04, "currency": "usd"},
        ("b", "1536x1024"): {"value": 0.04, "currency": "usd"},
        ("b", "1024x1024"): None,
    }


def test_cost_is_the_exact_decimal_sum() -> None:
    # As floats, 0.1 + 0.2 is 0.30000000000000004; the Decimal sum converted once is 0.3.
    items = [item(NOV_1, cost_usd=Decimal("0.1"), user_id="x"), item(NOV_1, cost_usd=Decimal("0.2"), user_id="y")]
    (result,) = usage_page(_page_of(NOV_1, limit=1), items, now=NOV_1)["data"][0]["results"]
    assert result["cost"] == {"value": 0.3, "currency": "usd"}
    many = [item(NOV_1, cost_usd=Decimal("0.011"), user_id=str(n)) for n in range(1000)]
    (result,) = usage_page(_page_of(NOV_1, limit=1), many, now=NOV_1)["data"][0]["results"]
    assert result["cost"]["value"] == 11.0


@pytest.mark.parametrize(
    ("params", "kept"),
    [
        ({"models[]": ["dall-e-3"]}, lambda c: c.model == "dall-e-3"),
        ({"sizes[]": ["1536x1024", "256x256"]}, lambda c: c.size == "1536x1024"),
        ({"sources[]": ["image.edit"]}, lambda c: c.source == "image.edit"),
        ({"user_ids[]": ["u1"]}, lambda c: c.user_id == "u1"),
        ({"api_key_ids[]": ["key-bbbbbbbbbbbbbbbb"]}, lambda c: c.api_key_id == "key-bbbbbbbbbbbbbbbb"),
        ({"models[]": ["gpt-image-1"], "user_ids": ["u1", "u2"]}, lambda c: c.model == "gpt-image-1" and c.user_id is not None),
        ({"project_ids[]": ["proj_abc"]}, lambda c: False),
        ({"models[]": ["nope"]}, lambda c: False),
    ],
)
def test_filters(params: dict[str, list[str]], kept: Any) -> None:
    items = _spread()
    group_by = ("model", "size", "source", "user_id", "api_key_id")
    page = usage_page(_page_of(NOV_1, limit=31, **params, **{"group_by[]": list(group_by)}), items, now=NOV_1)
    wanted = [counter for counter in items if kept(counter)]
    assert _observed([page], group_by) == _expected(wanted, group_by)
    assert len(page["data"]) == 31  # filtered out or not, every bucket is there


def test_the_page_validates_as_the_openai_sdks_own_model() -> None:
    items = _spread()
    page = usage_page(
        _page_of(NOV_1, limit=4, **{"group_by[]": ["model", "size", "source", "user_id", "api_key_id", "project_id"]}), items, now=NOV_1
    )
    parsed = UsageImagesResponse.model_validate(page)
    assert parsed.has_more and parsed.next_page == page["next_page"] and parsed.object == "page"
    results = [result for bucket in parsed.data for result in bucket.results]
    assert results and all(isinstance(result, DataResultOrganizationUsageImagesResult) for result in results)
    sent = [result for bucket in page["data"] for result in bucket["results"]]
    for result, raw in zip(results, sent, strict=True):
        assert isinstance(result, DataResultOrganizationUsageImagesResult)
        assert (result.images, result.num_model_requests, result.model, result.user_id) == (
            raw["images"],
            raw["num_model_requests"],
            raw["model"],
            raw["user_id"],
        )
        assert result.model_extra == {"cost": raw["cost"]}
    assert any(raw["cost"] is None for raw in sent) and any(raw["cost"] is not None for raw in sent)
