"""Usage and budgets through the API handler and the service, over real HTTP: the fake OpenAI on loopback, the S3
server, moto's DynamoDB (the usage table). One record per billed generation with its cost from the price data,
the Usage API reading it back from the counters, a budget refusing before the provider is called and before
anything is written, a failed generation giving its reservation back, and a retried run counted once."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from functions.api import app
from imagegen.auth import key_fingerprint
from imagegen.deadline import Deadline
from imagegen.errors import InsufficientQuotaError
from imagegen.http import SERVED_BY_HEADER
from imagegen.options import ImageGenerationRequest
from imagegen.service import get_service
from tests.conftest import load_event

pytestmark = pytest.mark.integration

KEY = "sk-usage-test-key-0123456789"
CALLER = key_fingerprint(KEY)
PRICES = json.loads((Path(__file__).parents[2] / "layers/common/imagegen/catalog/prices.json").read_text(), parse_float=Decimal)
MINI = "gpt-image-1-mini"


def generate(
    lambda_context: Any, *, key: str = KEY, headers: dict[str, str] | None = None, **body: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    fields = {"model": MINI, "size": "1024x1024", "responseFormat": None, "response_format": "url", "n": 1, **body}
    event = load_event("api_generate_url.json", **fields)
    event["headers"]["Authorization"] = f"Bearer {key}"
    event["headers"].update(headers or {})
    event["requestContext"]["requestId"] = str(uuid.uuid4())  # API Gateway's id, new for every request
    response = app.lambda_handler(event, lambda_context)
    answered = {name.lower(): values[-1] for name, values in (response.get("multiValueHeaders") or {}).items()}
    answered.update({name.lower(): value for name, value in (response.get("headers") or {}).items()})
    return response["statusCode"], json.loads(response["body"]), answered


def read_usage(lambda_context: Any, **params: list[str]) -> dict[str, Any]:
    event = load_event("api_models.json")
    event["path"] = event["resource"] = "/v1/organization/usage/images"
    event["headers"]["Authorization"] = f"Bearer {KEY}"
    event["multiValueQueryStringParameters"] = params
    event["queryStringParameters"] = {name: values[-1] for name, values in params.items()}
    response = app.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    page: dict[str, Any] = json.loads(response["body"])
    return page


def records(moto_server: Any, table: str) -> list[dict[str, Any]]:
    items = moto_server.client("dynamodb").scan(TableName=table)["Items"]
    return [item for item in items if item["pk"]["S"].startswith("record#")]


def budget_images(moto_server: Any, table: str) -> int:
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    key = {"pk": {"S": f"budget#key#{CALLER}"}, "sk": {"S": month}}
    item = moto_server.client("dynamodb").get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    return 0 if item is None else int(item["images"]["N"])


def mini_cost(text_in: int, image_out: int) -> Decimal:
    """gpt-image-1-mini's cost, from the data file's rates (USD per 1M tokens), computed apart from the price book."""
    rates = PRICES["models"][MINI]["usd_per_1m_tokens"]
    return (text_in * rates["text_in"] + image_out * rates["image_out"]) / Decimal(1_000_000)


def stored_objects(s3_server: Any) -> int:
    return len(s3_server.client().list_objects_v2(Bucket=s3_server.bucket).get("Contents", []))


def test_a_generation_is_recorded_once_with_its_cost_and_read_back_in_openais_shape(
    openai_env, usage_table, moto_server, lambda_context
) -> None:
    started = int(time.time())
    status, body, _ = generate(lambda_context, prompt="a fox", n=2, safety_identifier="end-user-7")
    assert status == 200, body
    (record,) = records(moto_server, usage_table)
    # the fake reports 10 input tokens (no details: the prompt's text) and 100 output tokens (image tokens)
    assert Decimal(record["cost_usd"]["N"]) == mini_cost(10, 100)
    assert (record["caller"]["S"], record["end_user"]["S"], record["source"]["S"]) == (CALLER, "end-user-7", "image.generation")
    assert (record["model"]["S"], record["size"]["S"], int(record["images"]["N"])) == (MINI, "1024x1024", 2)

    page = read_usage(lambda_context, start_time=[str(started - 60)], bucket_width=["1m"], **{"group_by[]": ["model", "user_id"]})
    results = [result for bucket in page["data"] for result in bucket["results"]]
    assert [(r["model"], r["user_id"], r["api_key_id"], r["images"], r["num_model_requests"]) for r in results] == [
        (MINI, "end-user-7", None, 2, 1)
    ]
    assert Decimal(str(results[0]["cost"]["value"])) == mini_cost(10, 100) and results[0]["cost"]["currency"] == "usd"


def test_a_budget_refuses_before_the_provider_is_called_and_writes_nothing(
    openai_env, usage_table, moto_server, s3_server, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {"images_per_month": 1}}))
    assert generate(lambda_context, prompt="a fox")[0] == 200
    calls, objects = len(openai_env.requests), stored_objects(s3_server)
    status, body, headers = generate(lambda_context, prompt="another fox")
    assert status == 429
    assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == ("insufficient_quota", "insufficient_quota", None)
    assert "1 images per UTC month" in body["error"]["message"]
    assert headers.get("x-should-retry") == "false"
    assert len(openai_env.requests) == calls and stored_objects(s3_server) == objects  # nothing billed, nothing written
    assert len(records(moto_server, usage_table)) == 1 and budget_images(moto_server, usage_table) == 1


def test_a_failed_generation_gives_its_reservation_back(openai_env, usage_table, moto_server, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {"images_per_month": 1}}))
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    status, body, _ = generate(lambda_context, prompt="fail:500")
    assert status == 502, body
    assert budget_images(moto_server, usage_table) == 0 and records(moto_server, usage_table) == []
    assert generate(lambda_context, prompt="a fox")[0] == 200  # the image is still there to be had
    assert budget_images(moto_server, usage_table) == 1


def test_a_retried_run_is_counted_once(openai_env, usage_table, moto_server, monkeypatch) -> None:
    # a job run that stored its images and recorded, then died before marking the job done: its retry produces the
    # same keys again (the provider is called again: that cannot be helped) but the usage counts once
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {"images_per_month": 10}}))
    service = get_service()
    request = ImageGenerationRequest(prompt="a fox", model=MINI, size="1024x1024", n=2)
    when = dt.datetime.now(dt.UTC)
    for _ in range(2):
        service.produce(request, request_id="job-42", deadline=Deadline.after(30), when=when, caller=CALLER, max_response_bytes=None)
    assert len(openai_env.requests) == 2
    (record,) = records(moto_server, usage_table)
    assert int(record["images"]["N"]) == 2 and budget_images(moto_server, usage_table) == 2


def test_a_stream_is_recorded_once_with_its_completed_events_usage(openai_env, usage_table, moto_server) -> None:
    events = list(
        get_service().stream(
            ImageGenerationRequest(prompt="a fox", model=MINI, size="1024x1024", n=2, stream=True, partial_images=1),
            request_id=str(uuid.uuid4()),
            deadline=Deadline.after(30),
            caller=CALLER,
        )
    )
    completed = [event for event in events if event.type == "image_generation.completed"]
    assert len(completed) == 2
    (record,) = records(moto_server, usage_table)
    usage = [event.usage for event in completed]
    text_in = sum(item.input_tokens_details.text_tokens for item in usage)
    image_out = sum(item.output_tokens for item in usage)
    assert Decimal(record["cost_usd"]["N"]) == mini_cost(text_in, image_out) and int(record["images"]["N"]) == 2


# -- the answer cache (CACHE_TTL_SECONDS) ---------------------------------------------------------------------------


def test_an_identical_request_is_answered_from_the_cache_with_no_provider_call(
    openai_env, usage_table, moto_server, s3_server, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")
    prompt = "a lighthouse at dawn, cached"
    first = generate(lambda_context, prompt=prompt, n=1, safety_identifier="u1")
    objects = stored_objects(s3_server)
    second = generate(lambda_context, prompt=prompt, n=1, safety_identifier="u1", response_format="b64_json")
    assert first[0] == second[0] == 200 and len(openai_env.requests) == 1  # the second called no provider
    assert stored_objects(s3_server) == objects  # and wrote nothing
    # the same images, answered as the second asked (base64 read back from S3)
    stored = [httpx.get(image["url"]).content for image in first[1]["data"]]
    assert [base64.b64decode(image["b64_json"]) for image in second[1]["data"]] == stored
    assert "usage" not in second[1]  # no tokens were used for it
    cached = [record for record in records(moto_server, usage_table) if record["cached"]["BOOL"]]
    assert len(cached) == 1 and Decimal(cached[0]["cost_usd"]["N"]) == 0 and int(cached[0]["images"]["N"]) == 1
    # the prompt is nowhere in the table in clear: the key is a hash
    assert prompt not in json.dumps(moto_server.client("dynamodb").scan(TableName=usage_table)["Items"])


def test_a_cache_hit_of_an_auto_size_is_recorded_at_the_size_produced(
    openai_env, usage_table, moto_server, lambda_context, monkeypatch
) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")
    for _ in range(2):
        status, _body, _headers = generate(lambda_context, prompt="a kite, any size", size="auto")
        assert status == 200
    assert len(openai_env.requests) == 1
    by_cached = {record["cached"]["BOOL"]: record["size"]["S"] for record in records(moto_server, usage_table)}
    assert by_cached[False] != "auto"  # billed at what the provider drew
    assert by_cached[True] == by_cached[False]


def test_a_cache_hit_of_a_route_names_and_records_the_member_that_made_the_images(
    openai_env, usage_table, moto_server, lambda_context, monkeypatch
) -> None:
    # A route whose first model fails (the fake OpenAI's 500): the second, local, makes the images
    registry = {"models": ["local", MINI, {"id": "fast", "route": [MINI, "local"]}], "default_model": "local"}
    monkeypatch.setenv("MODEL_REGISTRY", json.dumps(registry))
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")
    answers = [generate(lambda_context, prompt="fail:500", model="fast") for _ in range(2)]
    assert [status for status, _, _ in answers] == [200, 200]
    assert len(openai_env.requests) == 1  # the hit called no provider
    # Both answers name the model that made the images, and both records are that model's
    assert [headers.get(SERVED_BY_HEADER) for _, _, headers in answers] == ["local", "local"]
    made = {record["cached"]["BOOL"]: (record["model"]["S"], record["provider"]["S"]) for record in records(moto_server, usage_table)}
    assert made == {False: ("local", "local"), True: ("local", "local")}


@pytest.mark.parametrize(
    "change",
    [
        {"headers": {"Cache-Control": "no-cache"}},
        {"safety_identifier": "another-user"},
        {"key": "sk-usage-test-other-key-98765"},
        {"quality": "high"},
    ],
    ids=["no-cache", "end-user", "caller", "option"],
)
def test_what_is_not_identical_or_skips_the_cache_calls_the_provider(openai_env, usage_table, lambda_context, monkeypatch, change) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "60")
    base = {"prompt": "a fox, cache misses", "safety_identifier": "u1", "quality": "low"}
    assert generate(lambda_context, **base)[0] == 200
    assert generate(lambda_context, **{**base, **change})[0] == 200
    assert len(openai_env.requests) == 2


def test_an_entry_expires_with_its_ttl(openai_env, usage_table, lambda_context, monkeypatch) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "1")
    assert generate(lambda_context, prompt="a fox, expiring")[0] == 200
    time.sleep(1.2)
    assert generate(lambda_context, prompt="a fox, expiring")[0] == 200
    assert len(openai_env.requests) == 2


def test_twenty_concurrent_requests_against_ten_images_generate_exactly_ten(openai_env, usage_table, moto_server, monkeypatch) -> None:
    # the issue's own case, through the service (the S3 server, the fake OpenAI, moto's DynamoDB, each over HTTP):
    # the reservation is the only thing between the requests and the provider
    monkeypatch.setenv("BUDGETS", json.dumps({"per_key": {"images_per_month": 10}}))
    service = get_service()
    start = threading.Barrier(20)

    def one(index: int) -> str:
        start.wait()
        try:
            service.generate(
                ImageGenerationRequest(prompt=f"a fox {index}", model=MINI, size="1024x1024", response_format="url"),
                request_id=f"crowd-{index}",
                deadline=Deadline.after(30),
                caller=CALLER,
            )
        except InsufficientQuotaError:
            return "refused"
        return "generated"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(one, range(20)))
    assert outcomes.count("generated") == 10 and outcomes.count("refused") == 10
    assert len(openai_env.requests) == 10  # no provider call for a refused one
    assert budget_images(moto_server, usage_table) == 10 and len(records(moto_server, usage_table)) == 10
