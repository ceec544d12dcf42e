"""Property-based fuzzing of the local stack over HTTP (front -> Lambda RIE -> handler -> S3 server).

Two generators feed one thread pool against a stack of the module's own (its bucket holds only what this run wrote):
- schemathesis, from the API's generated OpenAPI document (GET /openapi.json): every operation, positive and negative
  cases, checked with its ``not_a_server_error``, ``response_schema_conformance`` and ``content_type_conformance``;
- hypothesis strategies of ours for the request body: random JSON values, wrong types, unknown fields, huge ``n``,
  unicode and blank prompts, deeply nested JSON, non-UTF-8 bytes, oversized bodies, wrong content types and methods.

Cases are generated first, then sent concurrently (the stack answers ~5x faster with 8 requests in flight than one at
a time). Every answer must be below 500; every 4xx must be the OpenAI error envelope; afterwards every object under
``images/`` must belong to a request that was answered 200, with exactly as many objects as images answered.
The counts (requests, statuses) are printed at the end of the session. ``FUZZ_SEED`` replays a run.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from devtools.local import LocalStack
from tests.e2e.conftest import deployed_url, own_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
VARIATIONS = "/v1/images/variations"
IMAGE_ROUTES = (GENERATIONS, EDITS, VARIATIONS)
THREADS = 8
MIN_REQUESTS = 5_000
# Cases per (operation, mode) for schemathesis; the rest come from our own strategies.
SCHEMATHESIS_CASES = {GenerationMode.POSITIVE: 700, GenerationMode.NEGATIVE: 1_300}
SCHEMATHESIS_OTHER_CASES = 150  # each other operation that takes parameters (the job id)
HYPOTHESIS_CASES = 3_400
UPLOAD_CASES = 500
MAX_REQUEST_BYTES = 256 * 1024  # the function's default MAX_REQUEST_BYTES
FUZZ_SEED = int(os.environ.get("FUZZ_SEED") or secrets.randbits(32))


@dataclass
class Exchange:
    source: str
    method: str
    path: str
    status: int
    request_id: str | None
    body: bytes
    request: str  # how to replay it, for failure messages
    notes: list[str] = field(default_factory=list)  # failed checks of the generator (schemathesis)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Tally:
    """Every exchange of the run, for the assertions that span the run and the printed summary."""

    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seconds: float = 0.0

    def add(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def summary(self) -> list[str]:
        by_source = Counter(exchange.source for exchange in self.exchanges)
        statuses = Counter(exchange.status for exchange in self.exchanges)
        histogram = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        sources = ", ".join(f"{source} {count}" for source, count in sorted(by_source.items()))
        rate = len(self.exchanges) / self.seconds if self.seconds else 0.0
        return [
            f"fuzz: {len(self.exchanges)} requests ({sources}) in {self.seconds:.1f} s ({rate:.0f}/s), seed {FUZZ_SEED}",
            f"fuzz: statuses {histogram}",
            f"fuzz: 5xx {sum(count for status, count in statuses.items() if status >= 500)}, "
            f"images written by 200s {sum(images_answered(exchange) for exchange in self.exchanges)}",
        ]


class SummaryPlugin:
    """Prints the counts in pytest's terminal summary (shown without ``-s``)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.tally.exchanges:
            terminalreporter.section("fuzzing the local stack")
            for line in self.tally.summary():
                terminalreporter.write_line(line)


def makes_images(exchange: Exchange) -> bool:
    """A POST to a route that makes images (generations, edits, variations); Powertools (as API Gateway) also serves
    them with a trailing slash, which the fuzzer sends now and then."""
    return exchange.method == "POST" and exchange.path.rstrip("/") in IMAGE_ROUTES


def images_answered(exchange: Exchange) -> int:
    if exchange.status != 200 or not makes_images(exchange):
        return 0
    return len(exchange.json()["data"])


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of this module's own: its bucket sees only the fuzz run's writes. Logs at WARNING (the 4xx of a fuzz
    run are not news)."""
    if deployed_url() is not None:
        pytest.skip("fuzzing needs the local stack (its S3 bucket is inspected)")
    stack = own_stack(
        tmp_path_factory,
        "fuzz-stack",
        workers=2,
        async_jobs=False,
        access_key=f"fuzz-{secrets.token_hex(4)}",
        secret_key=secrets.token_urlsafe(24),
        extra_env={"POWERTOOLS_LOG_LEVEL": "WARNING"},
    )
    with stack:
        yield stack


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest, fuzz_stack: LocalStack) -> Tally:
    assert stored_keys(fuzz_stack) == stored_keys(fuzz_stack, "inputs/") == [], "the fuzz bucket must start empty"
    tally = Tally()
    request.config.pluginmanager.register(SummaryPlugin(tally), f"fuzz-summary-{id(tally)}")
    return tally


def stored_keys(stack: LocalStack, prefix: str = "images/") -> list[str]:
    pages = stack.s3_client().get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def problems(exchange: Exchange) -> list[str]:
    """What is wrong with one answer: a 5xx, a 4xx not in the OpenAI error shape, a 200 generation without images."""
    status = exchange.status
    if exchange.notes:
        return exchange.notes
    if not exchange.request_id:
        return [f"{status} without an x-amzn-RequestId header"]
    if status >= 500:
        return [f"{status} (a 5xx)"]
    if status == 200 and makes_images(exchange):
        body = exchange.json()
        if not (isinstance(body.get("created"), int) and isinstance(body.get("data"), list) and body["data"]):
            return ["200 without images"]
    if not 400 <= status < 500:
        return []
    try:
        body = exchange.json()
    except ValueError:
        return [f"{status} with a body that is not JSON: {exchange.body[:200]!r}"]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"}:
        return [f"{status} not in the OpenAI error envelope: {exchange.body[:300]!r}"]
    shape = {"message": (str,), "type": (str,), "param": (str, type(None)), "code": (str, type(None))}
    wrong = [name for name, types in shape.items() if name not in error or not isinstance(error[name], types)]
    if wrong or set(error) != set(shape) or not error["message"]:
        return [f"{status} error fields {wrong or sorted(error)} wrong: {exchange.body[:300]!r}"]
    return []


def run_concurrently(cases: Sequence[Any], send: Callable[[Any], Exchange], tally: Tally) -> list[tuple[Exchange, list[str]]]:
    """Send every case on THREADS threads; the exchanges with problems."""

    def one(case: Any) -> tuple[Exchange, list[str]]:
        exchange = send(case)
        tally.add(exchange)
        return exchange, problems(exchange)

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS, thread_name_prefix="fuzz") as pool:
        results = list(pool.map(one, cases))
    tally.seconds += time.monotonic() - started
    return [(exchange, found) for exchange, found in results if found]


def report(failures: list[tuple[Exchange, list[str]]], total: int) -> str:
    lines = [f"{len(failures)} of {total} requests failed (seed {FUZZ_SEED}); the first ones:"]
    lines += [f"- {'; '.join(found)}\n  {exchange.request[:500]}" for exchange, found in failures[:10]]
    return "\n".join(lines)


def collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy`` (generated only: sending happens afterwards, concurrently)."""
    examples: list[Any] = []

    @seed(FUZZ_SEED)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(example: Any) -> None:
        examples.append(example)

    draw()
    return examples


# --- schemathesis: every operation of the generated OpenAPI document ---------------------------------------------

_sessions = threading.local()


def session() -> requests.Session:
    if getattr(_sessions, "session", None) is None:
        _sessions.session = requests.Session()
    return _sessions.session  # type: ignore[no-any-return]


def test_schemathesis_over_every_operation_of_the_openapi_document(fuzz_stack: LocalStack, tally: Tally) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {("POST", GENERATIONS), ("GET", "/v1/models"), ("GET", "/health")}
    cases: list[Any] = []
    for operation in operations:
        for mode, count in SCHEMATHESIS_CASES.items():
            if operation.path in (EDITS, VARIATIONS) and mode == GenerationMode.NEGATIVE:
                # schemathesis cannot mutate a multipart file part ("Unsupported type: 'Binary'"); the uploads'
                # negative cases are test_hypothesis_edit_and_variation_uploads'
                continue
            if operation.path != GENERATIONS:
                has_parameters = bool(list(operation.iter_parameters()))
                count = SCHEMATHESIS_OTHER_CASES if has_parameters else 1
            try:
                cases += collect(operation.as_strategy(generation_mode=mode), count)
            except Unsatisfiable:
                continue  # no negative case exists for an operation without inputs
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]

    def send(case: Any) -> Exchange:
        response = case.call(base_url=fuzz_stack.base_url, session=session(), timeout=60)
        exchange = Exchange(
            "schemathesis",
            case.method.upper(),
            case.formatted_path,
            response.status_code,
            next(iter(response.headers.get("x-amzn-requestid", [])), None),  # lower-case names, lists of values
            response.content,
            case.as_curl_command(),
        )
        try:
            case.validate_response(response, checks=checks)
        except Exception as failure:  # a group of failed schemathesis checks
            exchange.notes.append(f"schemathesis: {failure}"[:1500])
        return exchange

    failures = run_concurrently(cases, send, tally)
    assert not failures, report(failures, len(cases))


# --- hypothesis: our own request strategies -----------------------------------------------------------------------

FIELDS = (
    "prompt",
    "model",
    "n",
    "quality",
    "response_format",
    "responseFormat",
    "size",
    "style",
    "user",
    "output_format",
    "outputFormat",
    "output_compression",
    "background",
    "moderation",
)
MODELS = ("local", "gpt-image-1.5", "gpt-image-2.5-sunburst", "dall-e-3", "gpt-image-2", "LOCAL", "", " local", "local\x00")
CHEAP_SIZES = ("256x256", "512x512")
SIZES = (*CHEAP_SIZES, "1024x1024", "1792x1024", "auto", "640x480", "0x0", "-256x-256", "256X256", "256x256 ", "１２８x１２８", "9" * 40)
JSON_CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "")
OTHER_CONTENT_TYPES = (
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzz",
    "application/xml",
    "image/png",
    "application/json-patch+json",
    "*/*",
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "\u3000", "\u200b", "\x00", "\ud800", "\U0001f98a", "NaN", "1e999"])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12
)
blank = st.text(alphabet=" \t\r\n\u3000\u00a0\u2028\u200b\ufeff", max_size=8)
prompts = st.one_of(
    st.text(min_size=1, max_size=200),
    blank,
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=50),
    st.sampled_from(["\ud800", "a\x00b", "\u202eright-to-left", "🦊" * 500, "x" * 32_001, "x" * 1_001]),
)
huge_numbers = st.one_of(
    st.integers(min_value=11, max_value=2**64),
    st.integers(max_value=0),
    st.integers(min_value=20, max_value=4_000).map(lambda digits: int("9" * digits)),  # json.dumps stops at 4,300
    st.sampled_from([1.5, -0.0, 1e308, 10.0, 2**63]),
)


@st.composite
def deep_json(draw: st.DrawFn) -> str:
    """Arrays and objects nested 50 to 20,000 deep, at the top or as a field's value."""
    depth = draw(st.integers(min_value=50, max_value=20_000))
    openers = draw(st.lists(st.sampled_from(["[", '{"a":']), min_size=1, max_size=3))
    stack = [openers[index % len(openers)] for index in range(depth)]
    closing = "".join("]" if opener == "[" else "}" for opener in reversed(stack))
    inner = "".join(stack) + "1" + closing
    return draw(st.sampled_from([inner, f'{{"prompt": "x", "n": {inner}}}', f'{{"prompt": {inner}}}']))


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid options with one or two things wrong (or nothing: some succeed and write images)."""
    body: dict[str, Any] = {"prompt": draw(st.text(min_size=1, max_size=60).filter(str.strip))}
    body["size"] = draw(st.sampled_from(CHEAP_SIZES))
    if draw(st.booleans()):
        body["n"] = draw(st.integers(min_value=1, max_value=3))
    if draw(st.booleans()):
        body[draw(st.sampled_from(["response_format", "responseFormat"]))] = draw(st.sampled_from(["url", "b64_json"]))
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from(MODELS))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        name = draw(st.sampled_from(FIELDS))
        body[name] = draw(
            st.one_of(
                json_values,
                prompts,
                huge_numbers,
                st.sampled_from(SIZES),
                st.sampled_from(["hd", "standard", "ultra", "vivid", "png", "webp", "transparent", "low"]),
            )
        )
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # an unknown field, or a typo of a known one
        body[draw(st.sampled_from(["reponseFormat", "sizes", "N", "prompt ", "negative_prompt"]) | st.text(max_size=12))] = draw(
            json_values
        )
    if body.get("size") not in (*CHEAP_SIZES, "auto") or not isinstance(body.get("n", 1), int):
        return body
    if body.get("size") == "auto" or body.get("n", 1) > 3:
        body["size"] = draw(st.sampled_from(CHEAP_SIZES))  # keeps successful requests cheap to draw
    return body


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    content_type: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def replay(self) -> str:
        headers = " ".join(f"-H '{name}: {value}'" for name, value in self.headers)
        content_type = f"-H 'content-type: {self.content_type}' " if self.content_type is not None else ""
        return f"curl -X {self.method} '{self.path}' {content_type}{headers} --data-binary {self.body[:300]!r} ({len(self.body)} bytes)"


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def non_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


bodies = st.one_of(
    near_valid().map(encode),
    near_valid().map(encode),
    near_valid().map(encode),
    json_values.map(encode),  # any JSON document: arrays, strings, numbers, null, objects of random fields
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=6).map(encode),  # wrong types
    st.fixed_dictionaries({"prompt": prompts}).map(encode),
    st.fixed_dictionaries({"prompt": st.just("x"), "n": huge_numbers}).map(encode),
    st.integers(min_value=20, max_value=6_000).map(lambda digits: ('{"prompt": "x", "n": ' + "9" * digits + "}").encode()),
    deep_json().map(str.encode),
    st.binary(max_size=200).filter(non_utf8),  # non-UTF-8 bytes
    near_valid().map(lambda body: encode(body).replace(b'"', b'"\xff', 1)),  # valid JSON but for one byte
    st.sampled_from([b"", b"null", b"{}", b"[]", b'"prompt"', b"{", b'{"prompt": "x",}', b'{"prompt": NaN}', b"\xef\xbb\xbf{}"]),
    st.sampled_from(
        [b'{"prompt": "x", "prompt": 1}', b'{"prompt": "x"} trailing', b'{"prompt": "\\ud800"}', b'{"prompt": "x", "n": 1e999}']
    ),
    st.integers(min_value=MAX_REQUEST_BYTES - 64, max_value=MAX_REQUEST_BYTES + 4096).map(
        lambda size: encode({"prompt": "x" * (size - 14)})
    ),  # around the body limit (413 above it)
)


@st.composite
def raw_requests(draw: st.DrawFn) -> RawRequest:
    body = draw(bodies)
    kind = draw(st.integers(min_value=0, max_value=19))
    if kind == 0:  # another method, or another route, with the same body
        method = draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST"]))
        path = draw(
            st.sampled_from([GENERATIONS, "/v1/images/edits", "/v1/models", "/health", "/v1/images/generations/", "/V1/IMAGES/GENERATIONS"])
            | st.text(min_size=1, max_size=30).map(lambda text: "/v1/images/jobs/" + quote(text, safe=""))
            | st.text(max_size=30).map(lambda text: "/" + quote(text, safe="/"))
        )
    else:
        method, path = "POST", GENERATIONS
    if kind == 1:
        content_type: str | None = draw(
            st.sampled_from(OTHER_CONTENT_TYPES) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30)
        )
    elif kind == 2:
        content_type = None  # no Content-Type header at all
    else:
        content_type = draw(st.sampled_from(JSON_CONTENT_TYPES))
    headers: list[tuple[str, str]] = []
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        headers.append(("Prefer", draw(st.sampled_from(["respond-async", "respond-async, wait=10", "wait=1", "", "RESPOND-ASYNC"]))))
    if draw(st.integers(min_value=0, max_value=14)) == 0:
        headers.append(("Accept", draw(st.sampled_from(["application/json", "text/html", "image/png", "*/*", ""]))))
    return RawRequest(method, path, content_type, body, tuple(headers))


_clients = threading.local()


def client(base_url: str) -> httpx.Client:
    if getattr(_clients, "client", None) is None:
        _clients.client = httpx.Client(base_url=base_url, timeout=60)
    return _clients.client  # type: ignore[no-any-return]


def send_raw(base_url: str, source: str, case: RawRequest) -> Exchange:
    """One raw request as the fuzzer built it (its own Content-Type, or none), and its answer."""
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    response = client(base_url).request(case.method, case.path, content=case.body, headers=headers)
    return Exchange(
        source, case.method, case.path, response.status_code, response.headers.get("x-amzn-RequestId"), response.content, case.replay()
    )


def test_hypothesis_request_bodies_methods_and_content_types(fuzz_stack: LocalStack, tally: Tally) -> None:
    cases = collect(raw_requests(), HYPOTHESIS_CASES)

    failures = run_concurrently(cases, partial(send_raw, fuzz_stack.base_url, "hypothesis"), tally)
    assert not failures, report(failures, len(cases))
    kinds = Counter(exchange.status for exchange in tally.exchanges if exchange.source == "hypothesis")
    assert kinds[200] and kinds[400] and kinds[413], f"the strategies should reach successes, 400s and 413s: {kinds}"


@pytest.mark.parametrize(
    ("size", "code"),
    [
        (MAX_REQUEST_BYTES + 1, "payload_too_large"),  # the function's limit
        (10 * 1024 * 1024 + 1, "request_too_large"),  # API Gateway's own 10 MB limit (the front), template.yaml's answer
    ],
)
def test_oversized_bodies_are_413_in_the_openai_shape(fuzz_stack: LocalStack, tally: Tally, size: int, code: str | None) -> None:
    body = b'{"prompt": "' + b"x" * (size - 14) + b'"}'
    response = httpx.post(f"{fuzz_stack.base_url}{GENERATIONS}", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    exchange = Exchange(
        "explicit", "POST", GENERATIONS, response.status_code, response.headers.get("x-amzn-RequestId"), response.content, f"{size} bytes"
    )
    tally.add(exchange)
    assert (response.status_code, problems(exchange)) == (413, [])
    assert response.json()["error"]["code"] == code


# --- hypothesis: edit and variation uploads ------------------------------------------------------------------------


def _png(size: tuple[int, int], mode: str = "RGB", transparent_left: bool = False) -> bytes:
    import io

    from PIL import Image as PILImage

    image = PILImage.new(mode, size, (120, 30, 200, 255) if mode == "RGBA" else (120, 30, 200))
    if transparent_left:
        image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# Small real images (cheap to edit), masks that fit and masks that do not, and bytes that are no image.
IMAGES = {
    "png16": _png((16, 16)),
    "png24x16": _png((24, 16)),
    "rgba16": _png((16, 16), "RGBA", transparent_left=True),
}
MASKS = {"mask16": _png((16, 16), "RGBA", transparent_left=True), "mask24": _png((24, 24), "RGBA", True), "opaque16": _png((16, 16))}
JUNK = (b"", b"GIF89a", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x00\x00\x00WEBP", b"<svg/>", b"BM")
UPLOAD_FIELDS = ("prompt", "model", "n", "size", "response_format", "quality", "input_fidelity", "output_format", "background", "user")
real_images = st.sampled_from(list(IMAGES.values()))
image_bytes = real_images | real_images | real_images | st.sampled_from(JUNK) | st.binary(max_size=64)
# No name that needs DNS: the stack has no network, and what image_url fetching refuses has its own suite.
image_urls = st.one_of(
    st.sampled_from(list(IMAGES.values()) + list(MASKS.values())).map(
        lambda data: "data:image/png;base64," + base64.b64encode(data).decode()
    ),
    st.sampled_from(["data:image/png;base64,!!", "data:,", "file:///etc/passwd", "https://169.254.169.254/latest", "http://127.0.0.1:1/x"]),
    st.text(max_size=30),
)


@st.composite
def upload_requests(draw: st.DrawFn) -> RawRequest:
    """An edit or a variation, as multipart (the SDKs' form: image/image[], mask) or as JSON by reference: mostly
    valid, with one or two things wrong."""
    path = draw(st.sampled_from([EDITS, EDITS, VARIATIONS]))
    fields: dict[str, Any] = {"model": "local"}
    if path == EDITS:
        fields["prompt"] = draw(st.text(min_size=1, max_size=40).filter(str.strip))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        name = draw(st.sampled_from(UPLOAD_FIELDS) | st.text(min_size=1, max_size=10))
        fields[name] = draw(
            st.sampled_from(["1", "2", "11", "auto", "16x16", "url", "b64_json", "high", "low", "png", "gpt-image-2.5-sunburst", ""])
            | st.text(max_size=12)
        )
    if draw(st.booleans()):  # JSON: the images by reference
        if path == EDITS:
            fields["images"] = [{"image_url": url} for url in draw(st.lists(image_urls, min_size=0, max_size=3))]
            if draw(st.booleans()):
                fields["mask"] = {"image_url": draw(image_urls)}
        else:
            fields["image"] = draw(st.sampled_from([{"image_url": draw(image_urls)}, {"file_id": "file-1"}, {}, "x"]))
        return RawRequest("POST", path, "application/json", encode(fields))
    count = draw(st.integers(min_value=0, max_value=3)) if path == EDITS else draw(st.integers(min_value=0, max_value=2))
    name = "image[]" if count > 1 else "image"
    files = [
        (name, (f"in{index}.png", draw(image_bytes), draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain"]))))
        for index in range(count)
    ]
    if path == EDITS and draw(st.booleans()):
        files.append(("mask", ("mask.png", draw(st.sampled_from(list(MASKS.values())) | image_bytes), "image/png")))
    data = {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}
    if not files:  # httpx sends a form without files urlencoded: the fields go as file-less parts, still multipart
        files = [(key, (None, value.encode(), None)) for key, value in data.items()]
        data = {}
    request = httpx.Request("POST", f"http://fuzz{path}", data=data, files=files)
    body = request.read()
    return RawRequest("POST", path, request.headers["content-type"], body)


def test_hypothesis_edit_and_variation_uploads(fuzz_stack: LocalStack, tally: Tally) -> None:
    cases = collect(upload_requests(), UPLOAD_CASES)

    failures = run_concurrently(cases, partial(send_raw, fuzz_stack.base_url, "uploads"), tally)
    assert not failures, report(failures, len(cases))
    kinds = Counter(exchange.status for exchange in tally.exchanges if exchange.source == "uploads")
    assert kinds[200] and kinds[400], f"the strategies should reach successes and 400s: {kinds}"


# --- across the run -------------------------------------------------------------------------------------------------


def test_only_successful_requests_left_objects_in_s3(fuzz_stack: LocalStack, tally: Tally) -> None:
    if not tally.exchanges:
        pytest.skip("no fuzz run in this session")
    answered = Counter({exchange.request_id: images_answered(exchange) for exchange in tally.exchanges if images_answered(exchange)})
    stored = Counter(key.split("/")[4] for key in stored_keys(fuzz_stack))
    rejected = {exchange.request_id for exchange in tally.exchanges if exchange.status != 200}
    assert not set(stored) & rejected, f"rejected requests left objects: {sorted(set(stored) & rejected)[:10]}"
    by_id = {exchange.request_id: exchange for exchange in tally.exchanges}
    unexpected = [(rid, by_id.get(rid)) for rid in stored if stored[rid] != answered.get(rid)][:5]
    assert stored == answered, f"every object belongs to a 200 answer, and every answered image is stored: {unexpected}"
    # And the input images of edits and variations were kept only for requests that were answered 200 (the local
    # provider cannot fail once they are stored): a refused request wrote nothing at all
    inputs = {key.split("/")[4] for key in stored_keys(fuzz_stack, "inputs/")}
    assert not inputs & rejected, f"rejected requests left inputs: {sorted(inputs & rejected)[:10]}"
    assert inputs <= set(answered), sorted(inputs - set(answered))[:10]


def test_the_run_reached_its_counts(tally: Tally) -> None:
    """The counts themselves are printed in the terminal summary at the end of the session."""
    if not {"schemathesis", "hypothesis"} <= {exchange.source for exchange in tally.exchanges}:
        pytest.skip("only part of the fuzz module ran")
    assert len(tally.exchanges) >= MIN_REQUESTS, tally.summary()
