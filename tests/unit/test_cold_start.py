"""The API function as Lambda imports it (its task root and the layer on the path, the module ``app``), in a fresh
interpreter: what its cold start must not import (Powertools' OpenAPI machinery, built ahead of time instead; the X-Ray
SDK when tracing is off), garbage collection back on and init's objects frozen once it is loaded, and bad fields
still named in OpenAI's 400 by the routes' own validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What Powertools' validation and OpenAPI generation import, and what Powertools' Tracer imports even when disabled.
NOT_IMPORTED = (
    "aws_lambda_powertools.event_handler.openapi.models",
    "aws_lambda_powertools.event_handler.openapi.dependant",
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    "aws_xray_sdk.core",
)

COLD_START = """
import gc, json, sys, uuid
sys.path[:0] = [{task!r}, {layer!r}]
import app
imported = [name for name in {not_imported!r} if name in sys.modules]
collecting, frozen = gc.isenabled(), gc.get_freeze_count()
class Context:
    function_name, function_version, memory_limit_in_mb = "api", "$LATEST", 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    log_group_name, log_stream_name, aws_request_id = "/aws/lambda/api", "s", str(uuid.uuid4())
    def get_remaining_time_in_millis(self): return 20000
with open({event!r}) as file:
    event = json.load(file)
statuses = []
for body in ('{{"prompt": "a fox", "n": 0}}', '{{"n": 1}}', '{{"prompt": "a fox", "sizes": "1x1"}}', "{{not json", "[1]"):
    event["body"] = body
    response = app.lambda_handler(event, Context())
    error = json.loads(response["body"])["error"]
    statuses.append((response["statusCode"], error["param"], error["code"]))
print(json.dumps({{
    "at_init": imported,
    "after": [name for name in {not_imported!r} if name in sys.modules],
    "collecting": collecting,
    "frozen": frozen,
    "statuses": statuses,
}}))
"""


def test_a_cold_start_imports_no_openapi_machinery_nor_xray_collects_again_and_names_the_bad_field(tmp_path) -> None:
    script = COLD_START.format(
        task=str(ROOT / "functions" / "api"),
        layer=str(ROOT / "layers" / "common"),
        not_imported=NOT_IMPORTED,
        event=str(ROOT / "events" / "api_generate_url.json"),
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "POWERTOOLS_"))}
    env |= {"IMAGES_BUCKET": "bucket", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "ImageGen"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["at_init"] == [] and result["after"] == []
    assert result["collecting"] is True and result["frozen"] > 10_000  # init's objects, frozen
    assert result["statuses"] == [
        [400, "n", "invalid_value"],
        [400, "prompt", "missing_required_parameter"],
        [400, "sizes", "unknown_parameter"],
        [400, None, "invalid_json"],
        [400, None, "invalid_json"],
    ]
