"""API function: routes only. Parse, call the core once, return a model; errors map in imagegen.http.

Under the streaming runtime (runtime.py, which sets IMAGEGEN_STREAMING_RUNTIME) a ``stream: true`` generation or
edit is answered with server-sent events: the route stashes the events and answers an empty ``text/event-stream``
Response, and lambda_handler hands the resolver's status and headers plus the events to the runtime as a
StreamingResponse (Powertools serialises whatever a route returns, so the events cannot travel through it)."""

from __future__ import annotations

# isort: off
from imagegen import coldstart  # first: no garbage collection while the modules below load (imagegen.coldstart)

# isort: on
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

if TYPE_CHECKING or __package__:  # tests and tools import the package functions.api (and so does mypy)
    from functions.api.event_stream import collecting_stream, event_stream, streamed
    from functions.api.forms import read_edit, read_variation
    from functions.api.runtime import STREAMING_RUNTIME_ENV, StreamingResponse
    from functions.api.swagger import swagger_page
else:  # in Lambda this directory is the task root (CodeUri functions/api) and this module is the top-level "app"
    from event_stream import collecting_stream, event_stream, streamed
    from forms import read_edit, read_variation
    from runtime import STREAMING_RUNTIME_ENV, StreamingResponse
    from swagger import swagger_page
from imagegen import snapstart  # noqa: F401  (registers the SnapStart restore hooks: docs/snapstart.md)
from imagegen.auth import caller_scope
from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError, RouteNotFoundError
from imagegen.http import IDEMPOTENCY_HEADER, SERVED_BY_HEADER, ImagesApiResolver, prefers_async, stage_prefix, validated_body
from imagegen.inputs import EditSources
from imagegen.jobs import get_job_service
from imagegen.model_list import ModelList, list_models
from imagegen.observability import logger, metrics, tracer
from imagegen.options import (
    ImageEditOptions,
    ImageGenerationRequest,
    ImagesResponse,
    ImageVariationOptions,
    JobAccepted,
    JobView,
)
from imagegen.playground import build_page, presigned_origin
from imagegen.service import get_service
from imagegen.settings import get_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

# The routes API Gateway guards (template.yaml's AuthMode), as the OpenAPI document says (openapi_document.py declares
# the scheme); GET /, /health, /docs and /openapi.json are public.
CALLER: list[dict[str, list[str]]] = [{"authorization": []}]

GENERATIONS_PATH = "/v1/images/generations"
EDITS_PATH = "/v1/images/edits"
VARIATIONS_PATH = "/v1/images/variations"
app = ImagesApiResolver(
    max_body_bytes=lambda: get_settings().max_request_bytes,
    max_upload_bytes=lambda: get_settings().max_upload_bytes,
    upload_paths=frozenset({EDITS_PATH, VARIATIONS_PATH}),
)


def caller() -> str:
    """Who sent the current request (imagegen.auth.caller_scope): its IAM principal under AuthMode IAM, else its key."""
    identity = app.current_event.request_context.get("identity") or {}  # absent from some hand-made events
    return caller_scope(
        authorization=app.current_event.headers.get("authorization"),
        user_arn=identity.get("userArn"),
        cognito_identity_id=identity.get("cognitoIdentityId"),
    )


@app.post(
    GENERATIONS_PATH,
    summary=(
        "Create images (OpenAI-compatible); with 'Prefer: respond-async', queue them and answer 202; "
        "with 'Idempotency-Key', a retry gets the first answer's images without a second generation; "
        "with 'stream': true, server-sent events (text/event-stream)"
    ),
    responses={
        200: {"description": "The images", "content": {"application/json": {"model": ImagesResponse}}},
        202: {"description": "Queued: poll the Location", "content": {"application/json": {"model": JobAccepted}}},
    },
    security=CALLER,
)
def create_images() -> Response[ImagesResponse | JobAccepted | str]:
    request = validated_body(ImageGenerationRequest, app.current_event)
    if request.stream:
        _check_stream()
    request_id = _request_id()
    metrics.add_metric(name="GenerationRequests", unit=MetricUnit.Count, value=1)
    if request.stream:
        service = get_service()
        deadline = _stream_deadline(service.settings.response_margin_seconds)
        return event_stream(service.stream(request, request_id=request_id, deadline=deadline, caller=caller()))
    # Only an async request builds the job clients: a synchronous cold start does not pay for them.
    if prefers_async(app.current_event.headers.get("prefer")) and (jobs := get_job_service()).accepts_jobs:
        # With Idempotency-Key, a retry gets the same job (same id and Location) and queues nothing.
        key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
        job, replayed = jobs.submit(
            request,
            job_id=request_id,
            owner=caller(),
            idempotency_key=key,
            lease_seconds=app.lambda_context.get_remaining_time_in_millis() / 1000,
        )
        location = f"{stage_prefix(app.current_event)}/v1/images/jobs/{job.id}"
        accepted = JobAccepted(id=job.id, status=job.status, created=job.created, location=location)
        headers = {"Location": location, "Preference-Applied": "respond-async"}
        if key is not None:
            headers["Idempotent-Replayed"] = "true" if replayed else "false"
        return Response(202, content_types.APPLICATION_JSON, accepted, headers)
    service = get_service()
    deadline = _deadline(service.settings.response_margin_seconds)
    key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        use_cache = "no-cache" not in (app.current_event.headers.get("cache-control") or "").lower()
        answer = service.generate(request, request_id=request_id, deadline=deadline, caller=caller(), use_cache=use_cache)
        return Response(200, content_types.APPLICATION_JSON, answer, served_by(answer))
    from imagegen.idempotency import generate_idempotently  # Powertools idempotency, only for requests that use it

    answer, replayed = generate_idempotently(
        request, key=key, client=caller(), request_id=request_id, deadline=deadline, context=app.lambda_context
    )
    return Response(
        200, content_types.APPLICATION_JSON, answer, {**served_by(answer), "Idempotent-Replayed": "true" if replayed else "false"}
    )


IMAGES_ANSWER: dict[int, OpenAPIResponse] = {200: {"description": "The images", "content": {"application/json": {"model": ImagesResponse}}}}
QUEUED_ANSWER: dict[int, OpenAPIResponse] = {
    202: {"description": "Queued: poll the Location", "content": {"application/json": {"model": JobAccepted}}}
}


@app.post(
    EDITS_PATH,
    summary="Edit images (OpenAI-compatible): multipart/form-data with image/image[] (up to 16), mask, markup and the "
    "options as fields, or JSON with images: [{image_url}] (https or data: URLs)",
    responses={**IMAGES_ANSWER, **QUEUED_ANSWER},
    security=CALLER,
)
def edit_images() -> Response[ImagesResponse | JobAccepted | str]:
    _refuse_idempotency_key("edits")
    options, sources, json_form = read_edit(app.current_event.raw_event)
    if options.stream:
        _check_stream()
    metrics.add_metric(name="EditRequests", unit=MetricUnit.Count, value=1)
    if options.stream:
        service = get_service()
        deadline = _stream_deadline(service.settings.response_margin_seconds)
        events = service.stream(options, sources=sources, request_id=_request_id(), deadline=deadline, caller=caller(), json_form=json_form)
        return event_stream(events)
    if prefers_async(app.current_event.headers.get("prefer")) and (jobs := get_job_service()).accepts_jobs:
        # The inputs are read, checked and stored now: a bad image is a 400 here, and the job carries their keys.
        request_id = _request_id()
        job = jobs.submit_inputs(
            options,
            sources,
            job_id=request_id,
            owner=caller(),
            deadline=_deadline(jobs.images.settings.response_margin_seconds),
            json_form=json_form,
        )
        location = f"{stage_prefix(app.current_event)}/v1/images/jobs/{job.id}"
        accepted = JobAccepted(id=job.id, status=job.status, created=job.created, location=location)
        return Response(202, content_types.APPLICATION_JSON, accepted, {"Location": location, "Preference-Applied": "respond-async"})
    answer = _from_inputs(options, sources, json_form)
    return Response(200, content_types.APPLICATION_JSON, answer, served_by(answer))


@app.post(
    VARIATIONS_PATH,
    summary="Variations of an image (OpenAI-compatible) for the models that still make them: multipart/form-data with "
    "image, or JSON with image: {image_url}",
    responses=IMAGES_ANSWER,
    security=CALLER,
)
def create_variations() -> Response[ImagesResponse]:
    _refuse_idempotency_key("variations")
    options, sources, json_form = read_variation(app.current_event.raw_event)
    metrics.add_metric(name="VariationRequests", unit=MetricUnit.Count, value=1)
    answer = _from_inputs(options, sources, json_form)
    return Response(200, content_types.APPLICATION_JSON, answer, served_by(answer))


def served_by(answer: ImagesResponse) -> dict[str, str]:
    """The header naming the model that made the images (a route's member), when the answer knows it."""
    return {SERVED_BY_HEADER: answer.served_by} if answer.served_by is not None else {}


def _from_inputs(options: ImageEditOptions | ImageVariationOptions, sources: EditSources, json_form: bool) -> ImagesResponse:
    service = get_service()
    deadline = _deadline(service.settings.response_margin_seconds)
    return service.from_inputs(options, sources, request_id=_request_id(), deadline=deadline, caller=caller(), json_form=json_form)


def streaming_runtime() -> bool:
    """Whether this process runs under runtime.py, the only runtime here that can post a stream."""
    return os.environ.get(STREAMING_RUNTIME_ENV) == "1"


def _check_stream() -> None:
    """A ``stream: true`` request is refused by name, before any job, provider call or write, when it cannot be
    streamed: the function does not run the streaming runtime (awslambdaric, ``sam local``), or the request also
    asks to be queued or replayed (a job has no connection to stream on; a replay would need the events stored)."""
    if not streaming_runtime():
        raise InvalidRequestError(
            "Invalid 'stream': streaming is not supported by this deployment (its API function does not run the "
            "streaming runtime); omit 'stream' or set it to false.",
            param="stream",
            code="unsupported_parameter",
        )
    if prefers_async(app.current_event.headers.get("prefer")):
        raise InvalidRequestError(
            "Invalid 'stream': a stream cannot be answered asynchronously; send either 'stream': true or "
            "'Prefer: respond-async', not both.",
            param="stream",
            code="unsupported_parameter",
        )
    if app.current_event.headers.get(IDEMPOTENCY_HEADER) is not None:
        raise InvalidRequestError(
            f"The {IDEMPOTENCY_HEADER} header is not supported with 'stream': true (a stream cannot be replayed); "
            f"send the request without it or without 'stream'.",
            param=IDEMPOTENCY_HEADER,
            code="unsupported_parameter",
        )


def _refuse_idempotency_key(what: str) -> None:
    """Refused before anything is read, never ignored: a retry would make (and bill) the images again."""
    if app.current_event.headers.get(IDEMPOTENCY_HEADER) is not None:
        raise InvalidRequestError(
            f"The {IDEMPOTENCY_HEADER} header is not supported on {what} yet (only on generations); send the request without it.",
            param=IDEMPOTENCY_HEADER,
            code="unsupported_parameter",
        )


def _request_id() -> str:
    return app.current_event.request_context.request_id or app.lambda_context.aws_request_id


def _deadline(margin_seconds: float) -> Deadline:
    """API Gateway's 29 s from the request's arrival, or the Lambda's own time if earlier, less the margin."""
    return Deadline.for_api_request(
        app.lambda_context,
        request_time_epoch_ms=app.current_event.request_context.request_time_epoch or None,
        margin_seconds=margin_seconds,
    )


def _stream_deadline(margin_seconds: float) -> Deadline:
    """The Lambda's own remaining time less the margin: a STREAM integration is not cut at 29 s (up to 15 minutes)."""
    return Deadline.from_context(app.lambda_context, margin_seconds=margin_seconds)


@app.get(
    "/v1/images/jobs/<job_id>", summary="An asynchronous job: its status and, once done, its images (URLs signed now)", security=CALLER
)
def get_job(job_id: str) -> JobView:
    return get_job_service().view(job_id, owner=caller())


@app.get(
    "/v1/organization/usage/images",
    summary="Image usage in OpenAI's Usage API shape, with the cost of each group: the caller's own, every caller's "
    "for USAGE_ADMIN_KEYS (the SDKs send this call with admin_api_key)",
    security=CALLER,
)
def usage_images() -> dict[str, Any]:
    from imagegen.usage.report import UsageQuery, read_usage  # only for the requests that read usage

    query = UsageQuery.from_params(app.current_event.multi_value_query_string_parameters)
    service = get_service()
    if service.meter.ledger is None:
        raise RouteNotFoundError(
            "Usage is not recorded by this deployment (it has no usage table, USAGE_TABLE).", code="usage_not_recorded"
        )
    who = caller()
    return read_usage(service.meter.ledger, query, caller=who, admin=who in service.settings.usage_admin_keys)


@app.get("/v1/models", summary="The models this deployment serves, with their limits", security=CALLER)
def get_models() -> ModelList:
    return list_models(get_service().registry)


@app.get("/health", summary="Liveness; calls no provider")
def health() -> dict[str, str]:
    return {"status": "ok"}


OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")  # built ahead of time: openapi_document.py


@lru_cache(maxsize=1)
def openapi_text() -> str:
    return OPENAPI_DOCUMENT.read_text(encoding="utf-8")


@app.get(
    "/openapi.json",
    summary="The OpenAPI document of this API",
    responses={200: {"description": "The document", "content": {"application/json": {"schema": {"type": "object"}}}}},
)
def openapi() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_text())


@app.get("/docs", include_in_schema=False)
def docs() -> Response[str]:
    """Swagger UI over the same document, with Powertools' bundled script and styles (no CDN)."""
    return Response(200, "text/html; charset=utf-8", swagger_page(openapi_text()))


PLAYGROUND_DIR = Path(__file__).with_name("static")


@lru_cache(maxsize=1)
def playground_page() -> tuple[str, dict[str, str]]:
    """Built once per container; images come from the origin the service's presigned URLs point at."""
    return build_page(PLAYGROUND_DIR, image_origin=presigned_origin(get_service().store))


@app.get("/", include_in_schema=False)
def playground() -> Response[str]:
    """The playground: try prompts and each model's options, see the images, copy the request as curl or Python."""
    html, headers = playground_page()
    return Response(200, "text/html; charset=utf-8", html, dict(headers))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | StreamingResponse:
    with collecting_stream() as taken:
        answer = app.resolve(event, context)
    return streamed(answer, taken())


coldstart.loaded()
