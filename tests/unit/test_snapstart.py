"""SnapStart's hooks (imagegen/snapstart.py) and the API runtime loop's snapshot protocol (functions/api/runtime.py).

The hooks are run in-process the way the managed runtime runs them (awslambdaric's own hooks runner over
``snapshot_restore_py``'s registry), and a snapshot is simulated by the state it shares: the objects init built, the
secret init read, the random generator's state. No snapshot is ever taken or restored here (that needs Lambda).
The loop's side runs against tests/unit/test_runtime_loop.py's fake Runtime API.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import snapshot_restore_py
from aws_lambda_powertools.utilities import parameters
from awslambdaric import lambda_runtime_hooks_runner
from moto import mock_aws

from functions.api import runtime
from imagegen import clients, idempotency, jobs, providers, service, snapstart
from imagegen.errors import ProviderError
from imagegen.providers.upstream import retry_delay
from tests.unit.test_runtime_loop import API, FakeRuntimeApi, invocation

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = "imagegen/openai"
# Lambda's limit on the runtime's restore plus the after-restore hooks (SnapStartTimeoutException beyond it)
RESTORE_LIMIT_SECONDS = 10.0


def restore() -> None:
    """What the managed runtime does in a restored environment: run every registered after-restore hook."""
    lambda_runtime_hooks_runner.run_after_restore()


@pytest.fixture(autouse=True)
def _no_parameter_providers() -> Iterator[None]:
    parameters.clear_caches()
    yield
    parameters.clear_caches()


def test_the_hooks_are_registered_where_the_managed_runtime_reads_them() -> None:
    assert snapstart.REGISTERED
    assert (snapstart.before_snapshot, (), {}) in snapshot_restore_py.get_before_snapshot()
    assert (snapstart.after_restore, (), {}) in snapshot_restore_py.get_after_restore()
    # The handlers import the module, so the hooks exist wherever a handler is loaded
    for function in ("worker", "s3_trigger", "authorizer"):
        source = (ROOT / "functions" / function / "app.py").read_text()
        assert "from imagegen import snapstart" in source, function


def test_every_cache_the_hooks_name_exists() -> None:
    # A renamed factory would otherwise be skipped silently (the hooks look caches up by name)
    import importlib

    for module_name, name in snapstart.CLIENT_CACHES:
        assert callable(getattr(getattr(importlib.import_module(module_name), name), "cache_clear", None)), (module_name, name)


def _built_at_init(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every cached client and what is built from them, as an init that served a request would leave them."""
    monkeypatch.setenv("JOBS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/jobs")
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "idempotency")
    return _built_now()


def _built_now() -> dict[str, Any]:
    """Every cached client and what is built from them, built now (or taken from their caches)."""
    return {
        "s3": clients.s3_client(),
        "dynamodb": clients.dynamodb_client(),
        "sqs": clients.sqs_client(),
        "bedrock": clients.bedrock_runtime_client(),
        "http": clients.http_client(),
        "provider": providers.get_provider("openai"),
        "service": service.get_service(),
        "jobs": jobs.get_job_service(),
        "idempotency": idempotency.get_idempotent_generator(),
    }


def test_after_a_restore_every_client_and_what_was_built_from_one_is_new(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the clients init built (the snapshot's), reused while nothing is restored
    before = _built_at_init(monkeypatch)
    assert _built_now() == before
    assert all(before[name] is value for name, value in _built_now().items())

    # When the environment is restored
    restore()

    # Then each is built anew, the snapshot's httpx pool closed, and the new service uses the new S3 client
    after = _built_now()
    assert [name for name in before if after[name] is before[name]] == []
    assert before["http"].is_closed and not after["http"].is_closed
    assert after["service"].store is not before["service"].store
    assert after["jobs"].queue is not None and after["jobs"].queue is not before["jobs"].queue


def test_nothing_built_from_a_client_goes_into_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _built_at_init(monkeypatch)

    snapstart.before_snapshot()

    assert [name for name, value in _built_now().items() if value is before[name]] == []


@pytest.fixture
def secret_arn(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with mock_aws():
        arn: str = boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString="sk-before-snapshot")["ARN"]
        monkeypatch.setenv("OPENAI_API_KEY_SECRET_ARN", arn)
        yield arn


def test_a_secret_read_before_the_snapshot_is_read_again_from_secrets_manager_after_a_restore(secret_arn: str) -> None:
    # Given the key init read, cached for SECRET_MAX_AGE_SECONDS, and rotated since in Secrets Manager
    assert clients.openai_api_key() == "sk-before-snapshot"
    boto3.client("secretsmanager").put_secret_value(SecretId=secret_arn, SecretString="sk-rotated")
    assert clients.openai_api_key() == "sk-before-snapshot"  # the cache every restored copy would share

    # When the environment is restored
    restore()

    # Then the key is read from its source again
    assert clients.openai_api_key() == "sk-rotated"


def test_no_secret_is_cached_when_the_snapshot_is_taken(secret_arn: str) -> None:
    assert clients.openai_api_key() == "sk-before-snapshot"
    cached = parameters.base.DEFAULT_PROVIDERS["secrets"].store
    assert any(entry.value == "sk-before-snapshot" for entry in cached.values())

    snapstart.before_snapshot()

    assert parameters.base.DEFAULT_PROVIDERS == {}
    assert cached == {}, "the provider's own cache is emptied too, not only dropped"


def _restored_copy(snapshot: object) -> list[float]:
    """One environment restored from ``snapshot`` (the random state): the hook, then what the code draws."""
    random.setstate(snapshot)  # type: ignore[arg-type]
    restore()
    retryable = ProviderError("the provider failed")
    return [random.random(), *(retry_delay(None, retryable, attempt) or 0.0 for attempt in range(3))]


def test_two_copies_restored_from_one_snapshot_draw_different_random_sequences() -> None:
    assert ProviderError("x").retryable
    snapshot = random.getstate()

    # Without the hook every copy of the snapshot draws the same (this is what the hook is for)
    random.setstate(snapshot)
    plain = [random.random() for _ in range(4)]
    random.setstate(snapshot)
    assert [random.random() for _ in range(4)] == plain

    # With it, two copies draw different numbers, the retry jitter included
    first, second = _restored_copy(snapshot), _restored_copy(snapshot)
    assert first != second
    assert first[1:] != second[1:]
    assert first[0] != plain[0] and second[0] != plain[0]


def test_the_hooks_take_a_small_part_of_the_restore_limit(monkeypatch: pytest.MonkeyPatch, secret_arn: str) -> None:
    _built_at_init(monkeypatch)
    clients.openai_api_key()

    started = time.perf_counter()
    snapstart.before_snapshot()
    restore()
    elapsed = time.perf_counter() - started

    assert elapsed < RESTORE_LIMIT_SECONDS / 20, f"{elapsed:.3f} s"


# The API function's own runtime loop under SnapStart


class Hooks:
    """A registry in snapshot_restore_py's shape whose hooks record how many Runtime API requests came before them."""

    def __init__(self, api: FakeRuntimeApi, fail: str | None = None) -> None:
        self.api, self.fail, self.ran = api, fail, []
        self.before: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
            (self.hook, ("before-1",), {}),
            (self.hook, ("before-2",), {}),
        ]
        self.after: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [(self.hook, ("after-1",), {}), (self.hook, ("after-2",), {})]

    def hook(self, name: str) -> None:
        self.ran.append((name, len(self.api.requests)))
        if name == self.fail:
            raise RuntimeError(f"{name} broke")

    def get_before_snapshot(self) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        return self.before

    def get_after_restore(self) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        return self.after


def _handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    source = "def handler(event, context):\n    return {'statusCode': 200, 'body': context.aws_request_id}\n"
    (tmp_path / "snap_handler.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "snap_handler.handler"


RESTORED = ({}, b"")  # what /restore/next answers in a restored environment: 200, no body


def test_under_snapstart_the_loop_runs_the_hooks_around_restore_next_before_any_invocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeRuntimeApi(RESTORED, invocation("req-1"))
    hooks = Hooks(api)

    assert runtime.serve(api.client(), _handler_module(tmp_path, monkeypatch), runtime.SnapshotHooks(hooks)) == 1

    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", f"{API}/restore/next"),
        ("GET", f"{API}/invocation/next"),
        ("POST", f"{API}/invocation/req-1/response"),
        ("GET", f"{API}/invocation/next"),
    ]
    # Before-snapshot hooks last-registered first, before /restore/next; after-restore hooks in order, after it
    assert hooks.ran == [("before-2", 0), ("before-1", 0), ("after-1", 1), ("after-2", 1)]
    assert hooks.before == [], "a before-snapshot hook runs once"


def test_a_failing_before_snapshot_hook_is_an_init_error_and_no_snapshot_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeRuntimeApi(RESTORED, invocation("never-fetched"))

    status = runtime.serve(api.client(), _handler_module(tmp_path, monkeypatch), runtime.SnapshotHooks(Hooks(api, fail="before-2")))

    assert status == runtime.BEFORE_SNAPSHOT_EXIT == 64
    [request] = api.requests
    assert (request.method, request.path) == ("POST", f"{API}/init/error")
    assert request.headers["Lambda-Runtime-Function-Error-Type"] == "Runtime.BeforeSnapshotError"
    error = json.loads(request.raw)
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", "before-2 broke")


def test_a_failing_after_restore_hook_is_posted_to_restore_error_and_no_invocation_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeRuntimeApi(RESTORED, invocation("never-fetched"))
    hooks = Hooks(api, fail="after-1")

    status = runtime.serve(api.client(), _handler_module(tmp_path, monkeypatch), runtime.SnapshotHooks(hooks))

    assert status == runtime.AFTER_RESTORE_EXIT == 65
    assert [(r.method, r.path) for r in api.requests] == [("GET", f"{API}/restore/next"), ("POST", f"{API}/restore/error")]
    assert api.requests[1].headers["Lambda-Runtime-Function-Error-Type"] == "Runtime.AfterRestoreError"
    assert json.loads(api.requests[1].raw)["errorMessage"] == "after-1 broke"
    assert [name for name, _ in hooks.ran] == ["before-2", "before-1", "after-1"]


def test_a_refused_restore_next_ends_the_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeRuntimeApi()  # answers 500 to every GET
    hooks = Hooks(api)

    assert runtime.serve(api.client(), _handler_module(tmp_path, monkeypatch), runtime.SnapshotHooks(hooks)) == 1

    assert [(r.method, r.path) for r in api.requests] == [("GET", f"{API}/restore/next")]
    assert [name for name, _ in hooks.ran] == ["before-2", "before-1"]


@pytest.mark.parametrize(("initialization", "snap_start"), [("snap-start", True), ("on-demand", False), (None, False)])
def test_main_runs_the_snapshot_protocol_only_under_snapstart(
    monkeypatch: pytest.MonkeyPatch, initialization: str | None, snap_start: bool
) -> None:
    seen: list[runtime.SnapshotHooks | None] = []

    def serve(client: runtime.RuntimeApiClient, spec: str, hooks: runtime.SnapshotHooks | None = None) -> int:
        seen.append(hooks)
        return 0

    monkeypatch.setattr(runtime, "serve", serve)
    monkeypatch.setattr(runtime, "set_sys_path", lambda task_root: None)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    if initialization is None:
        monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", initialization)

    with pytest.raises(SystemExit):
        runtime.main()

    [hooks] = seen
    assert (hooks is not None) is snap_start


STAND_IN_CHECK = """
import sys
sys.modules["snapshot_restore_py"] = None  # as on an interpreter that cannot import the runtime's copy
from functions.api import runtime
hooks = runtime.snapshot_hooks()
from imagegen import snapstart  # what the handler's import does
registry = sys.modules["snapshot_restore_py"]
assert snapstart.REGISTERED
assert registry.get_before_snapshot() == [(snapstart.before_snapshot, (), {})]
assert registry.get_after_restore() == [(snapstart.after_restore, (), {})]
from imagegen import clients
first = clients.http_client()
hooks.before_snapshot()
hooks.after_restore()
assert clients.http_client() is not first and first.is_closed
assert registry.get_before_snapshot() == []
print("ok")
"""


def test_without_the_runtimes_hooks_module_the_loop_installs_one_the_handlers_hooks_register_in() -> None:
    result = subprocess.run(
        [sys.executable, "-c", STAND_IN_CHECK],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'common'}", "AWS_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_before_the_snapshot_every_model_the_function_imported_is_built() -> None:
    # Deferred to their first use otherwise (imagegen.models), as a model defined now is
    from imagegen import options
    from imagegen.models import Model

    class Probe(Model):
        size: int

    assert not Probe.__pydantic_complete__

    def every(model: type[Model]) -> list[type[Model]]:
        return [model, *(sub for child in model.__subclasses__() for sub in every(child))]

    models = every(Model)[1:]
    assert Probe in models and options.ImageEditJobRequest in models
    snapstart.before_snapshot()
    assert [model.__name__ for model in models if not model.__pydantic_complete__] == []
