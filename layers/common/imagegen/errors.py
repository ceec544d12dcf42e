"""The error taxonomy and its single mapping to OpenAI-style error JSON.

Status, type and code are class attributes (as in openai-python ``_exceptions.py``): the HTTP answer
follows the exception's *type*, never its message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar


class ImageGenError(Exception):
    """Base of every error this service answers with; ``status_code`` 500 only for bugs."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    # A permanent error does not go away on retry (bad options, policy); a transient one may.
    retryable: ClassVar[bool] = False
    # Headers every answer of this error carries (a caller's own headers are added to them).
    default_headers: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = {**self.default_headers, **(headers or {})}

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequestError(ImageGenError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"


class AuthenticationError(ImageGenError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ImageGenError):
    status_code = 403
    error_type = "permission_error"
    default_code = "forbidden"


class ModelNotFoundError(ImageGenError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class ConflictError(ImageGenError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class RouteNotFoundError(ImageGenError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "unknown_url"


class PayloadTooLargeError(ImageGenError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnprocessableError(ImageGenError):
    status_code = 422
    error_type = "invalid_request_error"
    default_code = "unprocessable"


class ContentPolicyError(ImageGenError):
    """The provider's safety system refused the prompt or the output: 400, as OpenAI answers it (the SDKs raise
    BadRequestError)."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code = "content_policy_violation"


class RateLimitError(ImageGenError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class InsufficientQuotaError(RateLimitError):
    """A budget of this deployment (``BUDGETS``: the API key's or the end user's) is used up for the month: OpenAI's
    ``insufficient_quota`` body, and ``x-should-retry: false``, or the OpenAI SDKs would retry it twice (they retry
    every 429 unless told not to). No ``Retry-After``: the wait is until the next month, which the message names."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"
    retryable = False
    default_headers = MappingProxyType({"x-should-retry": "false"})


class ProviderError(ImageGenError):
    """The image provider failed or answered something we cannot use."""

    status_code = 502
    error_type = "api_error"
    default_code = "provider_error"
    retryable = True


class ProviderConfigurationError(ProviderError):
    """The provider refused this *deployment*, not the request: its key or role refused, its account out of quota, the
    model not enabled or not invocable as configured. No retry can help until the operator acts, so the answer says
    ``x-should-retry: false`` (the OpenAI SDKs honour it) and the worker records the job failed at once."""

    default_code = "provider_misconfigured"
    retryable = False
    default_headers = MappingProxyType({"x-should-retry": "false"})


class ProviderTimeoutError(ImageGenError):
    status_code = 504
    error_type = "api_error"
    default_code = "provider_timeout"
    retryable = True


class StorageError(ImageGenError):
    """S3 refused or failed a write; nothing of the request is left visible."""

    status_code = 502
    error_type = "api_error"
    default_code = "storage_error"
    retryable = True


class StorageTimeoutError(StorageError):
    """S3 did not answer within the request's deadline; nothing of the request is left visible."""

    status_code = 504
    default_code = "storage_timeout"


class QueueError(ImageGenError):
    """The job queue or table refused the work; nothing was accepted."""

    status_code = 502
    error_type = "api_error"
    default_code = "queue_error"
    retryable = True


class JobNotFoundError(ImageGenError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "job_not_found"


class InternalError(ImageGenError):
    """A bug in this project: the only source of a 500."""

    status_code = 500
    error_type = "api_error"
    default_code = "internal_error"


@cache
def _canonical_names() -> dict[str, str]:
    """Every accepted spelling of a request field -> its OpenAI name (``responseFormat`` -> ``response_format``)."""
    from imagegen.options import ImageEditRequest, ImageGenerationRequest, ImageVariationRequest

    names = {}
    for model in (ImageGenerationRequest, ImageEditRequest, ImageVariationRequest):
        for name, field in model.model_fields.items():
            names[name] = name
            for choice in getattr(field.validation_alias, "choices", ()):
                names[str(choice)] = name
    return names


def invalid_request_from(errors: Sequence[Any]) -> InvalidRequestError:
    """Powertools/pydantic validation errors -> one 400 naming the field, as OpenAI answers. Locations may start
    with Powertools' ``"body"``; a document-level error (bad JSON, not an object) names no field."""
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    kind, location = str(first.get("type", "")), tuple(first.get("loc", ()))
    location = location[1:] if location[:1] == ("body",) else location
    if not location or not isinstance(location[0], str):
        if kind == "json_invalid":
            message = "We could not parse the JSON body of your request: send a JSON object."
        else:
            message = "The request body must be a JSON object with at least a 'prompt'."
        return InvalidRequestError(message, code="invalid_json")
    # A nested field is named by its path, as OpenAI does: "images[0].image_url", "svg.model".
    nested = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location[1:])
    sent = f"{location[0]}{nested}"
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unknown parameter: '{sent}'.", param=sent, code="unknown_parameter")
    param = _canonical_names().get(location[0], location[0]) + nested
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    detail = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    code = "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    return InvalidRequestError(f"Invalid '{param}': {detail}.", param=param, code=code)
