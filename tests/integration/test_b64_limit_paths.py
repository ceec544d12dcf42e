"""Never bill and then refuse, on the paths that reach the provider other than a plain POST: with an Idempotency-Key
(DynamoDB on moto server) and with ``Prefer: respond-async`` (SQS and DynamoDB on moto server). A b64_json request
whose worst case cannot fit Lambda's 6 MB answer is a 413 before the fake OpenAI receives anything, and leaves
nothing behind: no idempotency record in progress, no job, no message."""

from __future__ import annotations

import json
import uuid

import pytest

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration

TOO_BIG = {"model": "gpt-image-1.5", "size": "1536x1024", "response_format": None}  # b64_json by default, 8 MB at worst


@pytest.fixture
def env(job_resources, fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-b64-limit")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.requests.clear()
    return fake_openai


def call(lambda_context, headers: dict[str, str], **body):
    event = load_event("api_generate_b64.json", **{"prompt": f"a fox {uuid.uuid4()}", **body})
    for name, value in headers.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"])


def test_with_an_idempotency_key_nothing_is_billed_and_the_key_stays_usable(env, job_resources, moto_server, lambda_context) -> None:
    key = str(uuid.uuid4())
    status, body = call(lambda_context, {"Idempotency-Key": key}, **TOO_BIG)
    assert (status, body["error"]["code"], body["error"]["param"]) == (413, "response_too_large", "response_format"), body
    assert env.requests == []
    assert moto_server.client("dynamodb").scan(TableName=job_resources.idempotency_table)["Count"] == 0
    # The refusal left no record in progress: the advised request goes through under the same key.
    status, body = call(lambda_context, {"Idempotency-Key": key}, **{**TOO_BIG, "response_format": "url"})
    assert status == 200, body
    assert len(env.requests) == 1 and body["data"][0]["url"]


def test_an_async_b64_job_that_could_not_be_fetched_is_refused_at_submit(env, job_resources, moto_server, lambda_context) -> None:
    """A finished job is read by a synchronous GET: its b64_json answer must fit too, so it is planned with that limit."""
    status, body = call(lambda_context, {"Prefer": "respond-async"}, **TOO_BIG)
    assert (status, body["error"]["code"]) == (413, "response_too_large"), body
    sqs = moto_server.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=job_resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert moto_server.client("dynamodb").scan(TableName=job_resources.table)["Count"] == 0
    assert env.requests == []
