"""The TOKEN authorizer: a bearer key becomes the usage-identifier key; no key is a 401."""

from __future__ import annotations

import json
import logging

import pytest

from functions.authorizer import app
from imagegen.auth import bearer_key, key_fingerprint
from tests.conftest import EVENTS


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer sample-api-key-0123456789abcdef", "sample-api-key-0123456789abcdef"),
        ("bearer sample-api-key-0123456789abcdef ", "sample-api-key-0123456789abcdef"),
        ("Bearer short", None),
        ("Basic dXNlcjpwYXNzd29yZA==", None),
        ("sample-api-key-0123456789abcdef", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_key(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


def test_known_shape_is_handed_to_the_usage_plan(lambda_context) -> None:
    event = json.loads((EVENTS / "authorizer_token.json").read_text())
    policy = app.lambda_handler(event, lambda_context)
    assert policy["usageIdentifierKey"] == "sample-api-key-0123456789abcdef"
    assert policy["principalId"] == key_fingerprint("sample-api-key-0123456789abcdef")
    assert "sample-api-key" not in policy["principalId"]
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/*/*"]


def test_missing_key_is_unauthorized(lambda_context) -> None:
    event = {**json.loads((EVENTS / "authorizer_token.json").read_text()), "authorizationToken": "Bearer"}
    with pytest.raises(Exception, match="^Unauthorized$"):
        app.lambda_handler(event, lambda_context)


def test_a_random_key_costs_one_quiet_invocation(lambda_context, caplog: pytest.LogCaptureFixture) -> None:
    # Random well-formed keys each miss the authorizer's cache, so each is an invocation; at the INFO level a
    # deployment runs at (LogLevel's default) none of them writes a log line that CloudWatch Logs would bill
    logger = app.logger
    event = {**json.loads((EVENTS / "authorizer_token.json").read_text()), "authorizationToken": "Bearer " + "r4nd0m" * 6}
    level = logger.log_level
    logger.setLevel("INFO")
    try:
        with caplog.at_level("INFO"):
            policy = app.lambda_handler(event, lambda_context)
    finally:
        logger.setLevel(level)
    assert policy["usageIdentifierKey"] == "r4nd0m" * 6  # the usage plan refuses it (403), not this function
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO] == []


def test_a_cold_start_imports_neither_the_xray_sdk_nor_an_aws_client() -> None:
    # What each new execution environment of a flood pays before its first answer: the authorizer calls no AWS API.
    # (Powertools' package import touches botocore's top-level module for its user agent: microseconds.)
    import subprocess
    import sys

    heavy = ("aws_xray_sdk", "botocore.session", "botocore.client", "boto3")
    script = f"import sys, functions.authorizer.app; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip() == "[]"
