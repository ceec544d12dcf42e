"""Lambda functions under the real Runtime Interface Emulator that the aws-sam-cli wheel ships.

Each ``RieProcess`` is what ``sam local invoke`` runs in its container: ``aws-lambda-rie`` driving
``python -m awslambdaric <handler>`` with the function's code directory as the working directory
(/var/task) and the layer directories on PYTHONPATH (/opt/python). An RIE serves one invocation at a
time (a second concurrent one makes it panic), so ``FunctionPool`` hands each request an idle process.

A function with ``FunctionConfig.streaming`` runs as the API function would with ``AWS_LAMBDA_EXEC_WRAPPER``: its
``bootstrap`` wrapper starts ``runtime.py`` (the streaming runtime loop, docs/streaming.md), whose Runtime API is a
``StreamTap`` in front of the RIE's, because the RIE itself hands the invoker a streamed answer only once it is
complete. ``invoke_stream`` yields the answer's pieces as the tap reads them; ``invoke`` still returns the RIE's
whole answer (the prelude, eight NUL bytes, the body).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import queue
import shutil
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from devtools import aws_calls
from devtools.procs import LOOPBACK, ManagedProcess, StartupError, free_port
from devtools.stream_tap import StreamPiece, StreamTap

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# What the managed runtime passes an exec wrapper after its interpreter (the wrapper drops it; runtime.py's docstring).
MANAGED_BOOTSTRAP = "/var/runtime/bootstrap.py"
# The RIE answers a runtime's /error before the tap hands that error over: how long the tap may still take once
# the RIE has answered, before an answer it never saw (the runtime died, or timed out before posting) is ended.
TAP_GRACE_SECONDS = 2.0
# How long past the function's timeout the RIE may take to answer an invocation it is ending.
RIE_ANSWER_SLACK_SECONDS = 30.0
# Test sessions record the functions' AWS calls by starting the runtime through this file.
CALL_RECORDER = Path(aws_calls.__file__).resolve()
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def find_rie() -> Path:
    """``samcli/local/rapid/aws-lambda-rie-<arch>`` for this host, made executable if it is not."""
    spec = importlib.util.find_spec("samcli")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("aws-sam-cli is not installed in this interpreter: run `make dev`")
    arch = ARCHES.get(platform.machine().lower())
    if arch is None:
        raise StartupError(f"no Runtime Interface Emulator for machine {platform.machine()!r}")
    path = Path(next(iter(spec.submodule_search_locations))) / "local" / "rapid" / f"aws-lambda-rie-{arch}"
    if not path.is_file():
        raise StartupError(f"Runtime Interface Emulator not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass(frozen=True)
class Invocation:
    """What the RIE answered: its HTTP status and the function's raw response payload."""

    status: int
    payload: bytes


@dataclass(frozen=True)
class FunctionConfig:
    """A function as the template declares it: code directory, handler, limits and environment."""

    code_dir: Path
    name: str = "function"
    handler: str = "app.lambda_handler"
    layer_dirs: Sequence[Path] = ()
    timeout: int = 29
    memory_mb: int = 1024
    region: str = "us-east-1"
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    # Run code_dir's bootstrap exec wrapper and runtime.py (the streaming runtime loop) instead of awslambdaric.
    streaming: bool = False

    def environment(self) -> dict[str, str]:
        """A Lambda-like environment: nothing from the caller's shell but PATH, then the function's variables."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "PYTHONPATH": os.pathsep.join(str(Path(d).resolve()) for d in self.layer_dirs),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Keep the developer's ~/.aws files and instance metadata out of the function.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(self.env)
        return env


def runtime_command(
    config: FunctionConfig, environ: Mapping[str, str] = os.environ, *, tap_address: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The runtime's command line and environment: ``python -m awslambdaric <handler>``, or, when this process's
    environment sets ``IMAGEGEN_AWS_CALL_LOG`` (the test session does), the same runtime started through
    ``devtools/aws_calls.py``, which records the function's AWS calls into that directory (test-only: the
    function's own code and environment are unchanged but for that one variable).

    A ``streaming`` function's runtime is ``<code_dir>/bootstrap <python> /var/runtime/bootstrap.py`` with
    ``_HANDLER`` set, as the managed runtime starts an exec wrapper (recording: ``aws_calls.py --streaming``, which
    runs ``runtime.py`` itself), under ``env AWS_LAMBDA_RUNTIME_API=<tap_address>``: the RIE sets that variable to
    its own Runtime API, and the runtime must talk to the tap in front of it instead."""
    env = config.environment()
    log_dir = environ.get(aws_calls.ENV_VAR)
    if log_dir:
        env[aws_calls.ENV_VAR] = log_dir
    if not config.streaming:
        if not log_dir:
            return [config.python, "-m", "awslambdaric", config.handler], env
        return [config.python, str(CALL_RECORDER), config.handler], env
    if not tap_address:
        raise ValueError(f"{config.name}: a streaming runtime talks to a StreamTap, and no tap_address was given")
    env_tool = shutil.which("env", path=env["PATH"])
    if env_tool is None:
        raise StartupError(f"{config.name}: no env(1) on PATH {env['PATH']!r} to point the runtime at its stream tap")
    env["_HANDLER"] = config.handler
    prefix = [env_tool, f"AWS_LAMBDA_RUNTIME_API={tap_address}"]
    if log_dir:
        return [*prefix, config.python, str(CALL_RECORDER), aws_calls.STREAMING_FLAG], env
    return [*prefix, str(config.code_dir / "bootstrap"), config.python, MANAGED_BOOTSTRAP], env


def _handler_file(config: FunctionConfig) -> Path | None:
    """The handler module's file in the code directory or a layer directory (both are on the runtime's path)."""
    relative = config.handler.rsplit(".", 1)[0].replace(".", "/") + ".py"
    return next((path for path in (Path(d) / relative for d in (config.code_dir, *config.layer_dirs)) if path.is_file()), None)


def _accepts(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=0.5):
        return True


class RieProcess:
    """One ``aws-lambda-rie`` + runtime; ``invoke`` posts an event to it. Not for concurrent use."""

    def __init__(self, config: FunctionConfig, *, log_path: Path, startup_timeout: float = 15.0) -> None:
        self.config = config
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.port = 0
        self.api_port = 0
        self._process: ManagedProcess | None = None
        self._http: httpx.Client | None = None
        self._tap: StreamTap | None = None

    @property
    def invoke_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{INVOKE_PATH}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def start(self) -> Self:
        """Start the RIE and wait until it accepts connections (the runtime itself starts on first invoke)."""
        if self._process is not None:
            return self
        code_dir = self.config.code_dir
        if _handler_file(self.config) is None:
            raise StartupError(f"{self.config.name}: handler {self.config.handler!r} not found in {code_dir}")
        if self.config.streaming:
            missing = [name for name in ("bootstrap", "runtime.py") if not (code_dir / name).is_file()]
            if missing:
                raise StartupError(f"{self.config.name}: a streaming function needs {' and '.join(missing)} in {code_dir}")
        self.port, self.api_port = free_port(), free_port()
        try:
            tap_address = None
            if self.config.streaming:
                self._tap = StreamTap(f"{LOOPBACK}:{self.api_port}")
                self._tap.start()
                tap_address = self._tap.address
            runtime, env = runtime_command(self.config, tap_address=tap_address)
            argv = [
                str(find_rie()),
                "--runtime-interface-emulator-address",
                f"{LOOPBACK}:{self.port}",
                "--runtime-api-address",
                f"{LOOPBACK}:{self.api_port}",
                *runtime,
            ]
            process = ManagedProcess(f"Lambda RIE ({self.config.name})", argv, log_path=self.log_path, env=env, cwd=code_dir)
            self._process = process
            process.start()
            process.wait_until(lambda: _accepts(self.port), self.startup_timeout, f"listening on {LOOPBACK}:{self.port}")
        except BaseException:
            self.stop()
            raise
        self._http = httpx.Client(timeout=None)
        return self

    def invoke(self, payload: bytes, timeout: float | None = None) -> Invocation:
        """POST one event; raises httpx.TimeoutException after ``timeout`` s, httpx.TransportError if the RIE died.

        A streaming function's answer is the RIE's too (prelude, delimiter, body); what its tap saw of it is claimed
        and dropped, so that the next ``invoke_stream`` does not take it for its own."""
        tap = self._tap
        if tap is None:
            return self._post(payload, timeout)
        ended = threading.Event()

        def drain() -> None:
            try:
                for piece in tap.next_response(timeout=timeout if timeout is not None else self._answer_within()):
                    if piece.terminal:
                        ended.set()
            except TimeoutError:
                pass  # the invocation is stuck: _post times out too, and the pool replaces this process

        drainer = threading.Thread(target=drain, name=f"tap-drain-{self.config.name}", daemon=True)
        drainer.start()
        try:
            return self._post(payload, timeout)
        finally:
            self._settle(tap, ended)
            drainer.join(TAP_GRACE_SECONDS)

    def invoke_stream(self, payload: bytes, timeout: float | None = None) -> Iterator[StreamPiece]:
        """Invoke a streaming function and yield its answer's pieces as the runtime writes them, up to the terminal
        one (end, function_error, buffered, aborted). ``timeout`` bounds each wait for a piece (TimeoutError).

        The invocation is over only when the RIE has answered too: closing the generator early waits for the rest
        of the answer (the function keeps running after its client went, as on Lambda), and a process whose
        invocation does not end within the function's timeout is stopped (``alive()`` is then false)."""
        tap, http = self._tap, self._http
        if tap is None or http is None:
            raise RuntimeError(f"RieProcess ({self.config.name}) is not a started streaming function")
        ended = threading.Event()

        def call() -> None:
            try:
                self._post(payload, self._answer_within())
            except httpx.HTTPError:
                pass  # the tap's pieces say what the client gets; the RIE's own answer to a streamed call is moot
            finally:
                self._settle(tap, ended)

        caller = threading.Thread(target=call, name=f"invoke-{self.config.name}", daemon=True)
        caller.start()
        pieces = tap.next_response(timeout=timeout if timeout is not None else self._answer_within())
        try:
            for piece in pieces:
                if piece.terminal:
                    ended.set()
                yield piece
        except GeneratorExit:
            try:
                for piece in pieces:  # the rest of an answer the caller left early
                    if piece.terminal:
                        ended.set()
            except TimeoutError:
                pass
            raise
        finally:
            if ended.is_set():  # the RIE answers once the body is complete
                caller.join(self._answer_within() + TAP_GRACE_SECONDS)
            if caller.is_alive() or not ended.is_set():
                self.stop()  # an invocation that will not end (or a tap that stalled): this process must not serve again

    def _answer_within(self) -> float:
        return self.config.timeout + RIE_ANSWER_SLACK_SECONDS

    def _settle(self, tap: StreamTap, ended: threading.Event) -> None:
        """Once the RIE has answered: end the answer at the tap if it never completed there (the runtime died or
        timed out before posting anything), after the grace in which a posted /error may still arrive."""
        if not ended.wait(TAP_GRACE_SECONDS):
            tap.interrupt(f"the RIE answered the invocation of {self.config.name} without a complete answer from its runtime")

    def _post(self, payload: bytes, timeout: float | None) -> Invocation:
        if self._http is None:
            raise RuntimeError("RieProcess is not started")
        response = self._http.post(
            self.invoke_url,
            content=payload,
            headers={"content-type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )
        return Invocation(response.status_code, response.content)

    def failure(self, what: str) -> StartupError:
        """A StartupError with this function's log tail."""
        if self._process is None:
            return StartupError(f"Lambda RIE ({self.config.name}): {what}")
        return self._process.failure(what)

    def stop(self) -> None:
        """Stop the RIE and its runtime (the whole process group); idempotent."""
        process, self._process = self._process, None
        http, self._http = self._http, None
        tap, self._tap = self._tap, None
        if http is not None:
            http.close()
        if process is not None:
            process.stop(grace=5.0)
        if tap is not None:
            tap.stop()  # after the runtime: it ends any answer still open there

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class PoolBusy(RuntimeError):
    """No function instance became free in time."""


class FunctionPool:
    """``size`` RIE processes for one function; each invocation borrows an idle one.

    A process that timed out or died is replaced before it serves again, so a stuck or crashed runtime
    never receives a second, concurrent invocation.
    """

    def __init__(self, factory: Callable[[int], RieProcess], size: int = 2, acquire_timeout: float = 60.0) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.workers = [factory(i) for i in range(size)]
        self.acquire_timeout = acquire_timeout
        self._idle: queue.Queue[RieProcess] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> Self:
        try:
            for worker in self.workers:
                worker.start()
                self._idle.put(worker)
        except BaseException:
            self.stop()
            raise
        return self

    def _acquire(self) -> RieProcess:
        try:
            return self._idle.get(timeout=self.acquire_timeout)
        except queue.Empty:
            raise PoolBusy(f"all {len(self.workers)} local function instances stayed busy") from None

    def invoke(self, payload: bytes, timeout: float | None = None) -> Invocation:
        """Invoke on an idle process; PoolBusy if none frees up within ``acquire_timeout``."""
        worker = self._acquire()
        healthy = False
        try:
            if not worker.alive():
                self._replace(worker)
            result = worker.invoke(payload, timeout)
            healthy = True
            return result
        finally:
            if not healthy:
                self._replace(worker)
            if not self._closed:
                self._idle.put(worker)

    def invoke_stream(self, payload: bytes, timeout: float | None = None) -> Iterator[StreamPiece]:
        """``RieProcess.invoke_stream`` on an idle process (taken at the first ``next``; PoolBusy as ``invoke``),
        which returns to the pool when the generator closes: at once if its invocation ended, else replaced."""
        worker = self._acquire()
        healthy = False
        try:
            if not worker.alive():
                self._replace(worker)
            try:
                yield from worker.invoke_stream(payload, timeout)
            except GeneratorExit:
                healthy = worker.alive()  # closing the worker's stream waited for its invocation, or stopped it
                raise
            healthy = True
        finally:
            if not healthy:
                self._replace(worker)
            if not self._closed:
                self._idle.put(worker)

    def warm(self, payload: bytes, timeout: float = 60.0) -> list[Invocation]:
        """Invoke every process once (cold start now, not on the first request); returns each answer."""
        results: list[Invocation] = []
        for _ in self.workers:
            worker = self._idle.get(timeout=self.acquire_timeout)
            try:
                results.append(worker.invoke(payload, timeout))
            except httpx.HTTPError as exc:
                raise worker.failure(f"warm-up invocation failed ({exc!r})") from exc
            finally:
                self._idle.put(worker)
        return results

    def _replace(self, worker: RieProcess) -> None:
        with self._lock:
            worker.stop()
            if not self._closed:
                worker.start()

    def stop(self) -> None:
        """Stop every process, busy ones included; idempotent."""
        with self._lock:
            self._closed = True
            for worker in self.workers:
                worker.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
