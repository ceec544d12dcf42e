"""One usage record per billed generation: who (caller and end user), what (model, size, quality, images, source),
the provider's token counts when it reports them, and the cost in USD (None when the model has no price)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

Source = Literal["image.generation", "image.edit", "image.variation"]
SOURCES: Mapping[str, Source] = {"generation": "image.generation", "edit": "image.edit", "variation": "image.variation"}


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """The provider's token usage, split as it is priced: text and image input, image (and text) output. The Images
    API reports no ``output_tokens_details``: then every output token is an image token (LiteLLM priced them as text)."""

    text_in: int
    image_in: int
    image_out: int
    text_out: int = 0

    @classmethod
    def of(cls, usage: Mapping[str, Any] | None) -> TokenCounts | None:
        """From an OpenAI ``usage`` object (``input_tokens_details``, optional ``output_tokens_details``); None when
        there is none or it has no token counts."""
        if not usage or not isinstance(usage.get("output_tokens"), int):
            return None
        inputs = usage.get("input_tokens_details") or {}
        outputs = usage.get("output_tokens_details") or {}
        text_in, image_in = _count(inputs, "text_tokens"), _count(inputs, "image_tokens")
        if not inputs:  # no breakdown: the input is the prompt's text
            text_in = _count(usage, "input_tokens")
        output = _count(usage, "output_tokens")
        if outputs:
            image_out, text_out = _count(outputs, "image_tokens"), _count(outputs, "text_tokens")
            return cls(text_in=text_in, image_in=image_in, image_out=image_out, text_out=text_out)
        return cls(text_in=text_in, image_in=image_in, image_out=output)


def _count(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one billed generation used. ``id`` makes it exactly-once: the request's id on the API, the job's id for a
    job (a retried job, an SQS redelivery and an idempotent replay carry the id of the first)."""

    id: str
    at: int  # Unix seconds: when its images were stored
    caller: str  # imagegen.auth.caller_scope: "key-<16 hex>" (an API key's id) or "iam-<16 hex>" (a principal)
    end_user: str | None  # safety_identifier, else user
    model: str
    provider: str
    size: str  # as produced: an "auto" request is recorded at the size its images came out
    quality: str | None
    images: int  # images produced and billed (a cache hit: the images answered)
    source: Source
    tokens: TokenCounts | None = None
    cost_usd: Decimal | None = None  # None: no price for it, never 0 by default
    cached: bool = False  # answered from the cache: no provider call, cost 0
