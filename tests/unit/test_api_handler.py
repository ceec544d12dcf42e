"""The API function with the events/ files: every malformed body is a 400 naming the field, never a 500.
These requests are refused before any provider or S3 call (the unit tier has no sockets)."""

from __future__ import annotations

import json

import pytest

from functions.api import app
from tests.conftest import load_event


def invoke(event, lambda_context):
    response = app.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"]), response


def raw_event(body: str | None, content_type: str = "application/json"):
    event = load_event("api_generate_url.json")
    event["body"] = body
    event["headers"] = {"Content-Type": content_type}
    event["multiValueHeaders"] = {"Content-Type": [content_type]}
    return event


def test_invalid_event_file_is_400_naming_the_typo(lambda_context) -> None:
    status, body, _ = invoke(load_event("api_generate_invalid.json"), lambda_context)
    assert status == 400
    assert body == {
        "error": {
            "message": "Unknown parameter: 'reponseFormat'.",
            "type": "invalid_request_error",
            "param": "reponseFormat",
            "code": "unknown_parameter",
        }
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ('{"prompt": "x", "n": 100000}', "n", "invalid_value"),
        ('{"prompt": "x", "n": "two"}', "n", "invalid_type"),
        ('{"prompt": ""}', "prompt", "invalid_value"),
        ('{"prompt": "x", "responseFormat": "png"}', "response_format", "invalid_value"),
        ('{"prompt": "x", "size": "huge"}', "size", "invalid_value"),
        ('{"n": 1}', "prompt", "missing_required_parameter"),
        ('{"prompt": "x", "model": "local", "quality": "ultra"}', "quality", "invalid_value"),
        ('{"prompt": "x", "model": "local", "size": "640x480"}', "size", "invalid_value"),
        ("{not json", None, "invalid_json"),
        ("[1, 2]", None, "invalid_json"),
        ('"a string"', None, "invalid_json"),
        (None, None, "invalid_json"),
        ("[" * 50_000 + "]" * 50_000, None, "invalid_json"),
    ],
)
def test_malformed_bodies_are_400_with_openai_error_shape(lambda_context, body, param, code) -> None:
    status, payload, response = invoke(raw_event(body), lambda_context)
    assert status == 400, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert (payload["error"]["param"], payload["error"]["code"]) == (param, code)
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]


def test_unknown_model_is_404(lambda_context) -> None:
    status, payload, _ = invoke(load_event("api_generate_url.json", model="dall-e-3"), lambda_context)
    assert status == 404
    assert payload["error"]["code"] == "model_not_found"


def test_oversized_body_is_413_before_parsing(lambda_context) -> None:
    status, payload, _ = invoke(raw_event(json.dumps({"prompt": "x" * 300_000})), lambda_context)
    assert status == 413
    assert payload["error"]["code"] == "payload_too_large"


def test_form_encoded_body_says_to_send_json(lambda_context) -> None:
    status, payload, _ = invoke(raw_event("prompt=a+fox", "application/x-www-form-urlencoded"), lambda_context)
    assert status == 400
    assert "application/json" in payload["error"]["message"]


def test_models_and_health(lambda_context) -> None:
    status, payload, _ = invoke(load_event("api_models.json"), lambda_context)
    assert status == 200 and payload["object"] == "list"
    assert [model["id"] for model in payload["data"]] == ["local"]
    status, payload, _ = invoke(load_event("api_health.json"), lambda_context)
    assert (status, payload) == (200, {"status": "ok"})


def test_openapi_document_describes_the_generation_route(lambda_context) -> None:
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/openapi.json"
    status, payload, _ = invoke(event, lambda_context)
    assert status == 200
    operation = payload["paths"]["/v1/images/generations"]["post"]
    assert "requestBody" in operation
    assert "ImageGenerationRequest" in json.dumps(operation)


def test_unknown_route_is_404_json(lambda_context) -> None:
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/v2/nothing"
    status, payload, _ = invoke(event, lambda_context)
    assert status == 404 and payload["error"]["code"] == "unknown_url"
