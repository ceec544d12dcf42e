"""API keys as the OpenAI SDKs send them: ``Authorization: Bearer <key>``.

API Gateway checks the key, not this code: the authorizer hands it over as the usage-identifier key
(``ApiKeySourceType: AUTHORIZER``), so an unknown key is refused by the usage plan (403) and a known one is
throttled and metered per key. Only the shape is checked here (no key: 401)."""

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
