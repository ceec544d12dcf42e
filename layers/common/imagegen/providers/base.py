"""The small interfaces image providers implement (every provider generates, and one that can stream also yields
its partial images as they come), and how the bytes a provider answers are recognised (:func:`sniff_format`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from imagegen.deadline import Deadline
from imagegen.errors import ProviderError
from imagegen.planning import GenerationPlan


@dataclass(frozen=True, slots=True)
class ProviderImage:
    data: bytes
    revised_prompt: str | None = None
    # A stream reports usage per completed image; None when only the request's total is known (ProviderResult.usage).
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProviderResult:
    images: tuple[ProviderImage, ...]
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProviderPartial:
    """A partial image of a stream: its bytes (in the plan's output format) and its ``partial_image_index``."""

    data: bytes
    index: int


class ImageProvider(Protocol):
    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """Exactly ``plan.n`` images, or an :class:`imagegen.errors.ImageGenError`."""
        ...


@runtime_checkable
class StreamingProvider(Protocol):
    def stream(self, plan: GenerationPlan, deadline: Deadline) -> Iterator[ProviderPartial | ProviderResult]:
        """At most ``plan.partial_images`` partials as they come, then one result of exactly ``plan.n`` images; or an
        :class:`imagegen.errors.ImageGenError`, raised at the point of the stream where it happened. The deadline
        bounds the whole stream."""
        ...


# What a provider's image bytes are, by their first bytes (WebP: RIFF....WEBP).
_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpeg", "image/jpeg"),
    (b"RIFF", "webp", "image/webp"),
)
# GIF and SVG only when asked for (output_format): otherwise such bytes are a provider's wrong answer.
_ON_REQUEST = {"gif": ((b"GIF87a", b"GIF89a"), "image/gif"), "svg": ((b"<?xml", b"<svg"), "image/svg+xml")}


def sniff_format(data: bytes, output_format: str | None = None) -> tuple[str, str]:
    """(extension, content type) of an image a provider answered; a GIF or an SVG only when ``output_format`` asked
    for one (an SVG is text: an XML declaration or the <svg> element first, after a byte-order mark and white space)."""
    for magic, extension, content_type in _FORMATS:
        if data.startswith(magic) and (extension != "webp" or data[8:12] == b"WEBP"):
            return extension, content_type
    if output_format in _ON_REQUEST:
        starts, content_type = _ON_REQUEST[output_format]
        head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip()
        if head.startswith(starts) and (output_format != "svg" or b"<svg" in head):
            return output_format, content_type
    raise ProviderError("The image provider returned bytes that are not an image in a format asked for.", code="provider_bad_response")
