"""OpenAI's Images API (and any server that speaks it) over one keep-alive httpx client: generations as JSON to
``/images/generations``, edits as multipart/form-data to ``/images/edits`` (as the official Python SDK encodes them).

We always ask for ``b64_json`` (GPT image models only answer that), so there is no second download; the bytes go
to S3 and the client gets a presigned URL or base64 as it asked. Upstream failures become our errors here, once.
A streamed plan asks for ``stream: true`` and its ``partial_images``, and reads the server-sent events as they arrive
(:meth:`OpenAIProvider.stream`).
OpenAI serves no variations any more (its SDK: "This endpoint no longer accepts requests") and no catalog model of
OpenAI or Azure declares them, so a variation plan is refused as an unsupported operation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from imagegen.deadline import Deadline
from imagegen.errors import (
    ImageGenError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
)
from imagegen.observability import tracer
from imagegen.planning import GenerationPlan, Operation
from imagegen.providers.base import ProviderImage, ProviderPartial, ProviderResult
from imagegen.providers.upstream import MAX_RETRIES, Call, Upstream, error_for, retry_after
from imagegen.streaming import iter_sse, split_lines

# The path of each operation this provider can ask for, under the base URL (OpenAI) or the deployment (Azure).
PATHS: dict[Operation, str] = {"generation": "images/generations", "edit": "images/edits"}


@dataclass(frozen=True)
class EndpointStyle:
    """Where a plan is posted and how the key is sent: the only difference between OpenAI (and compatible servers)
    and Azure OpenAI, whose deployment in the URL implies the model."""

    url: Callable[[GenerationPlan], str]
    auth_headers: Callable[[str], dict[str, str]]
    send_model: bool = True


def _unsupported(plan: GenerationPlan) -> ProviderError:
    # Never reached in practice: the catalog gives OpenAI and Azure models no operation this provider cannot do.
    return ProviderError(f"The image provider of model '{plan.model.id}' does not make {plan.operation}s.", code="unsupported_operation")


def _path(plan: GenerationPlan) -> str:
    path = PATHS.get(plan.operation)
    if path is None:
        raise _unsupported(plan)
    return path


def openai_endpoint(base_url: str) -> EndpointStyle:
    """``POST {base_url}/images/generations`` (or ``/images/edits``) with ``Authorization: Bearer <key>``."""
    root = base_url.rstrip("/")
    return EndpointStyle(url=lambda plan: f"{root}/{_path(plan)}", auth_headers=lambda key: {"Authorization": f"Bearer {key}"})


def azure_endpoint(endpoint: str, api_version: str) -> EndpointStyle:
    """``POST {endpoint}/openai/deployments/{deployment}/images/generations?api-version=...`` (or ``/images/edits``)
    with ``api-key``; the deployment is the model's ``provider_model``, and the body names no model."""
    root = endpoint.rstrip("/")
    version = quote(api_version, safe="")

    def url(plan: GenerationPlan) -> str:
        deployment = quote(plan.model.provider_model, safe="")
        return f"{root}/openai/deployments/{deployment}/{_path(plan)}?api-version={version}"

    return EndpointStyle(url=url, auth_headers=lambda key: {"api-key": key}, send_model=False)


def _common_fields(plan: GenerationPlan, *, send_model: bool) -> dict[str, Any]:
    """What a generation and an edit send, None where unset (in the SDK's order: the prompt, then by name)."""
    gpt_image = plan.model.family == "gpt-image"
    return {
        "prompt": plan.prompt,
        "background": plan.background,
        "complexity": plan.complexity,
        "frame_count": plan.frame_count,
        "frame_duration_ms": plan.frame_duration_ms,
        "input_fidelity": plan.input_fidelity,  # set on edit plans only
        "model": plan.model.provider_model if send_model else None,
        "n": plan.n,
        "output_compression": plan.output_compression,
        "output_format": plan.output_format if gpt_image else None,
        "quality": plan.quality,
        # GPT image models refuse response_format and always answer base64.
        "response_format": None if gpt_image else "b64_json",
        # The end user: safety_identifier where the model takes it (OpenAI), else the legacy user (Azure, DALL-E).
        "safety_identifier": plan.safety_identifier if plan.model.safety_identifier else None,
        "size": plan.size,
        "svg": plan.svg.model_dump(exclude_none=True) if plan.svg else None,
        "user": None if plan.model.safety_identifier else plan.safety_identifier,
    }


def build_request_body(plan: GenerationPlan, *, send_model: bool = True) -> dict[str, Any]:
    """The JSON body for ``POST /images/generations``: only what the model takes, and nothing unset."""
    body = {**_common_fields(plan, send_model=send_model), "style": plan.style, "moderation": plan.moderation}
    return {key: value for key, value in body.items() if value is not None}


# A multipart file as httpx takes it: (field name, (filename, bytes, content type)).
FormFile = tuple[str, tuple[str, bytes, str]]


def build_edit_form(plan: GenerationPlan, *, send_model: bool = True) -> tuple[dict[str, str], list[FormFile]]:
    """The multipart form for ``POST /images/edits`` as the OpenAI Python SDK sends it: text fields (nested objects
    as ``svg[model]``, ``svg[reasoning][effort]``, numbers as decimal strings, nothing unset), then the files: one
    image as ``image``, several as one ``image[]`` each, then ``markup`` and ``mask``. Edits take no style or
    moderation."""
    inputs = plan.inputs
    assert inputs is not None  # imagegen.planning.plan_edit always sets the edit's inputs
    fields: dict[str, str] = {}
    for key, value in _common_fields(plan, send_model=send_model).items():
        _add_field(fields, key, value)
    name = "image" if len(inputs.images) == 1 else "image[]"
    files: list[FormFile] = [
        (name, (f"image-{index}.{picture.format}", picture.data, picture.content_type)) for index, picture in enumerate(inputs.images)
    ]
    for field, picture in (("markup", inputs.markup), ("mask", inputs.mask)):
        if picture is not None:
            files.append((field, (f"{field}.{picture.format}", picture.data, picture.content_type)))
    return fields, files


@dataclass(frozen=True)
class Payload:
    """A request body as httpx sends it: JSON (a generation) or a multipart form of text fields and files (an edit).
    httpx encodes it anew on every ``post``, so a retried attempt sends the whole body again."""

    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[FormFile] | None = None


def build_payload(plan: GenerationPlan, *, send_model: bool = True) -> Payload:
    if plan.operation == "edit":
        fields, files = build_edit_form(plan, send_model=send_model)
        return Payload(data=fields, files=files)
    if plan.operation == "generation":
        return Payload(json=build_request_body(plan, send_model=send_model))
    raise _unsupported(plan)


def build_stream_payload(plan: GenerationPlan, *, send_model: bool = True) -> Payload:
    """The payload of a streamed plan: the plan's, asking for ``stream: true`` and its ``partial_images`` (as a form
    field, ``"true"`` as the SDK sends booleans)."""
    payload = build_payload(plan, send_model=send_model)
    if payload.json is not None:
        return Payload(json={**payload.json, "stream": True, "partial_images": plan.partial_images})
    assert payload.data is not None  # an edit's form
    return Payload(data={**payload.data, "stream": "true", "partial_images": str(plan.partial_images)}, files=payload.files)


def _add_field(fields: dict[str, str], name: str, value: Any) -> None:
    """A value as form text fields: a dict by bracketed key path (the SDK's ``array_format="brackets"``)."""
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _add_field(fields, f"{name}[{key}]", item)
    else:
        fields[name] = str(value)


def _error_fields(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def status_error(response: httpx.Response) -> ImageGenError:
    """The one table from an upstream HTTP status to our error."""
    return error_for(response.status_code, _error_fields(response), retry_after=retry_after(response))


# The HTTP status OpenAI answers each error type with (platform.openai.com/docs/guides/error-codes), for an error that
# arrives as an event of a stream already answered 200.
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "image_generation_user_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "insufficient_quota": 429,
    "rate_limit_error": 429,
    "requests": 429,
    "tokens": 429,
}


def stream_error(error: dict[str, Any]) -> ImageGenError:
    """An ``error`` event's error object, through the same table as an HTTP error of its type (else a 500's)."""
    kind = error.get("type")
    return error_for(STREAM_ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500, error)


def preview_refusal(plan: GenerationPlan, error: ImageGenError) -> ImageGenError:
    """A 400 for a request using a preview feature (GIF or SVG output, transparency on gpt-image-2), about that field
    or none: the vendor's refusal to give this deployment's project the preview. A 400 naming the feature, with the
    vendor's message, that the caller can act on (omit it) and the operator too (ask for access)."""
    previews = plan.previews
    if not isinstance(error, InvalidRequestError) or not previews or (error.param is not None and error.param not in previews):
        return error
    field = error.param if error.param is not None else next(iter(previews))
    return InvalidRequestError(
        f"The provider refused {field} '{previews[field]}' for model '{plan.model.id}': it is a preview feature that "
        f"this deployment's provider project may not have access to. Omit it, or ask the operator to request access. "
        f"The provider said: {error.message}",
        param=field,
        code="preview_not_enabled",
    )


def parse_images(response: httpx.Response, n: int) -> ProviderResult:
    try:
        payload = response.json()
        items = payload["data"]
        images = tuple(ProviderImage(base64.b64decode(item["b64_json"], validate=True), item.get("revised_prompt")) for item in items)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ProviderError("The image provider answered with a malformed body.", code="provider_bad_response") from exc
    if len(images) != n:
        raise ProviderError(f"The image provider returned {len(images)} images instead of {n}.", code="provider_bad_response")
    usage = payload.get("usage")
    return ProviderResult(images=images, usage=usage if isinstance(usage, dict) else None)


class OpenAIProvider:
    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: Callable[[], str],
        base_url: str | None = None,
        endpoint: EndpointStyle | None = None,
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if endpoint is None:
            if base_url is None:
                raise ValueError("OpenAIProvider needs a base_url or an endpoint style")
            endpoint = openai_endpoint(base_url)
        self._endpoint = endpoint
        auth_headers = endpoint.auth_headers
        self._upstream = Upstream(
            client, auth_headers=lambda: auth_headers(api_key()), error_of=status_error, max_retries=max_retries, sleep=sleep
        )

    def _send(self, plan: GenerationPlan, payload: Payload, deadline: Deadline, *, stream: bool = False) -> httpx.Response:
        call = Call("POST", self._endpoint.url(plan), json=payload.json, data=payload.data, files=payload.files)
        return self._upstream.send(call, deadline, stream=stream, refine=lambda error: preview_refusal(plan, error))

    @tracer.capture_method(capture_response=False)
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """One call (a generation or an edit), retried while the deadline leaves room for the wait and another
        attempt; the last error otherwise (a 429 keeps its Retry-After for the client)."""
        response = self._send(plan, build_payload(plan, send_model=self._endpoint.send_model), deadline)
        return parse_images(response, plan.n)

    def stream(self, plan: GenerationPlan, deadline: Deadline) -> Iterator[ProviderPartial | ProviderResult]:
        """A streamed call: retried as :meth:`generate` until the provider answers 200 (nothing has been yielded by
        then), then each partial image yielded as its event arrives and, once the stream ends, the completed events'
        images as one result (one completed event per image, in order). An ``error`` event raises our error for it;
        the deadline bounds the whole stream (a stalled read is cut at it). A 200 with a JSON body (a server that
        does not stream) is read as :meth:`generate` reads it."""
        response = self._send(plan, build_stream_payload(plan, send_model=self._endpoint.send_model), deadline, stream=True)
        with _cut_at(response, deadline) as expired:
            try:
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    response.read()
                    yield parse_images(response, plan.n)
                    return
                completed: list[dict[str, Any]] = []
                for event in _events(response):
                    if deadline.remaining() <= 0:
                        raise ProviderTimeoutError("The image provider's stream did not end before the request deadline.")
                    if event.get("type") in ("image_generation.partial_image", "image_edit.partial_image"):
                        yield ProviderPartial(_b64(event), _index(event))
                    elif event.get("type") in ("image_generation.completed", "image_edit.completed"):
                        completed.append(event)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if expired.is_set() or isinstance(exc, httpx.TimeoutException):
                    raise ProviderTimeoutError("The image provider's stream did not end before the request deadline.") from exc
                raise ProviderError("The image provider's stream broke off before its images.", code="provider_bad_response") from exc
            finally:
                response.close()
        yield _completed_result(completed, plan.n)


class _cut_at:  # noqa: N801 - used as a context manager, like contextlib's lowercase ones
    """Within ``with``: at the deadline, the response's connection is shut down, so a read waiting on a stalled stream
    returns at once (httpx's read timeout holds per read, not for the whole body). The event says it was cut."""

    def __init__(self, response: httpx.Response, deadline: Deadline) -> None:
        self._socket = _socket_of(response)
        self._expired = threading.Event()
        self._timer = threading.Timer(max(0.0, deadline.remaining()), self._cut)
        self._timer.daemon = True

    def _cut(self) -> None:
        self._expired.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
                self._socket.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> threading.Event:
        self._timer.start()
        return self._expired

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    found = stream.get_extra_info("socket") if stream is not None else None
    return found if isinstance(found, socket.socket) else None


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON data of each server-sent event until the stream ends (or ``[DONE]``); an error event raises."""
    for kind, data in iter_sse(split_lines(response.iter_bytes())):
        if data.startswith("[DONE]"):
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise ProviderError("The image provider streamed an event that is not JSON.", code="provider_bad_response") from exc
        if not isinstance(event, dict):
            raise ProviderError("The image provider streamed an event that is not an object.", code="provider_bad_response")
        error = event.get("error")
        if kind == "error" or event.get("type") == "error" or error:
            raise stream_error(error if isinstance(error, dict) else {})
        yield event


def _b64(event: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(event["b64_json"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ProviderError("The image provider streamed an image that is not base64.", code="provider_bad_response") from exc


def _index(event: dict[str, Any]) -> int:
    index = event.get("partial_image_index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ProviderError("The image provider streamed a partial image without its index.", code="provider_bad_response")
    return index


def _completed_result(completed: list[dict[str, Any]], n: int) -> ProviderResult:
    """The completed events as a result: one image each (with its own usage), the request's usage their sum."""
    if len(completed) != n:
        raise ProviderError(f"The image provider streamed {len(completed)} images instead of {n}.", code="provider_bad_response")
    images = tuple(
        ProviderImage(_b64(event), usage=event["usage"] if isinstance(event.get("usage"), dict) else None) for event in completed
    )
    usages = [image.usage for image in images if image.usage is not None]
    return ProviderResult(images=images, usage=_sum_usage(usages) if usages else None)


def _sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """Token counts added up, nested ones (input_tokens_details) too; what is not a number is left out."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                total[key] = _sum_usage([total.get(key, {}), value])
            elif isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total
