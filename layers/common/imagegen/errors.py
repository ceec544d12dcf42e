"""The error taxonomy and its single mapping to OpenAI-style error JSON.

Status, type and code are class attributes (as in openai-python ``_exceptions.py``): the HTTP answer
follows the exception's *type*, never its message text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ImageGenError(Exception):
    """Base of every error this service answers with; ``status_code`` 500 only for bugs."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    # A permanent error does not go away on retry (bad options, policy); a transient one may.
    retryable: ClassVar[bool] = False

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
        self.headers = headers or {}

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


class PayloadTooLargeError(ImageGenError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class ContentPolicyError(ImageGenError):
    status_code = 422
    error_type = "invalid_request_error"
    default_code = "content_policy_violation"


class RateLimitError(ImageGenError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class ProviderError(ImageGenError):
    """The image provider failed or answered something we cannot use."""

    status_code = 502
    error_type = "api_error"
    default_code = "provider_error"
    retryable = True


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


class InternalError(ImageGenError):
    """A bug in this project: the only source of a 500."""

    status_code = 500
    error_type = "api_error"
    default_code = "internal_error"
