"""The REST resolver and the one place that turns exceptions into OpenAI-style error responses."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ValidationError

from imagegen.errors import (
    ImageGenError,
    InternalError,
    InvalidRequestError,
    PayloadTooLargeError,
    RouteNotFoundError,
    UnprocessableError,
    invalid_request_from,
)
from imagegen.observability import count_bug, logger


def error_response(error: ImageGenError) -> Response[str]:
    return Response(
        status_code=error.status_code,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(error.body()),
        headers=error.headers,
    )


# The header that makes a POST idempotent (imagegen.idempotency); here so reading it costs no Powertools idempotency
# import on the requests, most of them, that do not send it.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The model that made a synchronous answer's images: a route's member, or the model the request named.
SERVED_BY_HEADER = "x-imagegen-model"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def check_idempotency_key(key: str) -> str:
    """The key as sent, when it is 1-255 printable characters (both the synchronous and the async path take it)."""
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise InvalidRequestError(
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters.", param=IDEMPOTENCY_HEADER
        )
    return key


def idempotency_key_reused() -> UnprocessableError:
    return UnprocessableError(
        f"This {IDEMPOTENCY_HEADER} was used with a different request body; use a new key for a new request.",
        param=IDEMPOTENCY_HEADER,
        code="idempotency_key_reused",
    )


_dumps = partial(json.dumps, separators=(",", ":"), cls=Encoder)  # Powertools' own response serializer
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def response_json(body: Any) -> str:
    """Powertools' compact JSON, except that a ``b64_json`` answer's base64 is spliced into the text as it is (base64
    needs no escaping), where the encoder would copy each string twice (escaped, then joined): a ~5 MB image answer
    holds two copies of its base64 at the peak instead of three (measured by bench/, README Performance). A model is
    dumped by its aliases in JSON mode, as Powertools' validated routes serialize their answers."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json", by_alias=True)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return _dumps(body)
    token = secrets.token_hex(8)  # a placeholder nothing else in the answer can contain
    payloads: list[str] = []
    items: list[Any] = []
    for item in data:
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if isinstance(encoded, str) and _BASE64.fullmatch(encoded):
            items.append({**item, "b64_json": f"{token}{len(payloads)}"})
            payloads.append(encoded)
        else:
            items.append(item)
    if not payloads:
        return _dumps(body)
    rest = _dumps({**body, "data": items})
    pieces: list[str] = []
    for index, payload in enumerate(payloads):
        before, rest = rest.split(f'"{token}{index}"', 1)
        pieces += (before, '"', payload, '"')
    pieces.append(rest)
    return "".join(pieces)


def json_body(text: str) -> Any:
    """``json.loads`` for request bodies: every way a body fails to parse is a JSONDecodeError (validated_body turns those
    into a validation error, our 400); ``json.loads`` raises a bare ValueError for an integer of over 4,300 digits."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from exc


Body = TypeVar("Body", bound=BaseModel)


def validated_body(model: type[Body], event: APIGatewayProxyEvent) -> Body:
    """The request's JSON body as ``model``, or the one 400 naming the field (imagegen.errors.invalid_request_from).
    Routes validate their own bodies: Powertools' validation would import its OpenAPI machinery at every cold start.
    resolve() has already refused every Content-Type but JSON and every body that is not UTF-8."""
    try:
        data = event.json_body if event.body else None  # json_body: the resolver's json_body(), base64 decoded
    except json.JSONDecodeError:
        raise invalid_request_from([{"type": "json_invalid", "loc": ("body",)}]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc.errors()) from None


def undecodable_body(event: Mapping[str, Any]) -> bool:
    """A base64 body (API Gateway sends binary bodies so) that is not base64 of UTF-8 text: Powertools would raise
    UnicodeDecodeError/binascii.Error decoding it, a 500."""
    body = event.get("body")
    if not (event.get("isBase64Encoded") and isinstance(body, str) and body):
        return False
    try:
        base64.b64decode(body.encode()).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return True
    return False


def media_type(headers: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """The Content-Type header's name as sent and its media type, lower case without parameters ("" when absent)."""
    for name, value in (headers or {}).items():
        if name.lower() == "content-type" and isinstance(value, str):
            return name, value.split(";")[0].strip().lower()
    return None, ""


def prefers_async(prefer: str | None) -> bool:
    """RFC 7240: ``Prefer: respond-async`` (among other preferences, any case)."""
    return prefer is not None and any(token.split("=")[0].strip().lower() == "respond-async" for token in prefer.split(","))


def stage_prefix(event: APIGatewayProxyEvent) -> str:
    """The path before the route (``/prod`` behind an API Gateway stage, empty on a custom domain or locally)."""
    full, route = event.request_context.path or "", event.path
    return full[: -len(route)] if route and full.endswith(route) else ""


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ImagesApiResolver(APIGatewayRestResolver):
    """APIGatewayRestResolver with OpenAI error shapes and a body-size guard that runs before any parsing. Routes
    validate their bodies with :func:`validated_body`; Powertools' validation stays off (its OpenAPI machinery is a
    cold start's largest import), and the OpenAPI document is built ahead of time (functions/api/openapi_document.py)."""

    def __init__(
        self,
        *,
        max_body_bytes: Callable[[], int],
        max_upload_bytes: Callable[[], int] | None = None,
        upload_paths: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(json_body_deserializer=json_body, serializer=response_json)
        self._max_body_bytes = max_body_bytes
        # Routes that take uploads (multipart/form-data, base64-encoded by API Gateway) and parse their own bodies.
        self._max_upload_bytes = max_upload_bytes or max_body_bytes
        self._upload_paths = upload_paths
        self.exception_handler(ImageGenError)(self._on_imagegen_error)
        self.exception_handler(NotFoundError)(self._on_not_found)
        self.exception_handler(RecursionError)(self._on_recursion)
        self.exception_handler(Exception)(self._on_bug)

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        body = event.get("body")
        error: ImageGenError | None = None
        upload = self._remove_prefix(str(event.get("path") or "")) in self._upload_paths and event.get("httpMethod") == "POST"
        if upload and isinstance(body, str) and len(body) > (limit := self._max_upload_bytes()):
            error = PayloadTooLargeError(
                f"The request body is {len(body)} bytes as it reached the function (API Gateway sends uploads base64-encoded, "
                f"a third larger); the limit is {limit} bytes. Send the images by URL instead: JSON with "
                '"images": [{"image_url": "https://..."}].',
                code="request_too_large",
            )
        elif not upload and isinstance(body, str) and len(body) > (limit := self._max_body_bytes()):
            error = PayloadTooLargeError(f"The request body is {len(body)} bytes; the limit is {limit} bytes.")
        elif not self._has_route(event):
            pass  # an unknown route is a 404 whatever its body says (super().resolve answers it, body unread)
        elif upload:
            # Parsed by the route itself: multipart/form-data (binary) or JSON.
            name, media = media_type(event.get("headers"))
            if media not in ("", "application/json", "multipart/form-data"):
                error = InvalidRequestError(
                    f"Unsupported Content-Type '{media}': send multipart/form-data (the images as files) or application/json "
                    "(the images by image_url).",
                    code="unsupported_content_type",
                )
        elif undecodable_body(event):
            error = InvalidRequestError("The request body is not UTF-8 text: send the options as UTF-8 encoded JSON.", code="invalid_json")
        elif event.get("httpMethod") in BODY_METHODS:
            # Powertools matches Content-Type case-sensitively and raises (a 500) on types it does not parse, or
            # parses form data: only JSON is taken, in any case (media types are case-insensitive).
            name, media = media_type(event.get("headers"))
            if media not in ("", "application/json"):
                message = f"Unsupported Content-Type '{media}': send the options as JSON with 'Content-Type: application/json'."
                error = InvalidRequestError(message, code="unsupported_content_type")
            elif name is not None:
                event = {**event, "headers": {**event["headers"], name: "application/json"}}
        if error is not None:
            builder: ResponseBuilder[APIGatewayProxyEvent] = ResponseBuilder(error_response(error))
            return builder.build(APIGatewayProxyEvent(dict(event)))
        return super().resolve(event, context)

    def _has_route(self, event: Mapping[str, Any]) -> bool:
        """Whether a route of this resolver takes the event's method and path (Powertools' own matching)."""
        method = str(event.get("httpMethod") or "").upper()
        path = self._remove_prefix(str(event.get("path") or ""))
        return any(route.method == method and route.rule.match(path) for route in (*self._static_routes, *self._dynamic_routes))

    def _on_imagegen_error(self, error: ImageGenError) -> Response[str]:
        log = logger.error if error.status_code >= 500 else logger.info
        log("request failed", extra={"status": error.status_code, "code": error.code, "param": error.param})
        return error_response(error)

    def _on_not_found(self, _: NotFoundError) -> Response[str]:
        method, path = self.current_event.http_method, self.current_event.path
        return self._on_imagegen_error(RouteNotFoundError(f"Unknown route: {method} {path}."))

    def _on_recursion(self, _: RecursionError) -> Response[str]:
        return self._on_imagegen_error(InvalidRequestError("The JSON body is nested too deeply.", code="invalid_json"))

    def _on_bug(self, error: Exception) -> Response[str]:
        logger.exception("unhandled error")
        count_bug()
        return error_response(InternalError("The server had an error while processing your request."))
