"""The Tracer: where tracing is off, no X-Ray SDK is imported at all (a cold start's CPU) and the decorated handlers
and methods still run and raise as before; where it is on, X-Ray patches botocore and httpx only. Each case runs in a
fresh interpreter, as a cold start does: Powertools keeps the Tracer's configuration in the class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common"

SCRIPT = """
import json, sys
sys.path.insert(0, {layer!r})
from imagegen.observability import tracer

@tracer.capture_method(capture_response=False)
def double(value):
    return 2 * value

@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    if event == "boom":
        raise ValueError("boom")
    return double(event)

try:
    handler("boom", None)
    raised = False
except ValueError:
    raised = True
import botocore.client, httpx
print(json.dumps({{
    "answer": handler(21, None),
    "raised": raised,
    "xray": "aws_xray_sdk.core" in sys.modules,
    "patched": sorted(getattr(sys.modules.get("aws_xray_sdk.core.patcher"), "_PATCHED_MODULES", ())),
    "sqlite3": "sqlite3" in sys.modules,
}}))
"""


def run(env: dict[str, str]) -> dict:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("POWERTOOLS_", "AWS_SAM", "PYTHON"))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(layer=str(LAYER))],
        env=base | {"POWERTOOLS_SERVICE_NAME": "imagegen", "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


IN_LAMBDA = {"LAMBDA_TASK_ROOT": str(LAYER)}


@pytest.mark.parametrize("env", [IN_LAMBDA | {"POWERTOOLS_TRACE_DISABLED": "true"}, IN_LAMBDA | {"AWS_SAM_LOCAL": "true"}, {}])
def test_without_tracing_no_xray_sdk_is_imported_and_the_decorators_still_work(env) -> None:
    result = run(env)
    assert (result["answer"], result["raised"]) == (42, True)
    assert result["xray"] is False and result["patched"] == []


def test_with_tracing_xray_patches_botocore_and_httpx_only() -> None:
    result = run(IN_LAMBDA | {"AWS_LAMBDA_FUNCTION_NAME": "imagegen-api"})
    assert (result["answer"], result["raised"]) == (42, True)
    assert result["xray"] is True
    assert result["patched"] == ["botocore", "httpx"]
    assert result["sqlite3"] is False  # patch_all would have imported and patched it
