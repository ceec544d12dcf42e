"""The API function's Lambda runtime loop: every invocation is answered in streaming mode (docs/streaming.md).

API Gateway's ``STREAM`` integration wants each answer as an HTTP-integration stream: a JSON prelude (status,
headers), eight NUL bytes, then the payload as it is produced. awslambdaric can only post one buffer, so this
stdlib-only loop replaces it for the API function: it imports ``_HANDLER`` (``app.lambda_handler``), fetches each
invocation from the Runtime API, calls the handler with a context like awslambdaric's, and posts the answer to
``/invocation/{id}/response`` with ``Lambda-Runtime-Function-Response-Mode: streaming``:

- a proxy dict (today's Powertools answer) becomes the prelude plus its decoded body, sent whole;
- a :class:`StreamingResponse` becomes the prelude plus each chunk of its body, written as soon as it is produced.
  The POST starts with the body's first item, so a handler that wants the prelude out before it has payload
  yields ``b""`` first.

Failures: an exception before anything was posted (the handler raised, its answer is malformed, or the stream's
body raised before its first item) goes to ``/invocation/{id}/error`` with Lambda's error JSON. That is a
function error to Lambda (Errors metric, ``Function.Unhandled``-style log), and what API Gateway shows for it on a
STREAM route cannot be checked offline (on a buffered route it is a 502); it only happens for crashes outside the
Powertools resolver, which turns route exceptions into proxy dicts, so a prelude of our own is not invented for
it. An exception after the POST started ends the chunked body with the trailers
``Lambda-Runtime-Function-Error-Type`` and ``Lambda-Runtime-Function-Error-Body`` (base64 error JSON); the
handler side normally sends an SSE ``error`` event and ends cleanly instead. An import error is posted to
``/runtime/init/error`` and the process exits 1; so does any broken Runtime API connection or 5xx from it (the API
says the runtime must exit then). Logs are single JSON lines on stderr, so each is one CloudWatch event.

How it starts on the managed python3.12 runtime: ``AWS_LAMBDA_EXEC_WRAPPER=/var/task/bootstrap``. The runtime's
own ``/var/runtime/bootstrap`` then runs ``exec -- "$wrapper" /var/lang/bin/python3.12 /var/runtime/bootstrap.py``
with the function's environment (``AWS_LAMBDA_RUNTIME_API``, ``_HANDLER``, ``LAMBDA_TASK_ROOT``, credentials)
already set, exactly as it does for the Lambda Web Adapter's layer, whose ``/opt/bootstrap`` is one line,
``exec -- "${LAMBDA_TASK_ROOT}/${_HANDLER}"``, ignoring those arguments. Our ``bootstrap`` keeps the interpreter
it is given (``$1``) and runs this file with it instead of ``bootstrap.py``. Wrapper scripts are supported on every
managed runtime but the OS-only ones, so python3.12 qualifies. What ``bootstrap.py`` would have done and we need is
redone in :func:`main`: the sys.path order ``LAMBDA_TASK_ROOT``, ``/opt/python/lib/pythonX.Y/site-packages``,
``/opt/python`` (the layer) when ``PYTHONPATH`` is unset, and unbuffered output.

SnapStart (docs/snapstart.md; ``AWS_LAMBDA_INITIALIZATION_TYPE`` is ``snap-start``): Lambda snapshots the
environment when the runtime, its init done, asks ``GET /runtime/restore/next``, and answers that call in each
environment restored from the snapshot. So after loading the handler this loop does what awslambdaric's
``on_init_complete`` does: it runs the before-snapshot hooks (in reverse order of registration), calls
``/restore/next``, runs the after-restore hooks (in order), and only then asks for invocations. A before-snapshot hook
that raises is posted to ``/init/error`` as ``Runtime.BeforeSnapshotError`` (exit 64), an after-restore hook that
raises to ``/runtime/restore/error`` as ``Runtime.AfterRestoreError`` (exit 65), as awslambdaric does. The hooks are
those registered with ``snapshot_restore_py`` (imagegen/snapstart.py's among them); when this interpreter cannot
import it, :func:`snapshot_hooks` installs a stand-in with the same four functions before the handler is imported,
so the handler's registrations land where this loop reads them.

This file is the script ``__main__`` in Lambda, ``runtime`` to app.py there, and ``functions.api.runtime`` in tests:
three module objects, so the loop recognises a streaming answer by its shape, not by ``isinstance``.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import os
import site
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, NoReturn

API_VERSION = "2018-06-01"
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
RESPONSE_MODE_HEADER = "Lambda-Runtime-Function-Response-Mode"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_HEADER = "Lambda-Runtime-Function-Error-Body"
# SnapStart (awslambdaric's bootstrap.py and lambda_runtime_exception.py use the same values and exit codes)
INITIALIZATION_TYPE_ENV = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"
HOOKS_MODULE = "snapshot_restore_py"
BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"
BEFORE_SNAPSHOT_EXIT = 64
AFTER_RESTORE_EXIT = 65
# Set by main() before the handler is imported: the handler may then answer with a StreamingResponse (app.py serves
# ``stream: true`` only then; under awslambdaric or ``sam local`` a stream could not be posted).
STREAMING_RUNTIME_ENV = "IMAGEGEN_STREAMING_RUNTIME"

Handler = Callable[[Any, "LambdaContext"], object]
ErrorJson = dict[str, Any]


@dataclass(frozen=True)
class StreamingResponse:
    """What a handler returns to stream: the prelude's status and headers, then the body as it is produced."""

    status_code: int
    headers: Mapping[str, str]
    body: Iterable[bytes]


class RuntimeApiError(Exception):
    """The Runtime API connection broke or answered 5xx: the runtime must exit."""


class InitError(Exception):
    """The handler could not be loaded; ``error`` is what goes to ``/runtime/init/error``."""

    def __init__(self, error: ErrorJson) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


@dataclass(frozen=True)
class Invocation:
    """One ``/invocation/next`` answer: the event bytes and the Lambda-Runtime-* headers."""

    request_id: str
    event: bytes
    deadline_ms: int
    invoked_function_arn: str
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None


@dataclass
class LambdaContext:
    """The context awslambdaric builds (the attributes Powertools and imagegen read), from one invocation."""

    aws_request_id: str
    invoked_function_arn: str
    deadline_ms: int
    client_context: SimpleNamespace | None = None
    identity: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(cognito_identity_id=None, cognito_identity_pool_id=None))
    tenant_id: str | None = None
    # Read per invocation from the environment, as awslambdaric does (memory stays a string there too).
    function_name: str | None = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    function_version: str | None = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_VERSION"))
    memory_limit_in_mb: str | None = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
    log_group_name: str | None = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME"))
    log_stream_name: str | None = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"))

    @classmethod
    def of(cls, invocation: Invocation) -> LambdaContext:
        client_context = _json_header(invocation.client_context, "Lambda-Runtime-Client-Context")
        identity = _json_header(invocation.cognito_identity, "Lambda-Runtime-Cognito-Identity") or {}
        context = cls(
            aws_request_id=invocation.request_id,
            invoked_function_arn=invocation.invoked_function_arn,
            deadline_ms=invocation.deadline_ms,
            tenant_id=invocation.tenant_id,
            identity=SimpleNamespace(
                cognito_identity_id=identity.get("cognitoIdentityId"),
                cognito_identity_pool_id=identity.get("cognitoIdentityPoolId"),
            ),
        )
        if client_context is not None:
            client = SimpleNamespace(**client_context.get("client") or {})
            context.client_context = SimpleNamespace(client=client, custom=client_context.get("custom"), env=client_context.get("env"))
        return context

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def _json_header(value: str | None, name: str) -> dict[str, Any] | None:
    if not value:
        return None
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} is not a JSON object")
    return parsed


def error_json(exc: BaseException) -> ErrorJson:
    """Lambda's error shape; the stack trace starts at the first frame outside this file, as awslambdaric's does."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = str(Path(__file__).resolve())
    while frames and str(Path(frames[0].filename).resolve()) == here:
        frames.pop(0)
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": traceback.format_list(frames)}


def log(level: str, message: str, **fields: Any) -> None:
    print(json.dumps({"level": level, "message": message, **fields}, default=str), file=sys.stderr, flush=True)


class ResponseStream:
    """One streamed ``/response`` POST with the chunked framing written by hand (http.client sends no trailers)."""

    def __init__(self, connection: http.client.HTTPConnection, request_id: str) -> None:
        self._connection = connection
        self.request_id = request_id

    def write(self, data: bytes) -> None:
        """Send ``data`` as one chunk now (an empty one would end the body, so it is skipped)."""
        if data:
            self._send(b"%x\r\n%b\r\n" % (len(data), data))

    def finish(self, error: ErrorJson | None = None) -> int:
        """End the body (with the error trailers if ``error``) and return the Runtime API's status."""
        trailers = b""
        if error is not None:
            body = base64.b64encode(json.dumps(error).encode()).decode()
            trailers = f"{ERROR_TYPE_HEADER}: {_header_value(error['errorType'])}\r\n{ERROR_BODY_HEADER}: {body}\r\n".encode()
        self._send(b"0\r\n" + trailers + b"\r\n")
        try:
            response = self._connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeApiError(f"no answer to the response of {self.request_id}: {exc!r}") from exc
        finally:
            self._connection.close()
        return response.status

    def abort(self) -> None:
        self._connection.close()

    def _send(self, data: bytes) -> None:
        try:
            self._connection.send(data)
        except OSError as exc:
            self._connection.close()
            raise RuntimeApiError(f"the response stream of {self.request_id} broke: {exc!r}") from exc


def _header_value(value: str) -> str:
    """A header-safe rendering: printable ASCII only (an exception's name may be any identifier)."""
    return "".join(c if " " <= c <= "~" else "?" for c in value) or "Unknown"


class RuntimeApiClient:
    """The Runtime API at ``address`` (host:port), one connection per call; failures raise RuntimeApiError."""

    def __init__(self, address: str, connect: Callable[[], http.client.HTTPConnection] | None = None) -> None:
        self.address = address
        self._connect = connect or self._tcp_connection
        self.base = f"/{API_VERSION}/runtime"

    def _tcp_connection(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.address, timeout=None)
        connection.connect()
        if connection.sock is not None:
            # Each chunk goes out in one send; without this Nagle could hold a small chunk back for an ACK.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def next_invocation(self) -> Invocation:
        """Block until the next invocation (``GET /invocation/next``)."""
        status, headers, body = self._call("GET", "/invocation/next")
        if status != 200:
            raise RuntimeApiError(f"/invocation/next answered {status}: {body[:500]!r}")
        request_id = headers.get("lambda-runtime-aws-request-id")
        if not request_id:
            raise RuntimeApiError("/invocation/next answered without Lambda-Runtime-Aws-Request-Id")
        deadline = headers.get("lambda-runtime-deadline-ms", "")
        return Invocation(
            request_id=request_id,
            event=body,
            deadline_ms=int(deadline) if deadline.isdigit() else 0,
            invoked_function_arn=headers.get("lambda-runtime-invoked-function-arn", ""),
            trace_id=headers.get("lambda-runtime-trace-id"),
            client_context=headers.get("lambda-runtime-client-context"),
            cognito_identity=headers.get("lambda-runtime-cognito-identity"),
            tenant_id=headers.get("lambda-runtime-aws-tenant-id"),
        )

    def post_init_error(self, error: ErrorJson, error_type: str | None = None) -> None:
        self._post_error("/init/error", error, error_type)

    def restore_next(self) -> None:
        """SnapStart: block until this environment is restored from the snapshot (``GET /restore/next``)."""
        status, _, body = self._call("GET", "/restore/next")
        if status != 200:
            raise RuntimeApiError(f"/restore/next answered {status}: {body[:500]!r}")

    def post_restore_error(self, error: ErrorJson) -> None:
        self._post_error("/restore/error", error, AFTER_RESTORE_ERROR)

    def post_error(self, request_id: str, error: ErrorJson) -> None:
        self._post_error(f"/invocation/{request_id}/error", error)

    def open_stream(self, request_id: str) -> ResponseStream:
        """Start the streamed ``/response`` POST: headers only, the body follows through the stream."""
        connection = self._new_connection()
        try:
            connection.putrequest("POST", f"{self.base}/invocation/{request_id}/response", skip_accept_encoding=True)
            connection.putheader(RESPONSE_MODE_HEADER, "streaming")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.putheader("Content-Type", HTTP_INTEGRATION_CONTENT_TYPE)
            connection.putheader("Trailer", f"{ERROR_TYPE_HEADER}, {ERROR_BODY_HEADER}")
            connection.endheaders()
        except OSError as exc:
            connection.close()
            raise RuntimeApiError(f"could not start the response of {request_id}: {exc!r}") from exc
        return ResponseStream(connection, request_id)

    def _post_error(self, path: str, error: ErrorJson, error_type: str | None = None) -> None:
        headers = {ERROR_TYPE_HEADER: _header_value(error_type or str(error.get("errorType", ""))), "Content-Type": "application/json"}
        status, _, body = self._call("POST", path, json.dumps(error).encode(), headers)
        if status != 202:
            log("ERROR", f"the Runtime API refused {path}", status=status, answer=body[:500].decode(errors="replace"))

    def _new_connection(self) -> http.client.HTTPConnection:
        try:
            return self._connect()
        except OSError as exc:
            raise RuntimeApiError(f"cannot reach the Runtime API at {self.address}: {exc!r}") from exc

    def _call(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self._new_connection()
        try:
            connection.request(method, self.base + path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeApiError(f"{method} {path} failed: {exc!r}") from exc
        finally:
            connection.close()
        if response.status >= 500:
            raise RuntimeApiError(f"{method} {path} answered {response.status}: {data[:500]!r}")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def load_handler(spec: str) -> Handler:
    """Import ``module.function`` as awslambdaric does; an InitError carries the error JSON Lambda expects."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name or not function_name:
        raise InitError(
            {
                "errorMessage": f"Bad handler '{spec}': expected module.function",
                "errorType": "Runtime.MalformedHandlerName",
                "stackTrace": [],
            }
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        # awslambdaric reports these two without importlib's frames, which say nothing about the function
        message = f"Unable to import module '{module_name}': {exc}"
        raise InitError({"errorMessage": message, "errorType": "Runtime.ImportModuleError", "stackTrace": []}) from exc
    except SyntaxError as exc:
        message = f"Syntax error in module '{module_name}': {exc}"
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise InitError({"errorMessage": message, "errorType": "Runtime.UserCodeSyntaxError", "stackTrace": trace}) from exc
    except Exception as exc:  # module code failing at import is an init error too, under its own type
        raise InitError(error_json(exc)) from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise InitError(
            {
                "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'",
                "errorType": "Runtime.HandlerNotFound",
                "stackTrace": [],
            }
        )
    return handler  # type: ignore[no-any-return]


def answer_parts(result: object) -> tuple[dict[str, Any], Iterator[bytes]]:
    """The prelude and the payload chunks of a handler's answer: a proxy dict or a StreamingResponse."""
    if isinstance(result, Mapping):
        return _proxy_parts(result)
    status, headers, body = (getattr(result, name, None) for name in ("status_code", "headers", "body"))
    if isinstance(status, int) and isinstance(headers, Mapping) and isinstance(body, Iterable) and not isinstance(body, str | bytes):
        return {"statusCode": status, "headers": dict(headers)}, iter(body)
    raise TypeError(f"a handler must return an API Gateway proxy dict or a StreamingResponse, not {type(result).__name__}")


def _proxy_parts(result: Mapping[str, Any]) -> tuple[dict[str, Any], Iterator[bytes]]:
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"a proxy response needs an integer statusCode, got {status!r}")
    prelude: dict[str, Any] = {"statusCode": status, "headers": dict(result.get("headers") or {})}
    # Only what the handler gave: REST proxy answers carry multiValueHeaders, HTTP API and URL ones cookies.
    for key in ("multiValueHeaders", "cookies"):
        if result.get(key):
            prelude[key] = result[key]
    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise TypeError(f"a proxy response body must be a string, got {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        payload = base64.b64decode(body, validate=True)
    else:
        payload = body.encode()
    return prelude, iter((payload,))


def encode_prelude(prelude: Mapping[str, Any]) -> bytes:
    """The prelude and its delimiter; json.dumps escapes NUL, so the delimiter is the first NUL in the stream."""
    return json.dumps(prelude, separators=(",", ":")).encode() + PRELUDE_DELIMITER


def _close(chunks: Iterator[bytes] | None) -> None:
    """Let a generator body run its cleanup (finally blocks, closing provider streams) whatever happened."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def handle(client: RuntimeApiClient, handler: Handler, invocation: Invocation) -> None:
    """Run one invocation and post its answer; RuntimeApiError escapes, handler exceptions do not."""
    if invocation.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    chunks: Iterator[bytes] | None = None
    try:
        event = json.loads(invocation.event) if invocation.event else {}
        result = handler(event, LambdaContext.of(invocation))
        prelude, chunks = answer_parts(result)
        first = _as_bytes(next(chunks, b""))
        head = encode_prelude(prelude)
    except Exception as exc:
        _close(chunks)
        error = error_json(exc)
        log("ERROR", "invocation failed before its response started", requestId=invocation.request_id, **error)
        client.post_error(invocation.request_id, error)
        return
    stream = client.open_stream(invocation.request_id)
    failure: ErrorJson | None = None
    try:
        stream.write(head)
        stream.write(first)
        while True:
            try:
                chunk = _as_bytes(next(chunks))
            except StopIteration:
                break
            except Exception as exc:
                failure = error_json(exc)
                log("ERROR", "invocation failed mid-stream", requestId=invocation.request_id, **failure)
                break
            stream.write(chunk)
    except BaseException:
        stream.abort()
        raise
    finally:
        _close(chunks)
    status = stream.finish(failure)
    if status != 202:
        log("ERROR", "the Runtime API refused the response", requestId=invocation.request_id, status=status)


def _as_bytes(chunk: object) -> bytes:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a streaming body yields bytes, not {type(chunk).__name__}")


def run(client: RuntimeApiClient, handler: Handler) -> NoReturn:
    """Serve invocations until the Runtime API breaks (RuntimeApiError)."""
    while True:
        handle(client, handler, client.next_invocation())


class SnapshotHooks:
    """The registry of ``snapshot_restore_py`` (or its stand-in): what get_before_snapshot/get_after_restore give."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def before_snapshot(self) -> None:
        """Run and drop each before-snapshot hook, the last registered first (awslambdaric's order)."""
        pending = self._module.get_before_snapshot()
        while pending:
            func, args, kwargs = pending.pop()
            func(*args, **kwargs)

    def after_restore(self) -> None:
        """Run each after-restore hook in the order of registration."""
        for func, args, kwargs in list(self._module.get_after_restore()):
            func(*args, **kwargs)


def _stand_in_hooks_module() -> ModuleType:
    """``snapshot_restore_py``'s interface (1.0.0), for an interpreter that cannot import the runtime's copy."""
    module = ModuleType(HOOKS_MODULE, "stand-in installed by functions/api/runtime.py")
    before: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    after: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def register_before_snapshot(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        before.append((func, args, kwargs))
        return func

    def register_after_restore(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        after.append((func, args, kwargs))
        return func

    module.register_before_snapshot = register_before_snapshot  # type: ignore[attr-defined]
    module.register_after_restore = register_after_restore  # type: ignore[attr-defined]
    module.get_before_snapshot = lambda: before  # type: ignore[attr-defined]
    module.get_after_restore = lambda: after  # type: ignore[attr-defined]
    return module


def snapshot_hooks() -> SnapshotHooks:
    """The hooks registry, importable by the handler before it is loaded: the runtime's ``snapshot_restore_py`` when
    this interpreter finds it, else a stand-in put in sys.modules under its name."""
    try:
        module = importlib.import_module(HOOKS_MODULE)
    except ImportError:
        module = sys.modules[HOOKS_MODULE] = _stand_in_hooks_module()
    return SnapshotHooks(module)


def snapshot_and_restore(client: RuntimeApiClient, hooks: SnapshotHooks) -> int | None:
    """SnapStart's end of init: before-snapshot hooks, /restore/next (the snapshot is taken while it waits; it answers
    in each restored environment), after-restore hooks. None to go on serving, else the exit status."""
    try:
        hooks.before_snapshot()
    except Exception as exc:
        error = error_json(exc)
        log("ERROR", "a before-snapshot hook failed", **error)
        client.post_init_error(error, BEFORE_SNAPSHOT_ERROR)
        return BEFORE_SNAPSHOT_EXIT
    client.restore_next()
    try:
        hooks.after_restore()
    except Exception as exc:
        error = error_json(exc)
        log("ERROR", "an after-restore hook failed", **error)
        client.post_restore_error(error)
        return AFTER_RESTORE_EXIT
    return None


def serve(client: RuntimeApiClient, handler_spec: str, hooks: SnapshotHooks | None = None) -> int:
    """Load the handler (an InitError goes to /init/error), with ``hooks`` (SnapStart) snapshot and restore, then run;
    returns the exit status (1, or a hook's failure's)."""
    try:
        try:
            handler = load_handler(handler_spec)
        except InitError as exc:
            log("ERROR", "init failed", **exc.error)
            client.post_init_error(exc.error)
            return 1
        if hooks is not None and (status := snapshot_and_restore(client, hooks)) is not None:
            return status
        run(client, handler)
    except RuntimeApiError as exc:
        log("ERROR", "the Runtime API connection failed; exiting", error=str(exc))
        return 1


def set_sys_path(task_root: str) -> None:
    """sys.path as the managed runtime's bootstrap.py sets it: the task root first, then the layer's directories."""
    if "PYTHONPATH" not in os.environ:
        sys.path.insert(0, "/opt/python")
        sys.path.insert(0, f"/opt/python/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages")
    sys.path.insert(0, task_root)
    site.addsitedir(task_root)  # the function's own .pth files, as bootstrap.py loads them
    if "PYTHONPATH" not in os.environ:
        site.addsitedir(f"/opt/python/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages")
        site.addsitedir("/opt/python")


def main() -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(line_buffering=True)
    set_sys_path(os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        log("ERROR", "AWS_LAMBDA_RUNTIME_API is not set: this runs only as a Lambda runtime")
        sys.exit(1)
    os.environ[STREAMING_RUNTIME_ENV] = "1"
    hooks = snapshot_hooks() if os.environ.get(INITIALIZATION_TYPE_ENV) == SNAP_START else None
    sys.exit(serve(RuntimeApiClient(address), os.environ.get("_HANDLER", ""), hooks))


if __name__ == "__main__":
    main()
