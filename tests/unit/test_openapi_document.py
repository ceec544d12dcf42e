"""The OpenAPI document is built ahead of time (functions/api/openapi_document.py) so that no cold start imports
Powertools' OpenAPI machinery: the committed file must be the document of today's routes and models, the API serves
exactly that file, and the function as Lambda imports it (task root on the path, module ``app``) neither imports the
machinery at init nor on its first requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from functions.api import app
from functions.api.openapi_document import DOCUMENT_PATH, build_document, render
from tests.conftest import load_event

ROOT = Path(__file__).resolve().parents[2]
# What Powertools' validation and OpenAPI generation import, and a cold start must not.
MACHINERY = (
    "aws_lambda_powertools.event_handler.openapi.models",
    "aws_lambda_powertools.event_handler.openapi.dependant",
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
)


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


COLD_START = """
import json, sys, uuid
sys.path[:0] = [{task!r}, {layer!r}]
import app
imported = [name for name in {machinery!r} if name in sys.modules]
class Context:
    function_name, function_version, memory_limit_in_mb = "api", "$LATEST", 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    log_group_name, log_stream_name, aws_request_id = "/aws/lambda/api", "s", str(uuid.uuid4())
    def get_remaining_time_in_millis(self): return 20000
with open({event!r}) as file:
    event = json.load(file)
statuses = []
for body in ('{{"prompt": "a fox", "n": 0}}', '{{"n": 1}}', "{{not json"):
    event["body"] = body
    response = app.lambda_handler(event, Context())
    statuses.append((response["statusCode"], json.loads(response["body"])["error"]["param"]))
print(json.dumps({{"at_init": imported, "after": [name for name in {machinery!r} if name in sys.modules], "statuses": statuses}}))
"""


def test_a_cold_start_imports_none_of_the_openapi_machinery_and_still_names_the_bad_field(tmp_path) -> None:
    script = COLD_START.format(
        task=str(ROOT / "functions" / "api"),
        layer=str(ROOT / "layers" / "common"),
        machinery=MACHINERY,
        event=str(ROOT / "events" / "api_generate_url.json"),
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env |= {"IMAGES_BUCKET": "bucket", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "ImageGen"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["at_init"] == [] and result["after"] == []
    assert result["statuses"] == [[400, "n"], [400, "prompt"], [400, None]]
