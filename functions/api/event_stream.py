"""How a ``stream: true`` answer leaves the API function: a route stashes the service's events and answers an empty
``text/event-stream`` Response (Powertools serialises whatever a route returns, so the events cannot travel through
it); the handler then hands the resolver's status and headers, with the events as server-sent events, to the
streaming runtime as a StreamingResponse."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response

if TYPE_CHECKING or __package__:  # imported as functions.api.event_stream (tests, tools, mypy)
    from functions.api.runtime import StreamingResponse
else:  # in Lambda: a top-level module beside app.py
    from runtime import StreamingResponse
from imagegen.errors import InternalError
from imagegen.observability import count_bug, logger, metrics
from imagegen.streaming import ErrorEvent, StreamEvent, sse

EVENT_STREAM = "text/event-stream"
# The events of the current invocation's stream, set by a route and taken by the handler (a context variable: each
# thread that calls the handler, as some tests do, has its own).
_stream_events: ContextVar[Iterator[StreamEvent] | None] = ContextVar("stream_events", default=None)


def event_stream(events: Iterator[StreamEvent]) -> Response[Any]:
    """Stash the events for the handler and answer what the prelude carries: 200 and the SSE headers."""
    _stream_events.set(events)
    return Response(200, EVENT_STREAM, "", {"Cache-Control": "no-cache"})


@contextmanager
def collecting_stream() -> Iterator[Callable[[], Iterator[StreamEvent] | None]]:
    """Around one resolve: afterwards, the getter gives the events a route stashed (None: an ordinary answer)."""
    token = _stream_events.set(None)
    taken: list[Iterator[StreamEvent] | None] = [None]
    try:
        yield lambda: taken[0]
    finally:
        taken[0] = _stream_events.get()
        _stream_events.reset(token)


def streamed(answer: dict[str, Any], events: Iterator[StreamEvent] | None) -> dict[str, Any] | StreamingResponse:
    """The resolver's proxy answer, or, when a route stashed events and its 200 event-stream answer survived, that
    answer's status and headers with the events as the body."""
    if events is None:
        return answer
    headers = _headers(answer)
    if answer["statusCode"] != 200 or headers.get("Content-Type") != EVENT_STREAM:
        # Something after the route turned its answer into another (an error): that answer goes, the stream is closed.
        _close(events)
        return answer
    return StreamingResponse(status_code=200, headers=headers, body=_sse_body(events))


def _sse_body(events: Iterator[StreamEvent]) -> Iterator[bytes]:
    """Each event as SSE. The service turns its own errors into an error event; anything else is a bug, counted
    and ended with an api_error event (the status line is out by then, and a traceback never goes to the client).
    The metrics the stream adds (BytesStored, InternalErrors) are flushed at its end: log_metrics flushed when
    lambda_handler returned, before the stream ran."""
    try:
        for event in events:
            yield sse(event)
    except Exception:
        logger.exception("the stream failed with an unexpected error")
        count_bug()
        yield sse(ErrorEvent.of(InternalError("The server had an error while processing your request.")))
    finally:
        _close(events)  # a stream left early (the client went) closes the provider's stream now
        if metrics.metric_set:
            metrics.flush_metrics()


def _close(events: Iterator[StreamEvent]) -> None:
    close = getattr(events, "close", None)
    if callable(close):
        close()


def _headers(answer: dict[str, Any]) -> dict[str, str]:
    """The proxy dict's headers as one value each (the prelude's ``headers``): REST answers carry multiValueHeaders,
    joined with ", " as HTTP allows for every header but Set-Cookie, which no streamed answer sets."""
    headers: dict[str, str] = dict(answer.get("headers") or {})
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(values)
    return headers
