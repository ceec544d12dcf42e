"""The local stack: S3 server + the API function under the Lambda RIE + an API Gateway front, and for asynchronous
jobs SQS and DynamoDB (moto server) with the worker and the S3 trigger under the RIE, fed by a local event source
mapping (SQS poller) and S3 notifications (request watcher).

``python -m devtools.local`` (``make local``) serves the API on http://127.0.0.1:3000 until Ctrl-C.
Tests build the same ``LocalStack`` on free ports with a temporary data directory.

Authorization, as template.yaml's ``AuthMode`` (environment of ``make local``):

- ``IMAGEGEN_AUTH_MODE=ApiKey`` (default): ``IMAGEGEN_API_KEYS=key1,key2`` requires one of these Bearer keys;
  unset, the API is open.
- ``IMAGEGEN_AUTH_MODE=IAM``: every route but the public ones requires AWS Signature Version 4 (service
  ``execute-api``, the stack's region, us-east-1) by one of ``IMAGEGEN_IAM_CREDENTIALS``, comma-separated
  ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` pairs (required; the caller's ARN is
  ``arn:aws:iam::123456789012:user/local-<ACCESS_KEY_ID>``). Clients sign with ``devtools.sigv4.SigV4Auth``.

Usage (docs/usage.md): a stack with jobs (moto) records every generation in a usage table there, as the deployed
``UsageTable``; ``BUDGETS`` (the budgets document, JSON) and ``USAGE_ADMIN_KEYS`` (caller ids, ``python -m
devtools.key_id <key>``) are passed through from the environment of ``make local`` like the template's parameters
``Budgets`` and ``UsageAdminKeys`` set them, and so is ``CACHE_TTL_SECONDS`` (the answer cache, ``CacheTtlSeconds``).

Streaming (docs/streaming.md): ``make local`` (``--stream-api``, the default; ``--no-stream-api`` turns it off) runs
the API function under its streaming runtime loop (functions/api/bootstrap, runtime.py) behind a stream tap, and the
front relays its answers as a STREAM route does, chunk by chunk: what ``ResponseStreaming=true`` deploys.
``LocalStack`` itself defaults to the template's default, the buffered API (``stream_api=False``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from devtools.aws_local import JobResources, MotoServer, create_job_resources, create_usage_table
from devtools.front import (
    AUTH_MODES,
    ApiGatewayFront,
    AuthMode,
    ErrorBody,
    GatewayError,
    aws_error_body,
    build_event,
    parse_proxy_response,
)
from devtools.poller import S3RequestWatcher, SqsPoller
from devtools.procs import LOOPBACK, StartupError
from devtools.rie import FunctionConfig, FunctionPool, Invocation, RieProcess
from devtools.s3server import S3Server
from devtools.sam_template import TEMPLATE, load_template, parameter_values, resolve_language_extensions
from devtools.stream_tap import StreamPiece

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from imagegen.usage.budget_document import BudgetLimits, BudgetsDocument

REPO_ROOT = Path(__file__).resolve().parents[1]
# Dummy values for the loopback S3 server only (it enforces SigV4, so it needs some): not secrets.
LOCAL_ACCESS_KEY = "imagegen-local-access-key"
LOCAL_SECRET_KEY = "imagegen-local-dummy-secret"
PASSTHROUGH_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "DEFAULT_MODEL",
    "POWERTOOLS_DEV",
    "POWERTOOLS_LOG_LEVEL",
    "BUDGETS",
    "USAGE_ADMIN_KEYS",
    "CACHE_TTL_SECONDS",
    "MODEL_REGISTRY",
    "GOOGLE_API_KEY",
    "GOOGLE_BASE_URL",
    "BFL_API_KEY",
    "BFL_BASE_URL",
    "STABILITY_API_KEY",
    "STABILITY_BASE_URL",
)
CURL_EXAMPLE = (
    "curl -s{auth} http://{host}:{port}/v1/images/generations -H 'content-type: application/json' "
    """-d '{{"prompt":"a red fox","size":"256x256"}}'"""
)
ASYNC_EXAMPLE = (
    "curl -si{auth} http://{host}:{port}/v1/images/generations -H 'content-type: application/json' -H 'Prefer: respond-async' "
    """-d '{{"prompt":"a red fox","size":"256x256"}}'   # then GET the Location"""
)
# Local redeliveries come back after seconds, not after the deployed 6x worker timeout.
LOCAL_VISIBILITY_TIMEOUT = 5
MAX_RECEIVE_COUNT = 3
# What template.yaml does not give a function: the S3 trigger only queues (no table, no usage settings); the worker
# records usage but never reads it (no admins) and runs jobs, which are never cached.
NOT_IN_ENV = {
    "s3_trigger": frozenset({"JOBS_TABLE", "IDEMPOTENCY_TABLE", "USAGE_TABLE", "BUDGETS", "USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS"}),
    "worker": frozenset({"USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS"}),
}


# The API whose GatewayResponses the local front renders, and the variable API Gateway fills in with the error's
# message as a JSON string (quoted and escaped).
GATEWAY_API = "ImageApi"
MESSAGE_STRING = "$context.error.messageString"
DEFAULT_4XX = "DEFAULT_4XX"
DEFAULT_5XX = "DEFAULT_5XX"
GatewayResponses = dict[str, dict[str, Any]]


@functools.lru_cache(maxsize=4)
def _template_gateway_responses(path: Path, modified_ns: int) -> dict[AuthMode, GatewayResponses]:
    """Both auth modes' GatewayResponses of the template at ``path`` (as of ``modified_ns``): parsed once per process."""
    template = load_template(path)
    return {mode: _resolved_gateway_responses(template, mode) for mode in AUTH_MODES}


def _resolved_gateway_responses(template: Mapping[str, Any], auth_mode: AuthMode) -> GatewayResponses:
    resolved = resolve_language_extensions(template, parameter_values(template, {"AuthMode": auth_mode}))
    responses: GatewayResponses = resolved["Resources"][GATEWAY_API]["Properties"].get("GatewayResponses", {})
    for response_type, response in responses.items():
        # What API Gateway gets must be literal here: an intrinsic left over would be rendered as text.
        if not isinstance(response, dict) or any(key.startswith("Fn::") or key == "Ref" for key in response):
            raise ValueError(f"{GATEWAY_API} GatewayResponses.{response_type} does not resolve for AuthMode {auth_mode}: {response!r}")
    return responses


def gateway_responses(auth_mode: AuthMode, template: Path | str = TEMPLATE) -> GatewayResponses:
    """template.yaml's ``ImageApi`` GatewayResponses as CloudFormation deploys them with this ``AuthMode``
    (response type -> ``StatusCode``, ``ResponseTemplates``...; the ``!If`` branches taken, NoValue entries gone).
    The template is read once per process (again if the file changes); each call gets its own copy."""
    if auth_mode not in AUTH_MODES:
        raise ValueError(f"auth_mode must be one of {', '.join(AUTH_MODES)}, not {auth_mode!r}")
    path = Path(template).resolve()
    return copy.deepcopy(_template_gateway_responses(path, path.stat().st_mtime_ns)[auth_mode])


class TemplateErrorBody:
    """API Gateway's own errors rendered as the deployed API renders them: the gateway response of the error's
    type (else DEFAULT_5XX for a status >= 500, else DEFAULT_4XX), its ``application/json`` template with
    ``$context.error.messageString`` replaced by the message as a JSON string. An ``ErrorBody`` for the front."""

    def __init__(self, responses: Mapping[str, Mapping[str, Any]]) -> None:
        self.responses = {name: dict(response) for name, response in responses.items()}
        for name in self.responses:  # a template that does not render to JSON fails here, not at a request
            json.loads(self.render(GatewayError(500 if name == DEFAULT_5XX else 400, 'probe "quoted" \\ message', response_type=name)))

    @classmethod
    def for_auth_mode(cls, auth_mode: AuthMode, template: Path | str = TEMPLATE) -> Self:
        return cls(gateway_responses(auth_mode, template))

    def response_for(self, error: GatewayError) -> Mapping[str, Any] | None:
        """The gateway response that answers ``error`` (None: API Gateway's built-in one)."""
        default = DEFAULT_5XX if error.status >= 500 else DEFAULT_4XX
        return self.responses.get(error.response_type) or self.responses.get(default)

    def render(self, error: GatewayError) -> bytes:
        response = self.response_for(error)
        body = (response or {}).get("ResponseTemplates", {}).get("application/json")
        if body is None:
            return aws_error_body(error)  # no JSON template: API Gateway's {"message": $context.error.messageString}
        return str(body).replace(MESSAGE_STRING, json.dumps(error.message)).encode()

    __call__ = render


def gateway_error_body(auth_mode: AuthMode, template: Path | str = TEMPLATE) -> TemplateErrorBody:
    """The ``ErrorBody`` of a stack with this ``AuthMode``, rendered from ``template``'s GatewayResponses."""
    return TemplateErrorBody.for_auth_mode(auth_mode, template)


def auth_settings(environ: Mapping[str, str]) -> tuple[AuthMode, list[str], dict[str, str]]:
    """Auth mode, API keys and IAM credentials from IMAGEGEN_AUTH_MODE, IMAGEGEN_API_KEYS and IMAGEGEN_IAM_CREDENTIALS;
    ValueError (never quoting a secret) for a combination the local gateway cannot honour."""
    modes: dict[str, AuthMode] = {mode.lower(): mode for mode in AUTH_MODES}
    requested = environ.get("IMAGEGEN_AUTH_MODE", "").strip() or "ApiKey"
    mode = modes.get(requested.lower())
    if mode is None:
        raise ValueError(f"IMAGEGEN_AUTH_MODE must be {' or '.join(AUTH_MODES)}, not {requested!r}")
    api_keys = [key.strip() for key in environ.get("IMAGEGEN_API_KEYS", "").split(",") if key.strip()]
    credentials: dict[str, str] = {}
    entries = [entry.strip() for entry in environ.get("IMAGEGEN_IAM_CREDENTIALS", "").split(",") if entry.strip()]
    for number, entry in enumerate(entries, 1):
        access_key, _, secret = entry.partition(":")
        if not access_key.strip() or not secret.strip():
            raise ValueError(f"IMAGEGEN_IAM_CREDENTIALS: entry {number} is not ACCESS_KEY_ID:SECRET_ACCESS_KEY")
        credentials[access_key.strip()] = secret.strip()
    if mode == "IAM" and not credentials:
        raise ValueError("IMAGEGEN_AUTH_MODE=IAM needs IMAGEGEN_IAM_CREDENTIALS=ACCESS_KEY_ID:SECRET_ACCESS_KEY[,...]")
    if mode == "IAM" and api_keys:
        raise ValueError("IMAGEGEN_API_KEYS applies to IMAGEGEN_AUTH_MODE=ApiKey; unset it for IAM")
    if mode == "ApiKey" and credentials:
        raise ValueError("IMAGEGEN_IAM_CREDENTIALS applies to IMAGEGEN_AUTH_MODE=IAM; set that or unset it")
    return mode, api_keys, credentials


class LocalStack:
    """S3 server, ``workers`` RIE processes of ``functions/<function>`` and the HTTP front, started together.

    ``port``/``s3_port`` 0 or None pick free ports. ``passthrough`` names variables copied from this process's
    environment into the function's when set; ``extra_env`` adds or overrides function variables. ``auth_mode``
    is template.yaml's AuthMode: ``"ApiKey"`` with ``api_keys`` (none: no auth) or ``"IAM"`` with
    ``iam_credentials`` (access key id -> secret access key; required). The gateway's own errors are rendered from
    ``template``'s GatewayResponses for that mode, read once here, unless ``error_body`` renders them.
    ``stream_api`` runs the API function (``function``) under its streaming runtime, and the front streams.
    """

    def __init__(
        self,
        *,
        root: Path | str = REPO_ROOT,
        data_dir: Path | str | None = None,
        port: int | None = 3000,
        s3_port: int | None = None,
        bucket: str = "imagegen-local",
        function: str = "api",
        workers: int = 2,
        region: str = "us-east-1",
        access_key: str = LOCAL_ACCESS_KEY,
        secret_key: str = LOCAL_SECRET_KEY,
        passthrough: Iterable[str] = PASSTHROUGH_ENV,
        extra_env: Mapping[str, str] | None = None,
        timeout: int = 29,
        memory_mb: int = 1024,
        warm_path: str | None = "/health",
        error_body: ErrorBody | None = None,
        async_jobs: bool = True,
        api_keys: Iterable[str] = (),
        auth_mode: AuthMode = "ApiKey",
        iam_credentials: Mapping[str, str] | None = None,
        template: Path | str = TEMPLATE,
        stream_api: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        self.data_dir = Path(data_dir).resolve() if data_dir else self.root / ".local"
        self.log_dir = self.data_dir / "logs"
        self.function = function
        self.code_dir = self.root / "functions" / function
        self.region = region
        self.workers = workers
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.warm_path = warm_path
        self.stream_api = stream_api
        self.passthrough = tuple(passthrough)
        self.extra_env = dict(extra_env or {})
        self.s3 = S3Server(
            self.data_dir / "s3",
            bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            s3_port=s3_port,
            log_path=self.log_dir / "s3.log",
        )
        self.moto = MotoServer(self.log_dir / "moto.log", region=region) if async_jobs else None
        self.jobs: JobResources | None = None
        self.usage_table: str | None = None
        self.env: dict[str, str] = {}
        self.pool: FunctionPool | None = None
        self.async_pools: list[FunctionPool] = []
        self.pollers: list[SqsPoller | S3RequestWatcher] = []
        self._threads: list[threading.Thread] = []
        self.front = ApiGatewayFront(
            self._invoke,
            port=port or 0,
            error_body=error_body or gateway_error_body(auth_mode, template),
            log_path=self.log_dir / "front.log",
            api_keys=tuple(api_keys),
            auth_mode=auth_mode,
            iam_credentials=iam_credentials,
            region=region,
            invoke_stream=self._invoke_stream if stream_api else None,
        )
        self.startup_seconds: float | None = None

    @property
    def bucket(self) -> str:
        return self.s3.bucket

    @property
    def base_url(self) -> str:
        return self.front.base_url

    @property
    def s3_endpoint_url(self) -> str:
        return self.s3.endpoint_url

    def s3_client(self, **config: Any) -> S3Client:
        return self.s3.client(**config)

    def process_groups(self) -> list[int]:
        """Process-group ids of the running children (weed, each RIE): what ``stop`` kills."""
        workers = [worker for pool in [self.pool, *self.async_pools] if pool for worker in pool.workers]
        moto = self.moto.pid if self.moto else None
        return [pid for pid in [self.s3.pid, moto, *(worker.pid for worker in workers)] if pid is not None]

    def function_env(self) -> dict[str, str]:
        """The function's environment: bucket and S3 endpoint, Powertools settings, passed-through variables."""
        env = {
            "IMAGES_BUCKET": self.bucket,
            **self.s3.env(),
            "POWERTOOLS_SERVICE_NAME": "imagegen",
            "POWERTOOLS_METRICS_NAMESPACE": "ImageGen",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        }
        if self.moto is not None and self.jobs is not None:
            # JOB_RUN_SECONDS is the worker's timeout, as deployed. (The local visibility timeout is shorter, so
            # a local run that crashed is taken up again only after that long; one that fails is at once.)
            env.update(
                {
                    **self.moto.env(),
                    **self.jobs.env(),
                    "MAX_RECEIVE_COUNT": str(MAX_RECEIVE_COUNT),
                    "JOB_RUN_SECONDS": str(min(900, max(1, int(self.timeout)))),
                }
            )
        if self.moto is not None and self.usage_table is not None:
            env["USAGE_TABLE"] = self.usage_table
        env.update({name: os.environ[name] for name in self.passthrough if os.environ.get(name)})
        env.update(self.extra_env)
        return env

    def _invoke(self, event: bytes, timeout: float) -> Invocation:
        if self.pool is None:
            raise StartupError("the local function pool is not running")
        return self.pool.invoke(event, timeout)

    def _invoke_stream(self, event: bytes, timeout: float) -> Iterator[StreamPiece]:
        if self.pool is None:
            raise StartupError("the local function pool is not running")
        return self.pool.invoke_stream(event, timeout)

    def new_rie(self, index: int, function: str | None = None) -> RieProcess:
        """An (unstarted) RIE process of the function with the stack's environment, logging to logs/<fn>-<index>.log."""
        function = function or self.function
        config = FunctionConfig(
            code_dir=self.root / "functions" / function,
            name=f"imagegen-{function}",
            layer_dirs=[self.root / "layers" / "common"],
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            region=self.region,
            env={name: value for name, value in self.env.items() if name not in NOT_IN_ENV.get(function, ())},
            streaming=self.stream_api and function == self.function,
        )
        return RieProcess(config, log_path=self.log_dir / f"{function}-{index}.log")

    def _warm(self, pool: FunctionPool) -> None:
        port = self.front.port
        event = build_event(method="GET", target=self.warm_path or "/", headers=[], body=b"", source_ip=LOOPBACK, port=port, stage="prod")
        for index, answer in enumerate(pool.warm(json.dumps(event).encode(), timeout=self.timeout + 30)):
            try:
                status = parse_proxy_response(answer)[0]
            except GatewayError as error:
                raise pool.workers[index].failure(f"warm-up GET {self.warm_path} failed ({error})") from None
            if status >= 500:
                raise pool.workers[index].failure(f"warm-up GET {self.warm_path} answered {status}")

    def start(self) -> Self:
        """Start S3, the function processes (warmed with ``warm_path``) and the front; all or nothing."""
        if self.pool is not None:
            return self
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_backends()
            self.front.start()
            self.pool = FunctionPool(self.new_rie, size=self.workers).start()
            if self.warm_path is not None:
                self._warm(self.pool)
            if self.moto is not None:
                self._start_async()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def start_backends(self) -> None:
        """S3, and SQS + DynamoDB with the jobs queue and table; then the functions' environment is known."""
        self.s3.start()
        if self.moto is not None:
            self.moto.start()
            self.jobs = create_job_resources(
                self.moto.client("sqs"),
                self.moto.client("dynamodb"),
                visibility_timeout=LOCAL_VISIBILITY_TIMEOUT,
                max_receive_count=MAX_RECEIVE_COUNT,
            )
            self.usage_table = create_usage_table(self.moto.client("dynamodb"), "imagegen-usage")
        self.env = self.function_env()

    def _start_async(self) -> None:
        """The worker and the S3 trigger, each one RIE fed by its local event source."""
        assert self.moto is not None and self.jobs is not None
        worker = FunctionPool(lambda index: self.new_rie(index, "worker"), size=1).start()
        trigger = FunctionPool(lambda index: self.new_rie(index, "s3_trigger"), size=1).start()
        self.async_pools = [worker, trigger]
        timeout = self.timeout + 30
        invoke_worker = lambda event: json.loads(worker.invoke(json.dumps(event).encode(), timeout).payload)  # noqa: E731
        invoke_trigger = lambda event: json.loads(trigger.invoke(json.dumps(event).encode(), timeout).payload)  # noqa: E731
        watcher = S3RequestWatcher(self.s3.client(), self.bucket, invoke_trigger, region=self.region)
        watcher.prime()  # notifications are for objects created from now on, not for what .local/ already holds
        poller = SqsPoller(self.moto.client("sqs"), self.jobs.queue_url, self.jobs.queue_arn, invoke_worker, region=self.region)
        self.pollers = [poller, watcher]
        self._threads = [threading.Thread(target=loop.run, name=type(loop).__name__, daemon=True) for loop in self.pollers]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the front, the pollers, the function processes, moto and S3; idempotent."""
        self.front.stop()
        for loop in self.pollers:
            loop.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.pollers, self._threads = [], []
        pools, self.pool, self.async_pools = [self.pool, *self.async_pools], None, []
        for pool in pools:
            if pool is not None:
                pool.stop()
        if self.moto is not None:
            self.moto.stop()
        self.s3.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def auth_line(front: ApiGatewayFront) -> str:
    """The banner's auth line: the mode and who may call, never a secret."""
    if front.verifier is not None:
        keys = ", ".join(sorted(front.verifier.credentials))
        return f"  auth      IAM: AWS SigV4 (service execute-api, region {front.verifier.region}) by access key {keys}"
    if front.api_keys:
        return "  auth      ApiKey: Authorization: Bearer <one of IMAGEGEN_API_KEYS>"
    return "  auth      off (set IMAGEGEN_API_KEYS to require keys, or IMAGEGEN_AUTH_MODE=IAM)"


def curl_auth(front: ApiGatewayFront) -> str:
    """curl's own SigV4 signing (curl 7.75+) in IAM mode; nothing otherwise."""
    if front.verifier is None:
        return ""
    return f" --aws-sigv4 aws:amz:{front.verifier.region}:execute-api --user '<ACCESS_KEY_ID>:<SECRET_ACCESS_KEY>'"


def _limits(limits: BudgetLimits) -> str:
    parts = [f"{limits.images_per_month} images" if limits.images_per_month is not None else "",
             f"{limits.usd_per_month} USD" if limits.usd_per_month is not None else ""]  # fmt: skip
    return " and ".join(part for part in parts if part) + " a month" if limits.limited else "unlimited"


def budgets_summary(document: BudgetsDocument) -> str:
    """What a BUDGETS document limits, in a line: the defaults and how many overrides (no end user's name)."""
    summary = f"per key {_limits(document.per_key)}, per end user {_limits(document.per_user)}"
    overrides = [
        f"{len(document.keys)} key override(s)" if document.keys else "",
        f"{len(document.users)} end-user override(s)" if document.users else "",
    ]
    return summary + "".join(f"; {part}" for part in overrides if part)


def usage_settings(environ: Mapping[str, str]) -> tuple[BudgetsDocument | None, tuple[str, ...], int]:
    """BUDGETS, USAGE_ADMIN_KEYS and CACHE_TTL_SECONDS as the functions will read them at cold start
    (imagegen.settings); ValueError naming the setting (and the field) when they would refuse them."""
    from pydantic import ValidationError

    from imagegen.settings import Settings

    given = {name: environ[name] for name in ("BUDGETS", "USAGE_ADMIN_KEYS", "CACHE_TTL_SECONDS") if environ.get(name, "").strip()}
    try:
        settings = Settings.model_validate({"IMAGES_BUCKET": "imagegen-local", "USAGE_TABLE": "imagegen-usage", **given})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors(include_input=False))
        raise ValueError(f"BUDGETS, USAGE_ADMIN_KEYS or CACHE_TTL_SECONDS would fail the functions' cold start: {problems}") from None
    return settings.budgets, settings.usage_admin_keys, settings.cache_ttl_seconds


def usage_lines(stack: LocalStack) -> list[str]:
    """The banner's usage lines: whether generations are recorded, the budgets that apply and who reads all usage."""
    if stack.usage_table is None:
        return ["  usage     not recorded (no jobs backend: the usage table lives in moto)"]
    budgets, admins, cache_ttl = usage_settings(stack.env)
    return [
        f"  usage     recorded in DynamoDB table {stack.usage_table} (moto); read it: GET /v1/organization/usage/images",
        f"  budgets   {budgets_summary(budgets)} (BUDGETS)"
        if budgets is not None
        else "  budgets   none (set BUDGETS to a budgets document)",
        f"  admins    {', '.join(admins)} see every caller's usage (USAGE_ADMIN_KEYS)"
        if admins
        else "  admins    none: each caller sees its own usage (USAGE_ADMIN_KEYS, ids from python -m devtools.key_id <key>)",
        f"  cache     on: an identical generation within {cache_ttl} s is answered from its stored images (CACHE_TTL_SECONDS)"
        if cache_ttl
        else "  cache     off (CACHE_TTL_SECONDS)",
    ]


def banner(stack: LocalStack) -> str:
    provider = "OpenAI (OPENAI_API_KEY is set)" if "OPENAI_API_KEY" in stack.env else "local placeholder images"
    try:
        data = stack.data_dir.relative_to(Path.cwd())
    except ValueError:
        data = stack.data_dir
    return "\n".join(
        [
            f"imagegen local stack is up ({stack.startup_seconds:.1f} s)",
            f"  API       {stack.base_url}   ({stack.workers} x functions/{stack.function} under the Lambda RIE"
            + (", streaming runtime)" if stack.stream_api else ")"),
            f"  S3        {stack.s3_endpoint_url}   bucket {stack.bucket}",
            f"  provider  {provider}",
            f"  data      {data}/   logs in {data}/logs/",
            auth_line(stack.front),
            "  stream    on: stream: true answers server-sent events, as ResponseStreaming=true deploys it"
            if stack.stream_api
            else "  stream    off: the template's default, buffered API (stream: true is a 400)",
            f"  jobs      SQS + DynamoDB (moto) on {stack.moto.endpoint_url}; worker and S3 trigger under the RIE"
            if stack.moto
            else "  jobs      off",
            *usage_lines(stack),
            "",
            "",
            "Try:",
            f"  open {stack.base_url}/   (the playground)",
            "  " + CURL_EXAMPLE.format(host=LOOPBACK, port=stack.front.port, auth=curl_auth(stack.front)),
            "  " + ASYNC_EXAMPLE.format(host=LOOPBACK, port=stack.front.port, auth=curl_auth(stack.front)),
            f"  or drop a JSON request into s3://{stack.bucket}/requests/ and read results/ (see README)",
            "",
            "Ctrl-C stops everything.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.local", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000, help="API port on 127.0.0.1 (default 3000; 0 = free port)")
    parser.add_argument(
        "--s3-port", type=int, default=8333, help="S3 port; weed also takes the next 4 and each +10000 (default 8333; 0 = free)"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".local", help="S3 data and logs (default ./.local)")
    parser.add_argument("--workers", type=int, default=2, help="function instances serving in parallel (default 2)")
    parser.add_argument(
        "--stream-api",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the API function under its streaming runtime and stream its answers, as ResponseStreaming=true deploys it"
        " (default on; --no-stream-api serves the buffered API of the template's default)",
    )
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python would keep it so.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    # Like the deployed API: every route but the public ones needs a Bearer key (ApiKey) or a signature (IAM).
    try:
        auth_mode, api_keys, iam_credentials = auth_settings(os.environ)
        usage_settings(os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stack = LocalStack(
        port=args.port,
        s3_port=args.s3_port,
        data_dir=args.data_dir,
        workers=args.workers,
        stream_api=args.stream_api,
        api_keys=api_keys,
        auth_mode=auth_mode,
        iam_credentials=iam_credentials,
    )
    print("Starting the local stack (S3 server, Lambda RIE, API front)...", flush=True)
    try:
        stack.start()
        print(banner(stack), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
