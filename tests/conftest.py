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
    # Set by functions/api/runtime.py under the streaming runtime: only tests that run it may see it.
    "IMAGEGEN_STREAMING_RUNTIME",
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
    "GOOGLE_API_KEY",
    "GOOGLE_API_KEY_SECRET_ARN",
    "GOOGLE_BASE_URL",
    "BFL_API_KEY",
    "BFL_API_KEY_SECRET_ARN",
    "BFL_BASE_URL",
    "STABILITY_API_KEY",
    "STABILITY_API_KEY_SECRET_ARN",
    "STABILITY_BASE_URL",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY_SECRET_ARN",
    "AZURE_OPENAI_DEPLOYMENTS",
    "USAGE_TABLE",
    "BUDGETS",
    "USAGE_ADMIN_KEYS",
    "CACHE_TTL_SECONDS",
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


# --- Least privilege, by evaluation (issue #12 item 13) -----------------------------------------------------------
# Every AWS call the functions make in the integration and end-to-end tiers is recorded (devtools/aws_calls.py: in
# process for the handlers the integration tests call, in the Lambda RIE's child processes for the e2e stacks), and
# once, when the session ends, evaluated against the roles template.yaml gives the functions (devtools/iam_eval.py).
# A call the role would refuse fails the run; so does, in a full run of both tiers, a granted action that no test
# exercised and that tests/iam/unexercised_grants.json does not explain. The report is written to
# <pytest tmp dir>/aws-calls0/iam-report.txt and summed up at the end of the run.
RECORDED_TIERS = ("tests/integration/", "tests/e2e/")
_least_privilege: dict[str, Any] = {}


def _recorded_caller() -> Any:
    from devtools import aws_calls

    if not os.environ.get("PYTEST_CURRENT_TEST", "").startswith(RECORDED_TIERS):
        return None
    return aws_calls.in_process_caller()


@pytest.fixture(scope="session", autouse=True)
def _aws_call_recorder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from devtools import aws_calls

    directory = tmp_path_factory.mktemp("aws-calls")
    aws_calls.propagate_to_thread_pools()
    aws_calls.install(directory, _recorded_caller)
    previous = os.environ.get(aws_calls.ENV_VAR)
    os.environ[aws_calls.ENV_VAR] = str(directory)  # devtools.rie starts the functions' runtimes through the recorder
    _least_privilege["directory"] = directory
    yield directory
    if previous is None:
        os.environ.pop(aws_calls.ENV_VAR, None)
    else:
        os.environ[aws_calls.ENV_VAR] = previous


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    directory = _least_privilege.get("directory")
    if directory is not None and nodeid.startswith(RECORDED_TIERS):
        from devtools import aws_calls

        aws_calls.mark_test(directory, nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        _least_privilege["deselected"] = True


def pytest_collection_finish(session: pytest.Session) -> None:
    """A full run collects every test module of both recorded tiers and deselects nothing."""
    collected = {Path(str(item.path)).resolve() for item in session.items}
    expected = {path.resolve() for tier in RECORDED_TIERS for path in (ROOT / tier).glob("test_*.py")}
    _least_privilege["full_run"] = bool(expected) and expected <= collected


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    directory = _least_privilege.get("directory")
    if directory is None:
        return
    from devtools import aws_calls, iam_eval

    calls = aws_calls.read_calls(directory)
    if not calls:
        return
    full = bool(_least_privilege.get("full_run")) and not _least_privilege.get("deselected") and exitstatus == 0
    summary: list[str] = []
    failed = False
    try:
        report = iam_eval.evaluate(calls)
    except Exception as error:  # the evaluator unavailable (no node/npm), a template it cannot resolve, a bug: fail loudly
        summary.append(f"IAM evaluation could not run: {error!r}")
        failed = True
    else:
        lines = report.lines()
        allowlist = iam_eval.load_allowlist()
        fresh = iam_eval.new_unexercised(report, allowlist)
        checked = "" if full else " (not enforced: not a full run of both tiers)"
        lines += [f"NEW UNEXERCISED GRANT{checked} {grant.function}: {grant.action} on {grant.resource}" for grant in fresh]
        stale = iam_eval.stale_allowlist(report, allowlist)
        lines += [f"STALE ALLOW-LIST ENTRY (no such grant now) {entry.function}: {entry.action} on {entry.resource}" for entry in stale]
        (directory / "iam-report.txt").write_text("\n".join(lines) + "\n")
        failed = not report.ok or (full and bool(fresh))
        summary.append(lines[0])
        summary += [line for line in lines if line.startswith(("  DENIED", "  UNMAPPED")) or (full and line.startswith("NEW UNEXERCISED"))]
        summary.append(
            f"{len(report.unexercised)} granted actions no test exercised"
            + (" (checked against tests/iam/unexercised_grants.json)" if full else " (not checked: not a full run of both tiers)")
        )
        summary.append(f"report: {directory / 'iam-report.txt'}")
    if failed:
        summary.insert(0, "FAILED: the run fails on the findings below (the tests themselves may all have passed)")
    _least_privilege["summary"] = summary
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summary = _least_privilege.get("summary")
    if summary:
        terminalreporter.section("least privilege (IAM evaluation of the recorded AWS calls)")
        for line in summary:
            terminalreporter.line(line)
