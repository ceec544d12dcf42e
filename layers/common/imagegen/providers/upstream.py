"""What every provider over HTTP shares: one request with a timeout cut to the deadline, retries inside the
deadline (the OpenAI SDK's policy), Retry-After passed on, keys redacted from upstream messages, and the one table
from an upstream status to our error.

A provider reads its own error body into an OpenAI-style error object (``message``, ``code``, ``param``) and gives
it to :func:`error_for`; a refusal by the provider's safety system is the code ``content_policy_violation``.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from imagegen.deadline import Deadline
from imagegen.errors import (
    ContentPolicyError,
    ImageGenError,
    InvalidRequestError,
    PayloadTooLargeError,
    ProviderConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from imagegen.observability import logger

# Error codes for a refusal by a provider's safety system (OpenAI's two; other providers' refusals are mapped to the
# first).
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
CONNECT_TIMEOUT_SECONDS = 5.0
# Retries within the request's deadline (the OpenAI SDK's defaults: 2 retries, 0.5 s doubling, 8 s at most).
MAX_RETRIES = 2
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A retry is only worth it if an attempt still fits after the wait.
MIN_ATTEMPT_SECONDS = 1.0

# Anything shaped like an API key (OpenAI "sk-...", or a bearer token) in a provider's message: a provider or a proxy
# may echo (part of) the server's key, and provider messages reach clients.
_KEY_LIKE = re.compile(r"\b(sk|rk|pk|key)[-_][A-Za-z0-9*._-]{4,}|Bearer\s+\S+", re.IGNORECASE)


def redact_keys(message: str) -> str:
    return _KEY_LIKE.sub("[redacted]", message)


def retry_after(response: httpx.Response) -> dict[str, str]:
    """Retry-After in whole seconds, from ``retry-after-ms`` or ``retry-after`` (seconds)."""
    milliseconds = response.headers.get("retry-after-ms")
    seconds = response.headers.get("retry-after")
    try:
        value = float(milliseconds) / 1000 if milliseconds else float(seconds) if seconds else None
    except ValueError:
        value = None
    return {"Retry-After": str(max(1, math.ceil(value)))} if value is not None else {}


def error_for(status: int, error: Mapping[str, Any], *, retry_after: dict[str, str] | None = None) -> ImageGenError:
    """Our error for an upstream status and an OpenAI-style error object (``message``, ``code``, ``param``). A 4xx
    this table does not name (408, 409, 415, 451, ...) is a ProviderError, retried as the OpenAI SDK retries 408 and
    409 and fallen through on a route: none of the error lists of our providers (OpenAI's error-codes guide, Google's
    troubleshooting table, BFL's and Stability's references) names one for image requests as the caller's fault."""
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = redact_keys(str(error.get("message") or f"HTTP {status}"))
    if status in (400, 422) and code in CONTENT_POLICY_CODES:
        return ContentPolicyError(f"The provider refused the request: {message}", param="prompt", code=code)
    param = error.get("param") if isinstance(error.get("param"), str) else None
    if status in (400, 422):
        return InvalidRequestError(message, param=param, code=code)
    # The request was too large for the provider (Stability documents 413): the caller's to shrink, so answered as
    # our own size limits are (413, invalid_request_error), never retried nor fallen through to another model.
    if status == 413:
        return PayloadTooLargeError(f"The image provider refused the request as too large: {message}", param=param, code=code)
    # What no retry can fix until the operator acts: a configuration error (x-should-retry: false, never retried).
    if status in (401, 403):
        return ProviderConfigurationError(
            f"The image provider refused this server's credentials (HTTP {status}): the deployment's provider API key "
            "is wrong or lacks access to the model. This is not a problem with your request; contact the operator.",
            code="provider_auth_failed",
        )
    if status == 404:
        return ProviderConfigurationError(
            "The image provider does not offer this deployment's model or endpoint (HTTP 404): the model is not enabled "
            "for its account, or the deployment or base URL is wrong. This is not a problem with your request; contact "
            "the operator.",
            code="provider_model_unavailable",
        )
    if status == 402 or (status == 429 and code == "insufficient_quota"):
        return ProviderConfigurationError(
            "The provider account of this deployment has run out of quota; contact the operator.", code="provider_quota_exceeded"
        )
    if status == 429:
        return RateLimitError(
            "The image provider is rate limiting this deployment; retry after the time in Retry-After.",
            headers=retry_after or {},
        )
    if status >= 500:
        return ProviderError(f"The image provider failed (HTTP {status}); try again later.")
    return ProviderError(f"The image provider answered HTTP {status}: {message}")


def retry_delay(response: httpx.Response | None, error: ImageGenError, attempt: int) -> float | None:
    """Seconds to wait before trying again, or None when another attempt cannot help. Like the OpenAI SDK:
    connection failures, 408, 409, 429 (not out-of-quota) and 5xx retry, honouring Retry-After; else exponential
    backoff with jitter."""
    if not error.retryable:
        return None
    if response is not None:
        status = response.status_code
        if not (status in (408, 409) or status >= 500 or isinstance(error, RateLimitError)):
            return None
        asked = error.headers.get("Retry-After")
        if asked is not None:
            return float(asked)
    backoff: float = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)
    return backoff * random.uniform(0.75, 1.25)


@dataclass(frozen=True)
class Call:
    """One HTTP request as httpx sends it. httpx encodes the body anew on every send, so a retried attempt sends the
    whole body (a multipart form too) again."""

    method: str
    url: str
    json: Any = None
    data: Mapping[str, str] | None = None
    files: list[Any] | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _same(error: ImageGenError) -> ImageGenError:
    return error


class Upstream:
    """Requests to one provider: its client, how its key is sent (read at every attempt, so a rotated secret is
    picked up), how its error bodies read, and the retry policy within the deadline."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        auth_headers: Callable[[], Mapping[str, str]],
        error_of: Callable[[httpx.Response], ImageGenError],
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._auth_headers = auth_headers
        self._error_of = error_of
        self._max_retries = max_retries
        self._sleep = sleep

    def send(
        self,
        call: Call,
        deadline: Deadline,
        *,
        stream: bool = False,
        refine: Callable[[ImageGenError], ImageGenError] = _same,
    ) -> httpx.Response:
        """A success (streamed: open, its body unread), retried while the deadline leaves room for the wait and
        another attempt; the last error otherwise (a 429 keeps its Retry-After for the client). ``refine`` rewrites
        an error before the retry decision (OpenAI's preview refusals)."""
        for attempt in range(self._max_retries + 1):
            response, error = self._attempt(call, deadline, stream=stream)
            if error is None and response is not None:
                return response
            assert error is not None
            error = refine(error)
            delay = retry_delay(response, error, attempt)
            if delay is None or attempt == self._max_retries or deadline.remaining() < delay + MIN_ATTEMPT_SECONDS:
                raise error
            logger.info("retrying the image provider", extra={"attempt": attempt + 1, "delay": round(delay, 2), "code": error.code})
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _attempt(self, call: Call, deadline: Deadline, *, stream: bool) -> tuple[httpx.Response | None, ImageGenError | None]:
        remaining = deadline.require("call the image provider")
        timeout = httpx.Timeout(remaining, connect=min(CONNECT_TIMEOUT_SECONDS, remaining))
        try:
            request = self._client.build_request(
                call.method,
                call.url,
                json=call.json,
                data=call.data,
                files=call.files,
                params=call.params,
                headers={**call.headers, **self._auth_headers()},
                timeout=timeout,
            )
            response = self._client.send(request, stream=stream)
            if stream and response.is_error:
                response.read()  # the error body, for the status table
                response.close()
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"The image provider did not answer within {remaining:.1f} s.") from exc
        except httpx.TransportError as exc:
            error = ProviderError("The image provider could not be reached.", code="provider_unreachable")
            error.__cause__ = exc
            return None, error
        return response, (self._error_of(response) if response.is_error else None)


class KeyedUpstream(Upstream):
    """Requests to a provider with an API key of its own (Google, Black Forest Labs, Stability AI): the key sent as
    ``auth_header`` makes it, read at every attempt, and the provider's error bodies read by ``read_error`` with the
    key, so a message quoting it is redacted even where the key is not shaped like one."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: Callable[[], str],
        auth_header: Callable[[str], Mapping[str, str]],
        read_error: Callable[..., ImageGenError],
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = api_key
        self._read_error = read_error
        super().__init__(client, auth_headers=lambda: auth_header(api_key()), error_of=self._error, max_retries=max_retries, sleep=sleep)

    def _error(self, response: httpx.Response) -> ImageGenError:
        try:
            key: str | None = self._api_key()
        except ImageGenError:  # the key could not be read (again): the body is read without it
            key = None
        return self._read_error(response, key=key)
