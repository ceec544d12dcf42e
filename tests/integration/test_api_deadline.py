"""API Gateway's clock: a REST API cuts the request 29 s after requestContext.requestTimeEpoch, whatever the
function's timeout, and a cold start's init counts against it. The handler must answer before that cut."""

from __future__ import annotations

import json
import time

import pytest

from functions.api import app
from imagegen.deadline import API_GATEWAY_TIMEOUT_SECONDS
from tests.conftest import FakeLambdaContext, load_event

pytestmark = pytest.mark.integration


def test_a_request_that_began_12_s_ago_gets_a_504_before_the_gateway_cuts_it(openai_env) -> None:
    # Given a request that reached API Gateway 12 s ago (a long cold start), and a function that still has its
    # whole 29 s timeout ahead of it
    began = time.time() - 12
    event = load_event("api_generate_b64.json", prompt="fail:slow", model="gpt-image-1.5", size="1024x1024", response_format=None)
    event["requestContext"]["requestTimeEpoch"] = int(began * 1000)
    # When the provider never answers in time
    response = app.lambda_handler(event, FakeLambdaContext(remaining_millis=29_000))
    answered = time.time()
    # Then the client gets a 504 in the OpenAI error shape, within 29 s of the request's start
    assert response["statusCode"] == 504
    body = json.loads(response["body"])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "provider_timeout"
    assert answered - began < API_GATEWAY_TIMEOUT_SECONDS
    assert len(openai_env.requests) == 1
