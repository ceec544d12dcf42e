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


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None when there is none of that shape."""
    match = _BEARER.match(authorization or "")
    return match.group(1) if match else None


def key_fingerprint(key: str) -> str:
    """A stable, non-reversible name for a key, fit for logs and the authorizer's principal id."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def caller_scope(*, authorization: str | None, user_arn: str | None, cognito_identity_id: str | None = None) -> str:
    """A stable, non-reversible name for the caller, to keep per-caller state apart (idempotency records, jobs).

    ``user_arn`` is ``requestContext.identity.userArn``: API Gateway sets it, from a verified signature, only
    under AuthMode IAM, and a client cannot forge it. It is the whole ARN, session name included: the sessions
    of one role may be different people (IAM Identity Center users of one permission set), so they are not
    merged. A Cognito identity pool signs every user with one role and one session name: its identity id tells
    them apart. Otherwise the caller is its API key (the usage plan has already refused unknown ones), or
    "anonymous" where no auth is configured (the local stack by default)."""
    if user_arn:
        principal = f"{user_arn}|{cognito_identity_id or ''}"
        return "iam-" + hashlib.sha256(principal.encode()).hexdigest()[:16]
    return key_fingerprint(bearer_key(authorization) or "anonymous")


# Who calls where no auth is configured (the local stack by default), and the default of code that names no caller.
ANONYMOUS_CALLER = key_fingerprint("anonymous")
