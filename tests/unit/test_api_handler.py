"""The API function with the events/ files: every malformed body is a 400 naming the field, never a 500.
These requests are refused before any provider or S3 call (the unit tier has no sockets)."""

from __future__ import annotations

import base64
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
    status, payload, _ = invoke(load_event("api_generate_url.json", model="gpt-image-2.5-sunburst"), lambda_context)
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


@pytest.mark.parametrize(
    ("raw", "base64_encoded"),
    [
        (b"\xff\xfe{", True),  # not UTF-8 (the front and API Gateway send such bodies base64-encoded)
        ('{"prompt": "é"}'.encode("latin-1"), True),
        (b"not base64!", False),  # flagged base64 but is not
    ],
)
def test_body_that_is_not_utf8_is_400_not_500(lambda_context, raw, base64_encoded) -> None:
    event = raw_event(base64.b64encode(raw).decode() if base64_encoded else raw.decode())
    event["isBase64Encoded"] = True
    status, payload, _ = invoke(event, lambda_context)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_json" and "UTF-8" in payload["error"]["message"]


def test_base64_utf8_json_body_is_parsed(lambda_context) -> None:
    event = raw_event(base64.b64encode(b'{"prompt": "x", "size": "640x480"}').decode())
    event["isBase64Encoded"] = True
    status, payload, _ = invoke(event, lambda_context)
    assert (status, payload["error"]["param"]) == (400, "size")


def test_integer_too_long_for_json_is_400_not_500(lambda_context) -> None:
    status, payload, _ = invoke(raw_event('{"prompt": "x", "n": ' + "9" * 5000 + "}"), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "invalid_json")


def test_deeply_nested_object_is_400(lambda_context) -> None:
    status, payload, _ = invoke(raw_event('{"a": ' * 5000 + "1" + "}" * 5000), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "invalid_json")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"prompt": "x"}'),
        ("image/png", "\x89PNG"),
        ("multipart/form-data", "garbage"),
        ("multipart/form-data; boundary=xx", '--xx\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfox\r\n--xx--\r\n'),
        ("application/jsonx", '{"prompt": "x"}'),
        ("text/plain", None),
    ],
)
def test_wrong_content_types_are_400_saying_to_send_json(lambda_context, content_type, body) -> None:
    status, payload, _ = invoke(raw_event(body, content_type), lambda_context)
    assert status == 400, payload
    assert payload["error"]["code"] == "unsupported_content_type"
    assert f"'{content_type.split(';')[0]}'" in payload["error"]["message"] and "application/json" in payload["error"]["message"]


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=utf-8", " application/json "])
def test_json_content_type_is_matched_in_any_case(lambda_context, content_type) -> None:
    status, payload, _ = invoke(raw_event('{"prompt": "x", "size": "640x480"}', content_type), lambda_context)
    assert (status, payload["error"]["param"]) == (400, "size")


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


def test_openapi_document_says_which_routes_need_the_authorization_header(lambda_context) -> None:
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/openapi.json"
    _, payload, _ = invoke(event, lambda_context)
    scheme = payload["components"]["securitySchemes"]["authorization"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    secured = {
        (method.upper(), path)
        for path, methods in payload["paths"].items()
        for method, operation in methods.items()
        if operation.get("security")
    }
    # Exactly the routes template.yaml protects (its public ones: GET /, /health, /docs, /openapi.json)
    assert secured == {
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/images/variations"),
        ("GET", "/v1/images/jobs/{job_id}"),
        ("GET", "/v1/models"),
        ("GET", "/v1/organization/usage/images"),
    }
    assert "security" not in payload  # no global requirement: the public routes stay public


def test_unknown_route_is_404_json(lambda_context) -> None:
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/v2/nothing"
    status, payload, _ = invoke(event, lambda_context)
    assert status == 404 and payload["error"]["code"] == "unknown_url"


@pytest.mark.parametrize(
    ("content_type", "body", "base64_encoded"),
    [
        ("multipart/form-data; boundary=xyz", '--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na fox\r\n--xyz--', False),
        ("image/png", base64.b64encode(b"\x89PNG\r\n\x1a\n\xff\xfe").decode(), True),
        ("application/json", "{not json", False),
    ],
)
def test_unknown_route_with_any_body_is_unknown_route(lambda_context, content_type, body, base64_encoded) -> None:
    # What an SDK sends to a route this deployment lacks: the answer names the route, not the body
    event = raw_event(body, content_type)
    event["path"] = event["resource"] = "/v1/images/upscales"
    event["isBase64Encoded"] = base64_encoded
    status, payload, _ = invoke(event, lambda_context)
    assert status == 404
    assert payload["error"]["code"] == "unknown_url"
    assert "POST /v1/images/upscales" in payload["error"]["message"]


def test_openapi_document_describes_both_upload_forms(lambda_context) -> None:
    # The upload routes parse their own bodies: the document still says what each takes, as multipart and as JSON
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/openapi.json"
    _, payload, _ = invoke(event, lambda_context)
    schemas = payload["components"]["schemas"]
    for path, files in (("/v1/images/edits", {"image", "mask", "markup"}), ("/v1/images/variations", {"image"})):
        content = payload["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"multipart/form-data", "application/json"}
        form = schemas[content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert {name for name, field in form["properties"].items() if field.get("format") == "binary"} == files
        assert "image" in form["required"] and "images" not in form["properties"]
        json_form = schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert ("images" if path.endswith("edits") else "image") in json_form["required"]
    assert "input_fidelity" in schemas["ImageEditOptionsForm"]["properties"]
    assert "ImageReference" in schemas


def test_openapi_document_describes_the_event_stream_of_the_streaming_routes(lambda_context) -> None:
    # stream: true answers text/event-stream beside the JSON 200, each event's data with its schema; variations do not stream
    event = load_event("api_health.json")
    event["path"] = event["resource"] = "/openapi.json"
    _, payload, _ = invoke(event, lambda_context)
    schemas = payload["components"]["schemas"]
    for path, kinds in (
        ("/v1/images/generations", ("image_generation.partial_image", "image_generation.completed")),
        ("/v1/images/edits", ("image_edit.partial_image", "image_edit.completed")),
    ):
        content = payload["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
        events = {ref["$ref"].rsplit("/", 1)[1] for ref in content["text/event-stream"]["schema"]["anyOf"]}
        assert events == {"PartialImageEvent", "CompletedEvent", "ErrorEvent"}
        types = {kind for name in events - {"ErrorEvent"} for kind in schemas[name]["properties"]["type"]["enum"]}
        assert set(kinds) <= types
    assert {"partial_image_index", "b64_json"} <= set(schemas["PartialImageEvent"]["required"])
    assert {"url", "usage"} <= set(schemas["CompletedEvent"]["properties"])
    assert "text/event-stream" not in payload["paths"]["/v1/images/variations"]["post"]["responses"]["200"]["content"]
    described = schemas["ImageGenerationRequest"]["properties"]
    assert "not supported yet" not in json.dumps([described["stream"], described["partial_images"]]).lower()


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/variations"])
def test_idempotency_key_on_uploads_is_refused_before_anything_is_read(lambda_context, path) -> None:
    # Only generations replay by key: an edit retried with one would make (and bill) its images again
    event = load_event("api_edit_multipart.json")
    event["path"] = event["resource"] = path
    event["headers"]["Idempotency-Key"] = "retry-1"
    status, payload, _ = invoke(event, lambda_context)
    assert status == 400
    assert (payload["error"]["param"], payload["error"]["code"]) == ("Idempotency-Key", "unsupported_parameter")
