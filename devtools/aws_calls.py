"""A recorder of the AWS calls the functions make, for devtools.iam_eval to check against their roles.

botocore emits ``provide-client-params.<service>.<operation>`` with the caller's parameters for every API call
and for every presigned URL (``generate_presigned_url`` runs the same event: a URL is signed with the role's
credentials, so a presigned GET needs ``s3:GetObject`` as much as a GET does). ``install`` registers a handler
for it on every botocore client created from then on, and appends one JSON line per call to
``<directory>/calls-<pid>.jsonl``: which function made it, the service, the operation, the parameters that name
the resource (bucket, key, table, queue, secret, parameter, model), the client's region, and the environment
variables whose values name that resource (what lets the evaluator map a test's random names to the
template's resources, by the variable the function read them from).

Who made a call:

- in the Lambda RIE's child processes (the e2e tier), the function whose code directory is ``LAMBDA_TASK_ROOT``:
  ``devtools.rie`` starts the runtime through this file (``python devtools/aws_calls.py <handler>``, or for a
  streaming function ``python devtools/aws_calls.py --streaming``, which runs ``<LAMBDA_TASK_ROOT>/runtime.py``)
  when ``IMAGEGEN_AWS_CALL_LOG`` names a directory in its own environment;
- in process (the integration tier), the innermost frame of the call's stack that runs code from
  ``functions/<name>/``, else a frame of ``devtools.poller.SqsPoller``: the local event source mapping, which
  polls with the role of the function it feeds (``via: "event-source-mapping"``). Work a handler hands to a
  thread pool keeps the handler's attribution. A call with neither (the tests' own set-up and checks) is not
  recorded.

Nothing here is imported by the product code; ``install`` patches botocore only in the process that calls it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ENV_VAR = "IMAGEGEN_AWS_CALL_LOG"
# ``python devtools/aws_calls.py --streaming``: the streaming runtime loop instead of awslambdaric.
STREAMING_FLAG = "--streaming"
REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = str(REPO_ROOT / "functions") + os.sep
POLLER_FILE = str(REPO_ROOT / "devtools" / "poller.py")
# Parameters that name the resource of a call (everything else, bodies included, is never written down).
RESOURCE_PARAMS = ("Bucket", "Key", "TableName", "QueueUrl", "SecretId", "Name", "Names", "modelId", "Prefix")
HANDLER = "handler"
EVENT_SOURCE_MAPPING = "event-source-mapping"


@dataclass(frozen=True)
class Caller:
    """The function a call is made for, and how: by its handler, or by the event source mapping that feeds it."""

    function: str
    via: str = HANDLER


@dataclass(frozen=True)
class Call:
    """One recorded AWS call (or presigned URL)."""

    function: str
    service: str
    operation: str
    params: dict[str, Any]
    region: str | None
    via: str = HANDLER
    presign: bool = False
    env: dict[str, str] = field(default_factory=dict)
    test: str | None = None
    at: float = 0.0  # time.time() of the call: tells which test a call from a child process belongs to

    @classmethod
    def from_json(cls, line: str) -> Call:
        return cls(**json.loads(line))


def resource_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that name resources: scalars as given, RequestItems by table, Delete by object key."""
    picked: dict[str, Any] = {name: params[name] for name in RESOURCE_PARAMS if isinstance(params.get(name), str | list)}
    if isinstance(params.get("RequestItems"), Mapping):
        picked["RequestItems"] = sorted(params["RequestItems"])
    if isinstance(params.get("TransactItems"), list):
        picked["TransactItems"] = [
            {kind: {"TableName": body.get("TableName")}}
            for item in params["TransactItems"]
            for kind, body in item.items()
            if isinstance(body, Mapping)
        ]
    delete = params.get("Delete")
    if isinstance(delete, Mapping) and isinstance(delete.get("Objects"), list):
        picked["Delete"] = [obj.get("Key") for obj in delete["Objects"] if isinstance(obj, Mapping)]
    return picked


def naming_env(values: Iterable[Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables whose value is one of ``values`` (the names a call used)."""
    wanted = {value for value in values if isinstance(value, str) and value}
    return {name: value for name, value in environ.items() if value in wanted and name != ENV_VAR}


def _flat_values(params: Mapping[str, Any]) -> Iterator[Any]:
    """Every name in ``params`` as resource_params picked them, a transaction's table names included."""
    for value in params.values():
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):  # TransactItems: {kind: {"TableName": ...}}
                    yield from (body.get("TableName") for body in item.values() if isinstance(body, Mapping))
                else:
                    yield item
        else:
            yield value


class Recorder:
    """Appends calls to ``directory/calls-<pid>.jsonl``; ``attribute`` names the caller (None: not recorded)."""

    def __init__(self, directory: Path | str, attribute: Callable[[], Caller | None]) -> None:
        self.directory = Path(directory)
        self.attribute = attribute
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / f"calls-{os.getpid()}.jsonl"

    def on_params(self, params: Mapping[str, Any], model: Any, context: Mapping[str, Any] | None = None, **_: Any) -> None:
        """botocore ``provide-client-params`` handler: never changes the parameters (returns None)."""
        try:
            caller = self.attribute()
            if caller is None:
                return
            picked = resource_params(params)
            service_model = model.service_model
            call = Call(
                function=caller.function,
                via=caller.via,
                service=str(service_model.signing_name or service_model.endpoint_prefix),
                operation=str(model.name),
                params=picked,
                region=(context or {}).get("client_region"),
                presign=bool((context or {}).get("is_presign_request")),
                env=naming_env(_flat_values(picked), os.environ),
                test=os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or None,
                at=time.time(),
            )
            self.write(call)
        except Exception as error:  # a recorder bug must not change what the code under test does
            print(f"aws_calls: could not record a call: {error!r}", file=sys.stderr)

    def write(self, call: Call) -> None:
        line = json.dumps(asdict(call), sort_keys=True) + "\n"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line)


_installed: Recorder | None = None


def install(directory: Path | str, attribute: Callable[[], Caller | None]) -> Recorder:
    """Record the calls of every botocore client created from now on in this process (idempotent: the last
    ``install`` sets where and how)."""
    global _installed
    from botocore.client import BaseClient

    recorder = Recorder(directory, attribute)
    first = _installed is None
    _installed = recorder
    if first:
        original_init = BaseClient.__init__

        def __init__(self: BaseClient, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.meta.events.register("provide-client-params.*.*", _dispatch, unique_id="imagegen-aws-call-recorder")

        BaseClient.__init__ = __init__  # type: ignore[method-assign]
    return recorder


def _dispatch(**kwargs: Any) -> None:
    if _installed is not None:
        _installed.on_params(**kwargs)


# --- attribution -------------------------------------------------------------------------------------------------

_inherited = threading.local()


def caller_from_stack(frame: FrameType | None) -> Caller | None:
    """The innermost ``functions/<name>/`` frame's function; else SqsPoller's (its function's event source
    mapping); else what the thread inherited from the handler that submitted its work."""
    poller: Caller | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(FUNCTIONS_DIR):
            return Caller(filename[len(FUNCTIONS_DIR) :].split(os.sep, 1)[0])
        if poller is None and filename == POLLER_FILE and type(frame.f_locals.get("self")).__name__ == "SqsPoller":
            # Which function it feeds is the template's to say (the queue's event source mapping).
            poller = Caller("", EVENT_SOURCE_MAPPING)
        frame = frame.f_back
    return poller or getattr(_inherited, "caller", None)


def in_process_caller() -> Caller | None:
    return caller_from_stack(sys._getframe(1))


def propagate_to_thread_pools() -> None:
    """Work submitted to a ThreadPoolExecutor keeps the submitting thread's caller (idempotent)."""
    if getattr(ThreadPoolExecutor.submit, "_imagegen_propagates", False):
        return
    original = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        caller = caller_from_stack(sys._getframe(1))
        if caller is None:
            return original(self, fn, *args, **kwargs)

        def run(*inner_args: Any, **inner_kwargs: Any) -> Any:
            previous = getattr(_inherited, "caller", None)
            _inherited.caller = caller
            try:
                return fn(*inner_args, **inner_kwargs)
            finally:
                _inherited.caller = previous

        return original(self, run, *args, **kwargs)

    submit._imagegen_propagates = True  # type: ignore[attr-defined]
    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]


def install_in_process(directory: Path | str) -> Recorder:
    """The integration tier's recorder: callers found on the stack, thread pools included."""
    propagate_to_thread_pools()
    return install(directory, in_process_caller)


TIMELINE = "tests.jsonl"


def mark_test(directory: Path | str, nodeid: str) -> None:
    """Note that test ``nodeid`` starts now (a call with no test of its own is given the test running then)."""
    with (Path(directory) / TIMELINE).open("a", encoding="utf-8") as timeline:
        timeline.write(json.dumps({"at": time.time(), "test": nodeid}) + "\n")


def read_calls(directory: Path | str) -> list[Call]:
    """Every call recorded under ``directory``, from all processes; a call a child process made is given the test
    that was running when it was made (``mark_test``)."""
    calls: list[Call] = []
    for path in sorted(Path(directory).glob("calls-*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                calls.append(Call.from_json(line))
            except (ValueError, TypeError) as error:  # a process killed in the middle of a line
                print(f"aws_calls: {path.name}:{number} is not a call ({error}); skipped", file=sys.stderr)
    timeline_file = Path(directory) / TIMELINE
    if not timeline_file.is_file():
        return calls
    marks = [json.loads(line) for line in timeline_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    starts = [mark["at"] for mark in marks]
    placed: list[Call] = []
    for call in calls:
        index = bisect.bisect_right(starts, call.at) - 1
        if call.test is None and call.at and index >= 0:
            call = dataclasses.replace(call, test=marks[index]["test"])
        placed.append(call)
    return placed


def _run_runtime(argv: list[str]) -> None:
    """``python devtools/aws_calls.py <handler>``: ``python -m awslambdaric <handler>`` with the recorder on,
    every call attributed to the function in ``LAMBDA_TASK_ROOT``."""
    # As with ``-m``, the first path entry is the working directory (the function's code), not this file's.
    sys.path[0] = os.getcwd()
    function = Path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())).name
    caller = Caller(function)
    install(os.environ[ENV_VAR], lambda: caller)
    from awslambdaric.__main__ import main

    main([sys.argv[0], *argv])


def _run_streaming_runtime() -> None:
    """``python devtools/aws_calls.py --streaming``: ``<LAMBDA_TASK_ROOT>/runtime.py`` as ``__main__`` (what the
    function's ``bootstrap`` exec wrapper runs) with the recorder on; the loop reads ``_HANDLER`` and
    ``AWS_LAMBDA_RUNTIME_API`` from the environment as it does there."""
    task_root = Path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    runtime = task_root / "runtime.py"
    # As ``python <task root>/runtime.py``: the script's directory first on sys.path, not this file's.
    sys.path[0] = str(task_root)
    sys.argv = [str(runtime)]
    caller = Caller(task_root.name)
    install(os.environ[ENV_VAR], lambda: caller)
    runpy.run_path(str(runtime), run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:] == [STREAMING_FLAG]:
        _run_streaming_runtime()
    else:
        _run_runtime(sys.argv[1:])
