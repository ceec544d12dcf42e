"""The OpenAPI document is built ahead of time (functions/api/openapi_document.py) so that no cold start imports
Powertools' OpenAPI machinery (tests/unit/test_cold_start.py checks that): the committed file must be the document of
today's routes and models, and the API serves exactly that file."""

from __future__ import annotations

import json

from functions.api import app
from functions.api.openapi_document import DOCUMENT_PATH, build_document, render
from tests.conftest import load_event


def get(path: str, lambda_context) -> dict:
    event = load_event("api_health.json")
    event["path"] = event["resource"] = path
    return app.lambda_handler(event, lambda_context)


def test_the_committed_document_is_the_document_of_todays_routes_and_models() -> None:
    assert DOCUMENT_PATH.read_text(encoding="utf-8") == render(build_document()), (
        "functions/api/openapi.json is out of date: run `.venv/bin/python -m functions.api.openapi_document`"
    )


def test_the_document_has_every_route_and_no_validation_answer_the_api_never_sends() -> None:
    document = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    routes = {(route.method, route.rule.pattern) for route in (*app.app._static_routes, *app.app._dynamic_routes)}
    assert len(routes) >= 9
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert ("POST", "/v1/images/generations") in documented and ("GET", "/v1/images/jobs/{job_id}") in documented
    assert len(documented) == len(routes) - 2  # all but GET / and GET /docs (include_in_schema=False)
    body = document["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ImageGenerationRequest"}
    assert "prompt" in document["components"]["schemas"]["ImageGenerationRequest"]["required"]
    assert not any("422" in operation["responses"] for methods in document["paths"].values() for operation in methods.values())
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_get_openapi_json_serves_the_committed_file_and_docs_embeds_it(lambda_context) -> None:
    response = get("/openapi.json", lambda_context)
    assert response["statusCode"] == 200
    assert response["body"] == DOCUMENT_PATH.read_text(encoding="utf-8")
    page = get("/docs", lambda_context)
    assert page["statusCode"] == 200 and page["multiValueHeaders"]["Content-Type"] == ["text/html; charset=utf-8"]
    assert "SwaggerUIBundle" in page["body"] and '"ImageGenerationRequest"' in page["body"]
