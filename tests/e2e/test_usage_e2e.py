"""Usage, cost and budgets end to end (docs/usage.md): a local stack of its own with API keys, a usage table in moto,
BUDGETS and an admin key (USAGE_ADMIN_KEYS), driven by the official Python SDK as a client of OpenAI's Usage API
drives it: generations, an edit, a variation, an idempotent replay and an async job recorded exactly once; each key reading its
own usage and the admin key every key's; a monthly budget stopping a key after exactly its images, with one request
and no retry, also under concurrent requests."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx2
import pytest
from openai import OpenAI, RateLimitError
from PIL import Image as PILImage

from devtools.local import LocalStack
from imagegen.auth import key_fingerprint
from tests.e2e.conftest import own_stack

pytestmark = pytest.mark.e2e


def _key(name: str) -> str:
    return f"sk-usage-{name}-{secrets.token_hex(10)}"


ADMIN, ALICE, BOB, CAPPED, CROWDED, REPLAYED, QUEUED, NODE, CACHER = (
    _key(name) for name in ("admin", "alice", "bob", "capped", "crowded", "replayed", "queued", "node", "cacher")
)
VARIED = _key("varied")  # its only requests are variations
CAPPED_IMAGES, CROWDED_IMAGES, CROWD = 3, 4, 8
BUDGETS = {
    "keys": {
        key_fingerprint(CAPPED): {"images_per_month": CAPPED_IMAGES},
        key_fingerprint(CROWDED): {"images_per_month": CROWDED_IMAGES},
        # a budget the async job reserves from in the worker (and settles there)
        key_fingerprint(QUEUED): {"images_per_month": 100, "usd_per_month": 1},
    }
}
# Every usage read covers this test module's runs (a bucket per minute, all of them present).
STARTED = int(time.time()) - 60


@pytest.fixture(scope="module")
def usage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = own_stack(
        tmp_path_factory,
        "usage",
        workers=4,  # four requests of the crowd in the functions at once, racing for the budget's last images
        api_keys=[ADMIN, ALICE, BOB, CAPPED, CROWDED, REPLAYED, QUEUED, NODE, CACHER, VARIED],
        # The answer cache on too (every test but the cache's sends each request once, or with an Idempotency-Key)
        extra_env={"BUDGETS": json.dumps(BUDGETS), "USAGE_ADMIN_KEYS": key_fingerprint(ADMIN), "CACHE_TTL_SECONDS": "600"},
    )
    with stack:
        yield stack


def client(stack: LocalStack, key: str, **options: Any) -> OpenAI:
    """The SDK as a Usage API client uses it: the key as api_key and as admin_api_key (the usage call sends that)."""
    return OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, admin_api_key=key, **options)


def usage(stack: LocalStack, key: str, group_by: list[Any]) -> list[dict[str, Any]]:
    """Every result of the Usage API's page for ``key`` since the module started, as the SDK parsed them: its fields
    and (``model_extra``) our ``cost``; the buckets' own fields checked on the way."""
    page = client(stack, key).admin.organization.usage.images(start_time=STARTED, group_by=group_by, bucket_width="1m")
    assert page.has_more is False and page.data
    results = []
    for bucket in page.data:
        assert bucket.end_time - bucket.start_time == 60 and bucket.start_time % 60 == 0
        for result in bucket.results:
            fields = result.model_dump(exclude_none=False)
            fields["cost"] = (result.model_extra or {}).get("cost")
            results.append(fields)
    return results


def totals(results: list[dict[str, Any]], *group: str) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(images, requests) summed over the buckets, by ``group``'s fields."""
    summed: dict[tuple[Any, ...], tuple[int, int]] = {}
    for result in results:
        key = tuple(result[name] for name in group)
        images, requests = summed.get(key, (0, 0))
        summed[key] = (images + result["images"], requests + result["num_model_requests"])
    return summed


def zero_usd(cost: Any) -> bool:
    """A cost of exactly 0 USD (a number: not null, which would say the price is unknown)."""
    return (
        isinstance(cost, dict)
        and cost.keys() == {"value", "currency"}
        and cost["currency"] == "usd"
        and (type(cost["value"]) in (int, float) and cost["value"] == 0)
    )


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGBA", size, (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


def test_generations_and_an_edit_are_recorded_with_their_cost(usage_stack: LocalStack) -> None:
    sdk = client(usage_stack, ALICE)
    assert len(sdk.images.generate(model="local", prompt="a red fox", size="256x256", n=2).data or []) == 2
    assert len(sdk.images.generate(model="local", prompt="a blue fox", size="256x256").data or []) == 1
    edited = sdk.images.edit(model="local", image=("fox.png", png(), "image/png"), prompt="make it green")
    assert len(edited.data or []) == 1

    results = usage(usage_stack, ALICE, ["model", "source"])

    assert totals(results, "model", "source") == {("local", "image.generation"): (3, 2), ("local", "image.edit"): (1, 1)}
    # The local model's explicit price is 0: a cost of 0 USD, not an unknown one (null is for unpriced models)
    assert all(zero_usd(result["cost"]) for result in results), results
    # Not grouped by these: OpenAI's nulls
    assert {(result["api_key_id"], result["user_id"], result["size"]) for result in results} == {(None, None, None)}


# The SDK marks create_variation deprecated (OpenAI retired dall-e-2); this API still serves variations.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_a_variation_is_recorded_as_image_variation(usage_stack: LocalStack) -> None:
    sdk = client(usage_stack, VARIED)
    varied = sdk.images.create_variation(model="local", image=("fox.png", png(), "image/png"), n=2)
    assert len(varied.data or []) == 2

    results = usage(usage_stack, VARIED, ["model", "source"])

    assert totals(results, "model", "source") == {("local", "image.variation"): (2, 1)}
    assert all(zero_usd(result["cost"]) for result in results), results


def test_a_key_sees_its_own_usage_and_the_admin_key_sees_every_key(usage_stack: LocalStack) -> None:
    client(usage_stack, BOB).images.generate(model="local", prompt="a grey wolf", size="256x256", user="bob-user-1")
    client(usage_stack, ALICE).images.generate(model="local", prompt="a red fox, again", size="256x256")

    bob = totals(usage(usage_stack, BOB, ["api_key_id", "user_id"]), "api_key_id", "user_id")
    everyone = totals(usage(usage_stack, ADMIN, ["api_key_id"]), "api_key_id")

    assert bob == {(key_fingerprint(BOB), "bob-user-1"): (1, 1)}
    assert everyone[(key_fingerprint(BOB),)] == (1, 1)
    assert everyone[(key_fingerprint(ALICE),)][0] >= 1
    # A key filtering for another's usage gets nothing of it
    alice_for_bob = client(usage_stack, ALICE).admin.organization.usage.images(
        start_time=STARTED, bucket_width="1m", api_key_ids=[key_fingerprint(BOB)]
    )
    assert [result for bucket in alice_for_bob.data for result in bucket.results] == []


def test_a_budget_gives_exactly_its_images_then_one_request_answers_insufficient_quota(usage_stack: LocalStack) -> None:
    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(str(request.url.path))]}
    # The SDK's default retries (2) stay on: the 429 says x-should-retry: false, so one request is all it sends
    sdk = client(usage_stack, CAPPED, http_client=httpx2.Client(event_hooks=hooks))
    for number in range(CAPPED_IMAGES):
        assert sdk.images.generate(model="local", prompt=f"fox {number}", size="256x256").data, number
    assert len(sent) == CAPPED_IMAGES

    with pytest.raises(RateLimitError) as refused:
        sdk.images.generate(model="local", prompt="one too many", size="256x256")

    assert len(sent) == CAPPED_IMAGES + 1
    assert (refused.value.status_code, refused.value.code, refused.value.type) == (429, "insufficient_quota", "insufficient_quota")
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "this API key" in refused.value.message and f"{CAPPED_IMAGES} images" in refused.value.message
    # Counted: the images made, nothing for the refusal
    assert totals(usage(usage_stack, CAPPED, ["model"]), "model") == {("local",): (CAPPED_IMAGES, CAPPED_IMAGES)}


def test_concurrent_requests_against_a_budget_take_exactly_its_images(usage_stack: LocalStack) -> None:
    sdk = client(usage_stack, CROWDED, max_retries=0, timeout=120)
    start = threading.Barrier(CROWD)

    def one(number: int) -> str:
        start.wait()
        try:
            sdk.images.generate(model="local", prompt=f"crowd {number}", size="256x256")
        except RateLimitError as error:
            return str(error.code)
        return "generated"

    with ThreadPoolExecutor(CROWD) as pool:
        outcomes = list(pool.map(one, range(CROWD)))

    assert sorted(outcomes) == ["generated"] * CROWDED_IMAGES + ["insufficient_quota"] * (CROWD - CROWDED_IMAGES)
    assert totals(usage(usage_stack, CROWDED, ["model"]), "model") == {("local",): (CROWDED_IMAGES, CROWDED_IMAGES)}


def test_an_idempotent_replay_is_not_counted_again(usage_stack: LocalStack) -> None:
    sdk = client(usage_stack, REPLAYED)
    headers = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    first = sdk.images.with_raw_response.generate(model="local", prompt="a lighthouse", size="256x256", n=2, extra_headers=headers)
    again = sdk.images.with_raw_response.generate(model="local", prompt="a lighthouse", size="256x256", n=2, extra_headers=headers)

    assert (first.headers["Idempotent-Replayed"], again.headers["Idempotent-Replayed"]) == ("false", "true")
    assert first.parse().created == again.parse().created
    assert totals(usage(usage_stack, REPLAYED, ["model"]), "model") == {("local",): (2, 1)}


def test_an_async_job_is_counted_once_for_the_key_that_queued_it(usage_stack: LocalStack) -> None:
    auth = {"Authorization": f"Bearer {QUEUED}"}
    body = {"prompt": "a lighthouse at dawn", "model": "local", "size": "256x256", "n": 2}
    queued = httpx.post(f"{usage_stack.base_url}/v1/images/generations", json=body, headers={**auth, "Prefer": "respond-async"}, timeout=30)
    assert queued.status_code == 202, queued.text
    deadline = time.monotonic() + 90
    while (job := httpx.get(f"{usage_stack.base_url}{queued.headers['Location']}", headers=auth, timeout=30).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "succeeded", job

    # Recorded by the worker, for the key (and its budget) that queued it; the local queue's redelivery window
    # (seconds) passes without a second count
    time.sleep(6)
    assert totals(usage(usage_stack, QUEUED, ["model", "source"]), "model", "source") == {("local", "image.generation"): (2, 1)}
    assert totals(usage(usage_stack, ADMIN, ["api_key_id"]), "api_key_id")[(key_fingerprint(QUEUED),)] == (2, 1)


def test_the_npm_sdk_reads_usage_through_its_admin_usage_call(usage_stack: LocalStack) -> None:
    from tests.e2e.test_node_sdk_e2e import JS_DIR, pinned_sdk_version

    node = shutil.which("node")
    installed = JS_DIR / "node_modules" / "openai" / "package.json"
    if node is None or not installed.is_file():
        pytest.fail("the npm SDK's e2e tests need node and `npm ci` in tests/e2e/js (make test-e2e)", pytrace=False)
    env = {**os.environ, "IMAGEGEN_BASE_URL": f"{usage_stack.base_url}/v1", "IMAGEGEN_API_KEY": NODE, "IMAGEGEN_START_TIME": str(STARTED)}
    ran = subprocess.run(
        [node, str(JS_DIR / "usage_e2e.mjs")], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)

    assert report["sdk"] == pinned_sdk_version() and report["generated"] == 2
    assert report["buckets"] >= 1
    assert totals(report["results"], "model", "source") == {("local", "image.generation"): (2, 1)}
    assert all(zero_usd(result["cost"]) for result in report["results"]), report


def test_a_cache_hit_is_recorded_at_no_cost_and_no_cache_generates_again(usage_stack: LocalStack) -> None:
    sdk = client(usage_stack, CACHER)

    def stored(answer: Any) -> tuple[int, str]:
        return answer.created, str(httpx.URL(answer.data[0].url).path)

    first = sdk.images.generate(model="local", prompt="a cached fox", size="256x256")
    hit = sdk.images.generate(model="local", prompt="a cached fox", size="256x256")
    fresh = sdk.images.generate(model="local", prompt="a cached fox", size="256x256", extra_headers={"Cache-Control": "no-cache"})

    assert stored(hit) == stored(first)  # the same stored image, its URL signed again
    assert stored(fresh)[1] != stored(first)[1]
    # Three answers, three requests counted, all at the local model's 0 USD (a hit is never billed)
    results = usage(usage_stack, CACHER, ["model"])
    assert totals(results, "model") == {("local",): (3, 3)}
    assert all(zero_usd(result["cost"]) for result in results), results
