"""Shared fixtures: a clean configuration per test, a Lambda context, and the events/ files."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"

BASE_ENV = {
    "IMAGES_BUCKET": "imagegen-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "POWERTOOLS_SERVICE_NAME": "imagegen",
    "POWERTOOLS_METRICS_NAMESPACE": "ImageGen",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_METRICS_DISABLED": "1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}
# Powertools reads its service name and namespace when the handler module is imported: set them first.
os.environ.update({name: value for name, value in BASE_ENV.items() if name.startswith("POWERTOOLS_")})

from imagegen import clients, idempotency, jobs, providers, service, settings  # noqa: E402

CLEARED_ENV = (
    "DEFAULT_MODEL",
    "OPENAI_API_KEY",
    "OPENAI_API_KEY_SECRET_ARN",
    "OPENAI_BASE_URL",
    "PRESIGN_TTL_SECONDS",
    "JOBS_TABLE",
    "JOBS_QUEUE_URL",
    "MAX_RECEIVE_COUNT",
    "IDEMPOTENCY_TABLE",
    "PROVIDER_MAX_RETRIES",
    "BEDROCK_ENABLED",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "MODEL_REGISTRY",
    "BEDROCK_MODELS",
    "MODEL_REGISTRY_PARAMETER",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY_SECRET_ARN",
    "AZURE_OPENAI_DEPLOYMENTS",
)


def clear_caches() -> None:
    caches = (
        settings.get_settings,
        service.get_service,
        jobs.get_job_service,
        idempotency.get_idempotent_generator,
        providers.get_provider,
        clients.s3_client,
        clients.http_client,
        clients.dynamodb_client,
        clients.sqs_client,
        clients.bedrock_runtime_client,
    )
    for cached in caches:
        cached.cache_clear()


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    clear_caches()
    yield
    clear_caches()


@dataclass
class FakeLambdaContext:
    function_name: str = "imagegen-api"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:imagegen-api"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_millis: int = 29_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def load_event(name: str, **body_overrides: Any) -> dict[str, Any]:
    """An events/ file; ``body`` fields may be replaced (None removes one)."""
    event = json.loads((EVENTS / name).read_text())
    if body_overrides:
        body = json.loads(event["body"])
        body.update(body_overrides)
        event["body"] = json.dumps({key: value for key, value in body.items() if value is not None})
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    # The request reaches API Gateway now: its 29 s count from here (imagegen.deadline).
    event["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
    return event


def job_event(job_id: str) -> dict[str, Any]:
    """GET /v1/images/jobs/{job_id} as API Gateway sends it (built from events/api_health.json)."""
    event = load_event("api_health.json")
    event["path"] = f"/v1/images/jobs/{job_id}"
    event["resource"] = "/v1/images/jobs/{job_id}"
    event["requestContext"]["path"] = f"/prod/v1/images/jobs/{job_id}"
    event["pathParameters"] = {"job_id": job_id}
    return event
