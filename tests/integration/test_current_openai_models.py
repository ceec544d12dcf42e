"""Today's OpenAI models and parameters over real HTTP: the API handler, the OpenAI provider and a fake OpenAI server
on loopback (what reaches the provider is read from the fake's request log)."""

from __future__ import annotations

import json

import pytest

from functions.api import app
from tests.conftest import load_event

pytestmark = pytest.mark.integration


def invoke(lambda_context, **body):
    response = app.lambda_handler(load_event("api_generate_b64.json", **{"size": "1024x1024", **body}), lambda_context)
    return response["statusCode"], json.loads(response["body"])


def test_a_current_model_gets_its_new_parameters_upstream(openai_env, lambda_context) -> None:
    status, body = invoke(
        lambda_context,
        prompt="a fox",
        model="gpt-image-2.5-sunburst",
        size="1536x864",
        quality="xhigh",
        complexity="high",
        safety_identifier="hash-of-user-7",
        user="user-7",
        response_format="url",
    )
    assert status == 200, body
    (sent,) = openai_env.requests
    assert sent["json"] == {
        "model": "gpt-image-2.5-sunburst",
        "prompt": "a fox",
        "n": 1,
        "size": "1536x864",
        "quality": "xhigh",
        "complexity": "high",
        "safety_identifier": "hash-of-user-7",  # it takes precedence; the deprecated user is not sent beside it
        "output_format": "png",
    }


def test_user_is_sent_as_the_safety_identifier_when_that_is_omitted(openai_env, lambda_context) -> None:
    status, body = invoke(lambda_context, prompt="a fox", model="gpt-image-2.6-flare", user="user-7", response_format="url")
    assert status == 200, body
    assert openai_env.requests[0]["json"]["safety_identifier"] == "user-7"
    assert "user" not in openai_env.requests[0]["json"]


def test_the_default_openai_model_is_a_current_one(openai_env, lambda_context) -> None:
    status, body = invoke(lambda_context, prompt="a fox", model=None, size="1024x1024", response_format="url")
    assert status == 200, body
    assert openai_env.requests[0]["json"]["model"] == "gpt-image-2.5-sunburst"


@pytest.mark.parametrize(
    ("fields", "param", "text"),
    [
        ({"stream": True}, "stream", "streaming is not supported"),
        ({"partial_images": 2}, "partial_images", "need streaming"),
        ({"model": "gpt-image-2.6-flare", "quality": "max"}, "quality", "'low', 'medium', 'high', 'auto'"),
        ({"model": "gpt-image-2.6-flare", "output_format": "gif"}, "output_format", "'png', 'jpeg', 'webp'"),
        ({"model": "gpt-image-2.6-flare", "frame_count": 4}, "frame_count", "no 'gif' output"),
        ({"model": "gpt-image-1.5", "complexity": "low"}, "complexity", "not supported"),
    ],
)
def test_what_a_model_does_not_take_is_a_400_naming_the_field(openai_env, lambda_context, fields, param, text) -> None:
    status, body = invoke(lambda_context, prompt="a fox", response_format="url", **fields)
    assert status == 400, body
    assert body["error"]["param"] == param and text in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    assert openai_env.requests == []  # never reached the provider


def test_a_refused_preview_feature_is_a_400_naming_it(openai_env, lambda_context) -> None:
    """Transparent backgrounds on gpt-image-2 are a preview (image_generate_params.py): passed through, and OpenAI's
    refusal for this project is a 400 naming the feature, not a 502 or a retry."""
    status, body = invoke(
        lambda_context, prompt="fail:preview", model="gpt-image-2", background="transparent", output_format="png", response_format="url"
    )
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == ("background", "preview_not_enabled")
    assert "preview" in body["error"]["message"] and "This feature is not enabled for this request." in body["error"]["message"]
    assert len(openai_env.requests) == 1  # sent once: no retry of a refusal
    assert openai_env.requests[0]["json"]["background"] == "transparent"


def test_models_list_has_every_current_sdk_model(openai_env, lambda_context) -> None:
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    body = json.loads(response["body"])
    cards = {card["id"]: card for card in body["data"]}
    for model in ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-flare", "chatgpt-image-latest"):
        assert model in cards
    assert cards["gpt-image-2.5-sunburst"]["default"] is True
    assert "xhigh" in cards["gpt-image-2.5-sunburst"]["capabilities"]["qualities"]
    assert cards["gpt-image-2.6-flare"]["capabilities"]["complexities"] == ["low", "medium", "high"]
