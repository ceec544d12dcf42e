"""Streamed image answers (``stream: true``): OpenAI's server-sent events, their encoding, and a parser for the SSE
bodies an upstream provider streams.

The event models have exactly the fields of the official SDKs' (openai-python ``types/image_gen_partial_image_event.py``,
``image_gen_completed_event.py``, ``image_edit_*``; npm ``resources/images.d.ts``), plus our optional ``url`` (the
image's presigned S3 URL) on completed events, which both SDKs ignore. A mid-stream failure is an ``error`` event
whose data has an ``error`` object, the shape the Python SDK raises ``APIError`` for (``_streaming.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from imagegen.errors import ImageGenError
from imagegen.models import Model

# The SDK's literals for the settings an event reports (GIF and SVG output cannot stream: planning refuses them).
Background = Literal["transparent", "opaque", "auto"]
StreamFormat = Literal["png", "webp", "jpeg"]
EventQuality = Literal["low", "medium", "high", "xhigh", "max", "auto"]
PartialType = Literal["image_generation.partial_image", "image_edit.partial_image"]
CompletedType = Literal["image_generation.completed", "image_edit.completed"]


class InputTokensDetails(Model):
    image_tokens: int
    text_tokens: int


class EventUsage(Model):
    """A completed event's ``usage``: required by the SDKs' models, so a provider that reports none gets zeros."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Mapping[str, Any] | None) -> EventUsage:
        """From a provider's usage as it gave it (any field missing or not a number counts zero)."""
        usage = usage or {}
        details = usage.get("input_tokens_details")
        details = details if isinstance(details, Mapping) else {}
        return cls(
            input_tokens=_count(usage, "input_tokens"),
            input_tokens_details=InputTokensDetails(
                image_tokens=_count(details, "image_tokens"), text_tokens=_count(details, "text_tokens")
            ),
            output_tokens=_count(usage, "output_tokens"),
            total_tokens=_count(usage, "total_tokens"),
        )


def _count(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _ImageEvent(Model):
    b64_json: str
    background: Background
    created_at: int
    output_format: StreamFormat
    quality: EventQuality
    size: str


class PartialImageEvent(_ImageEvent):
    """``image_generation.partial_image`` / ``image_edit.partial_image``: a coarser image, as the provider drew it."""

    partial_image_index: int
    type: PartialType


class CompletedEvent(_ImageEvent):
    """``image_generation.completed`` / ``image_edit.completed``: one final image, sent once it is stored."""

    type: CompletedType
    usage: EventUsage
    safety_identifier: str | None = None
    # Ours: the stored image's presigned URL (the SDKs ignore fields they do not know).
    url: str | None = None


class ErrorBody(Model):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEvent(Model):
    """A failure after the stream has begun (the status line is sent by then): the stream's last event."""

    type: Literal["error"] = "error"
    error: ErrorBody

    @classmethod
    def of(cls, error: ImageGenError) -> ErrorEvent:
        return cls(error=ErrorBody.model_validate(error.body()["error"]))


StreamEvent = PartialImageEvent | CompletedEvent | ErrorEvent


def sse(event: StreamEvent) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n``: compact JSON has no line break, so one ``data:`` line carries it. A
    completed event omits its absent optional fields, as OpenAI does; an error keeps ``param`` and ``code`` null, as
    OpenAI's error objects do."""
    data = event.model_dump_json(exclude_none=isinstance(event, CompletedEvent))
    return f"event: {event.type}\ndata: {data}\n\n".encode()


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream as the SSE spec ends them (CRLF, LF or CR), without their ends, as they complete.
    (httpx's ``iter_lines`` also splits at the other line breaks ``str.splitlines`` knows.)"""
    pending = b""
    for chunk in chunks:
        pending += chunk
        start = 0
        while True:
            cr, lf = pending.find(b"\r", start), pending.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            end = lf if cr == -1 or (lf != -1 and lf < cr) else cr
            if end == cr and end + 1 == len(pending):
                break  # a CR at the end of a chunk may be the first half of a CRLF
            yield pending[start:end]
            start = end + (2 if end == cr and pending[end + 1 : end + 2] == b"\n" else 1)
        pending = pending[start:]
    if pending.endswith(b"\r"):
        yield pending[:-1]
    elif pending:
        yield pending


def iter_sse(lines: Iterable[bytes]) -> Iterator[tuple[str | None, str]]:
    """(event type or None, data) of each event in ``lines`` (one line each, its end removed), as the SSE spec
    dispatches them: ``event:`` and ``data:`` fields (one space after the colon dropped, data lines joined by newlines),
    ``:`` comments and other fields ignored, an event dispatched at a blank line, one without data dropped, and what
    is pending at the end of the stream discarded."""
    event: str | None = None
    data: list[str] = []
    first = True
    for raw in lines:
        line = raw.decode("utf-8", errors="replace")
        if first:
            line, first = line.removeprefix("\ufeff"), False
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
