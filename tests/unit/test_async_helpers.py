"""Small pure pieces of the async path: the Prefer header, the stage prefix, job messages and their errors."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from imagegen.errors import invalid_request_from
from imagegen.http import prefers_async, stage_prefix
from imagegen.options import ImageJobRequest
from tests.conftest import load_event


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("respond-async", True),
        ("Respond-Async", True),
        ("return=minimal, respond-async", True),
        ("wait=10", False),
        (None, False),
        ("", False),
    ],
)
def test_prefers_async(header: str | None, expected: bool) -> None:
    assert prefers_async(header) is expected


def test_stage_prefix_behind_api_gateway_and_locally() -> None:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    event = load_event("api_generate_url.json")
    assert stage_prefix(APIGatewayProxyEvent(event)) == "/prod"
    event["requestContext"]["path"] = event["path"]
    assert stage_prefix(APIGatewayProxyEvent(event)) == ""


def test_job_message_takes_an_id_and_refuses_unsafe_ones() -> None:
    assert ImageJobRequest.model_validate({"prompt": "x", "id": "batch_7-a"}).id == "batch_7-a"
    for bad in ("../etc", "a" * 65, "", "spaces here"):
        with pytest.raises(ValidationError):
            ImageJobRequest.model_validate({"prompt": "x", "id": bad})


@pytest.mark.parametrize(
    "key",
    ["results/a.json", "results/batch 7/café fox.json", "results/x/y/z.json", "results/a..b.json", "results/a//b.json", "results/./a.json"],
)
def test_job_message_takes_a_result_key_under_results(key: str) -> None:
    assert ImageJobRequest.model_validate({"prompt": "x", "resultKey": key}).result_key == key
    assert ImageJobRequest.model_validate({"prompt": "x", "result_key": key}).result_key == key


@pytest.mark.parametrize(
    "key",
    [
        "requests/a.json",  # the trigger would fire on it
        "images/a.json",
        "results/a.png",
        "results/.json/..",
        "results/../requests/a.json",
        "results/a\nb.json",
        "results/" + "é" * 600 + ".json",  # over S3's 1024 bytes
        "../results/a.json",
    ],
)
def test_job_message_refuses_a_result_key_outside_results(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ImageJobRequest.model_validate({"prompt": "x", "result_key": key})
    assert invalid_request_from(caught.value.errors()).param == "result_key"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ('{"prompt": "x", "reponseFormat": "url"}', "reponseFormat", "unknown_parameter"),
        ('{"prompt": "x", "responseFormat": "png"}', "response_format", "invalid_value"),
        ("{oops", None, "invalid_json"),
        ("[]", None, "invalid_json"),
        ('{"size": "256x256"}', "prompt", "missing_required_parameter"),
    ],
)
def test_message_validation_errors_map_like_the_api(body: str, param: str | None, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ImageJobRequest.model_validate_json(body)
    error = invalid_request_from(caught.value.errors())
    assert (error.param, error.code, error.status_code) == (param, code, 400)


def test_an_idempotency_key_names_one_job_per_caller() -> None:
    from imagegen.jobs import idempotent_job_id
    from imagegen.options import JOB_ID_PATTERN

    first = idempotent_job_id("key-aaaa", "order-1")
    assert re.fullmatch(JOB_ID_PATTERN, first)
    assert first == idempotent_job_id("key-aaaa", "order-1")
    assert first != idempotent_job_id("key-bbbb", "order-1") != idempotent_job_id("key-aaaa", "order-2")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\nline"])
def test_a_malformed_idempotency_key_is_a_400_naming_the_header(key: str) -> None:
    from imagegen.errors import InvalidRequestError
    from imagegen.jobs import idempotent_job_id

    with pytest.raises(InvalidRequestError) as caught:
        idempotent_job_id("key-aaaa", key)
    assert (caught.value.status_code, caught.value.param) == (400, "Idempotency-Key")


def test_the_request_hash_ignores_spelling_and_order_but_not_content() -> None:
    from imagegen.jobs import request_hash
    from imagegen.options import ImageGenerationRequest

    camel = ImageGenerationRequest.model_validate({"prompt": "a fox", "responseFormat": "url", "n": 2})
    snake = ImageGenerationRequest.model_validate({"n": 2, "response_format": "url", "prompt": "a fox"})
    other = ImageGenerationRequest.model_validate({"n": 2, "response_format": "url", "prompt": "a wolf"})
    assert request_hash(camel) == request_hash(snake) != request_hash(other)


@pytest.mark.parametrize(
    ("headers", "expected"), [({"Retry-After": "20"}, 20), ({"Retry-After": "2.5"}, 3), ({}, None), ({"Retry-After": "soon"}, None)]
)
def test_the_worker_waits_the_providers_retry_after(headers: dict[str, str], expected: int | None) -> None:
    from imagegen.errors import RateLimitError
    from imagegen.jobs import _retry_after_seconds

    assert _retry_after_seconds(RateLimitError("limited", headers=headers)) == expected


@pytest.mark.parametrize(
    "body",
    [
        '{"prompt": "x", "stream": true}',
        '{"operation": "edit", "prompt": "x", "stream": true, "images": [{"key": "inputs/a.png"}]}',
    ],
)
def test_a_job_message_cannot_stream(body: str) -> None:
    # A job's images go to S3 and its manifest: stream is refused by name, never planned and ignored
    from pydantic import ValidationError

    from imagegen.errors import invalid_request_from
    from imagegen.options import parse_job_request

    with pytest.raises(ValidationError) as caught:
        parse_job_request(body)
    error = invalid_request_from(caught.value.errors())
    assert error.param == "stream" and "cannot stream" in error.message
    assert parse_job_request('{"prompt": "x", "stream": false}').stream is False
