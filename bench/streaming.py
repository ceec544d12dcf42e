"""``stream: true`` timed by ``bench.run``: the local stack relaying a streamed generation vs the fake OpenAI serving it.

A stack of its own (one worker, no async jobs) runs the API function under its streaming runtime
(``LocalStack(stream_api=True)``, what ``ResponseStreaming=true`` deploys) with its OpenAI models pointed at the
fake OpenAI server. One httpx client streams the same generation two ways, interleaved on warm connections and a
warm function instance: through the stack's front (our relay: front, stream tap, RIE, the function reading the
fake's events as they arrive) and straight from the fake, with the very body the function sent it. Each side's times
are from sending the request to an event fully received (the SSE parser of the layer, ``imagegen.streaming``, has
dispatched it): the first partial image and the completed event.

The fake waits ``PAUSE`` before each event, as a provider that draws does (real partials come seconds apart), so an
event held back until the next one, or a buffered stream, would cost at least that much: the first-partial row can
tell a relay from a buffer, which a fake answering everything at once could not.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from devtools.local import LocalStack
from imagegen.streaming import iter_sse, split_lines
from tests.fakes.openai_server import FakeOpenAI

PAUSE = 0.1  # seconds before each event (the fake's ``slow-partials:<seconds>``); longer than a 40 ms delayed ACK
PARTIALS = 2
MODEL = "gpt-image-1-mini"  # an OpenAI model: the function streams it from the fake through its OpenAI provider
API_KEY = "sk-bench-not-a-key"
BODY = {
    "model": MODEL,
    "prompt": f"slow-partials:{PAUSE}:a lighthouse on a cliff at dawn, watercolor",
    "size": "1024x1024",
    "n": 1,
    "stream": True,
    "partial_images": PARTIALS,
}
PARTIAL, COMPLETED = "image_generation.partial_image", "image_generation.completed"
EXPECTED = [PARTIAL] * PARTIALS + [COMPLETED]
Side = tuple[str, dict[str, Any], dict[str, str]]  # url, JSON body, headers


@dataclass(frozen=True)
class Timing:
    """One streamed request: ms from sending it to its first partial event and to its completed event."""

    first_partial_ms: float
    completed_ms: float


def timed_stream(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> Timing:
    """Stream one generation from ``url``, timing each event as the SSE parser dispatches it (before it is decoded)."""
    kinds: list[str] = []
    times: list[float] = []
    started = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200 or "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
            raise RuntimeError(f"stream from {url} answered {response.status_code}: {response.text[:500]}")
        for _, data in iter_sse(split_lines(response.iter_bytes())):
            times.append((time.perf_counter() - started) * 1000)
            kinds.append(json.loads(data).get("type", "?"))
    if kinds != EXPECTED:
        raise RuntimeError(f"stream from {url} sent {kinds}, not {EXPECTED}")
    return Timing(first_partial_ms=times[0], completed_ms=times[-1])


def measure(fake: FakeOpenAI, data_dir: Path, rounds: int, warmup: int) -> dict[str, Any]:
    """``warmup`` discarded rounds, then ``rounds`` interleaved ones (the order alternating): each side's timings,
    the body the function sent the fake, and how long the streaming stack took to start."""
    stack = LocalStack(
        data_dir=data_dir,
        port=0,
        s3_port=0,
        workers=1,
        passthrough=(),  # never the developer's OpenAI settings: the fake's
        extra_env={"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": API_KEY},
        async_jobs=False,
        stream_api=True,
    )
    with stack, httpx.Client(timeout=60) as client:
        ours: Side = (f"{stack.base_url}/v1/images/generations", BODY, {})
        timed_stream(client, *ours)
        upstream = fake.requests[-1]["json"]  # what our provider asked the fake for: the direct side asks the same
        if upstream.get("stream") is not True or upstream.get("partial_images") != PARTIALS:
            raise RuntimeError(f"the function did not ask the fake to stream: {upstream}")
        direct: Side = (f"{fake.base_url}/images/generations", upstream, {"authorization": f"Bearer {API_KEY}"})
        sides = {"ours": ours, "direct": direct}
        samples: dict[str, list[Timing]] = {name: [] for name in sides}
        for round_ in range(warmup + rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                timing = timed_stream(client, *sides[name])
                if round_ >= warmup:
                    samples[name].append(timing)
    return {
        "startup_seconds": stack.startup_seconds,
        "upstream_body": {key: value for key, value in upstream.items() if key != "prompt"},
        **{name: [asdict(timing) for timing in timings] for name, timings in samples.items()},
    }
