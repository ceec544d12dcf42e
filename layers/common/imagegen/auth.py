"""Who is calling. AuthMode ApiKey: API keys as the OpenAI SDKs send them, ``Authorization: Bearer <key>``.
AuthMode IAM: the principal API Gateway authenticated from the request's SigV4 signature.

API Gateway checks either, not this code: the authorizer hands a key over as the usage-identifier key
(``ApiKeySourceType: AUTHORIZER``), so an unknown key is refused by the usage plan (403) and a known one is
throttled and metered per key; a signature is verified before the function runs. Only the shape of a key is
checked here (no key: 401)."""

from __future__ import annotations

import hashlib
import re

# API Gateway API keys: 20-128 characters; we accept the printable token characters of RFC 6750.
_BEARER = re.compile(r"^Bearer\s+([A-Za-z0-9._~+/=-]{20,128})\s*$", re.IGNORECASE)
# An assumed role's ARN ends in a session name that changes with the process holding it (a Lambda, an ECS task):
# the role is the caller.
_ASSUMED_ROLE = re.compile(r"^(arn:[^:]+:sts::\d{12}:assumed-role/[^/]+)/[^/]+$")


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None when there is none of that shape."""
    match = _BEARER.match(authorization or "")
    return match.group(1) if match else None


def key_fingerprint(key: str) -> str:
    """A stable, non-reversible name for a key, fit for logs and the authorizer's principal id."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def caller_scope(*, authorization: str | None, user_arn: str | None) -> str:
    """A stable, non-reversible name for the caller, to keep per-caller state apart (idempotency records).

    ``user_arn`` is ``requestContext.identity.userArn``: API Gateway sets it, from a verified signature, only
    under AuthMode IAM, and a client cannot forge it. Otherwise the caller is its API key (the usage plan has
    already refused unknown ones), or "anonymous" where no auth is configured (the local stack by default)."""
    if user_arn:
        role = _ASSUMED_ROLE.match(user_arn)
        return "iam-" + hashlib.sha256((role.group(1) if role else user_arn).encode()).hexdigest()[:16]
    return key_fingerprint(bearer_key(authorization) or "anonymous")
