"""In-process measurements of the API handler, run in a child process by ``bench.run`` (its stdout takes the
function's logs and metrics; results go to the ``--out`` file as JSON).

    python -m bench.inprocess warm --out FILE [--quick]      per-request time vs the S3 floor; n=4 vs n=1
    python -m bench.inprocess memory --out FILE [--tracemalloc]   peak memory of a ~4 MB image answered as b64_json

The environment (S3 endpoint and credentials, bucket, POWERTOOLS_*) comes from the parent. The service is the
real one (settings, S3 client, store) except its provider, which answers pre-made bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import re
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from bench.premade import PremadeProvider, noise_png
from imagegen.deadline import Deadline
from imagegen.planning import GenerationPlan
from imagegen.providers.base import ImageProvider, ProviderResult
from imagegen.providers.local import LocalProvider, draw

EVENTS = Path(__file__).resolve().parents[1] / "events"
# Photo-like PNG sizes: OpenAI's 1024x1024 PNGs are typically 1.3-3 MB.
PHOTO_BYTES = 1_500_000
B64_IMAGE_BYTES = 4_000_000


class SwitchProvider:
    """The provider the service uses; the benchmark points it at pre-made bytes or the real local provider."""

    def __init__(self, current: ImageProvider) -> None:
        self.current = current

    def generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        return self.current.generate(plan, deadline)


class Context:
    function_name = "imagegen-api"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:imagegen-api"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def load_handler(provider: ImageProvider) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The API function's handler, its service built with ``provider`` (the real settings, S3 client and store)."""
    from imagegen import service

    service.get_service.cache_clear()
    service.get_provider = lambda name: provider  # read by get_service() on first use
    from functions.api import app

    handler: Callable[[dict[str, Any], Any], dict[str, Any]] = app.lambda_handler
    return handler


def event(**body: Any) -> dict[str, Any]:
    """events/api_generate_url.json with its body replaced and a fresh request id."""
    result: dict[str, Any] = json.loads((EVENTS / "api_generate_url.json").read_text())
    result["body"] = json.dumps({"prompt": "a lighthouse on a cliff at dawn, watercolor", "model": "local", **body})
    result["requestContext"]["requestId"] = str(uuid.uuid4())
    result["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)  # API Gateway's 29 s count from now
    return result


def invoke(handler: Callable[[dict[str, Any], Any], dict[str, Any]], **body: Any) -> dict[str, Any]:
    response = handler(event(**body), Context())
    if response["statusCode"] != 200:
        raise RuntimeError(f"the handler answered {response['statusCode']}: {response['body'][:500]}")
    return response


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "samples": len(ordered),
    }


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def warm(quick: bool) -> dict[str, Any]:
    from imagegen.clients import s3_client
    from imagegen.settings import get_settings
    from imagegen.storage import image_key

    placeholder = draw("a lighthouse on a cliff at dawn, watercolor", 1024, 1024)
    photo = noise_png(PHOTO_BYTES)
    premade = PremadeProvider(placeholder)
    switch = SwitchProvider(premade)
    handler = load_handler(switch)
    client, bucket = s3_client(), get_settings().images_bucket
    pool = ThreadPoolExecutor(max_workers=10)

    def floor(data: bytes, index: int = 0, request_id: str | None = None) -> None:
        """What any handler must do for one url answer: one put_object of the bytes (same key layout, headers and
        metadata as ours) and one presign."""
        request_id = request_id or str(uuid.uuid4())
        key = image_key(request_id, index, "png", dt.datetime.now(dt.UTC))
        metadata = {"request-id": request_id, "model": "local", "size": "1024x1024", "prompt-sha256": "0" * 64}
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/png", ServerSideEncryption="AES256", Metadata=metadata)
        client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)

    def floor_n(data: bytes, n: int) -> None:
        """n floors at once on a thread pool: the best a handler can do for n images."""
        request_id = str(uuid.uuid4())
        for future in [pool.submit(floor, data, index, request_id) for index in range(n)]:
            future.result()

    results: dict[str, Any] = {"placeholder_bytes": len(placeholder), "photo_bytes": len(photo)}
    for name, data, rounds in (("placeholder", placeholder, 15 if quick else 200), ("photo", photo, 5 if quick else 60)):
        premade.data = data
        for _ in range(3):  # connections, lazy imports, first-use caches
            invoke(handler, size="1024x1024", n=1)
            floor(data)
        handler_times, floor_times = [], []
        for _ in range(rounds):  # interleaved, so drift and noise hit both sides alike
            handler_times.append(timed(partial(invoke, handler, size="1024x1024", n=1)))
            floor_times.append(timed(partial(floor, data)))
        results[f"{name}_handler"] = summary(handler_times)
        results[f"{name}_floor"] = summary(floor_times)

    for name, data in (("placeholder", placeholder), ("photo", photo)):
        premade.data = data
        samples: dict[str, list[float]] = {"n1": [], "n4": [], "floor_n4": []}
        for _ in range(4 if quick else 40):
            samples["n1"].append(timed(partial(invoke, handler, size="1024x1024", n=1)))
            samples["n4"].append(timed(partial(invoke, handler, size="1024x1024", n=4)))
            samples["floor_n4"].append(timed(partial(floor_n, data, 4)))
        for key, values in samples.items():
            results[f"{name}_{key}"] = summary(values)
    pool.shutdown()

    # The request the throughput run sends, in-process with the real local provider: the front's reference.
    switch.current = LocalProvider()
    invoke(handler, size="256x256", n=1)
    results["local_256"] = summary([timed(partial(invoke, handler, size="256x256", n=1)) for _ in range(10 if quick else 100)])
    results["premade_calls"] = premade.calls
    return results


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in bytes."""
    fields = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE))
    return {name: int(value) * 1024 for name, value in fields.items()}


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def runtime_marshal(response: dict[str, Any]) -> bytes:
    """What the Lambda Python runtime does with the handler's answer (awslambdaric: JSON text, then UTF-8)."""
    try:
        from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller
    except ImportError:
        return json.dumps(response).encode()
    text, _ = LambdaMarshaller().marshal_response(response)
    return text if isinstance(text, bytes) else text.encode("utf-8")


def memory(use_tracemalloc: bool) -> dict[str, Any]:
    image = noise_png(B64_IMAGE_BYTES)
    premade = PremadeProvider(noise_png(20_000))
    handler = load_handler(premade)
    runtime_marshal(invoke(handler, size="1024x1024", n=1, responseFormat="b64_json"))  # every code path once
    premade.data = image  # the provider's answer exists before the baseline: what follows is ours
    gc.collect()
    if use_tracemalloc:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        response = invoke(handler, size="1024x1024", n=1, responseFormat="b64_json")
        handler_peak = tracemalloc.get_traced_memory()[1] - baseline
        payload = runtime_marshal(response)
        total_peak = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
    else:
        reset_peak_rss()
        baseline = memory_status()["VmRSS"]
        response = invoke(handler, size="1024x1024", n=1, responseFormat="b64_json")
        handler_peak = memory_status()["VmHWM"] - baseline
        payload = runtime_marshal(response)
        total_peak = memory_status()["VmHWM"] - baseline
    return {
        "image_bytes": len(image),
        "payload_bytes": len(payload),
        "handler_peak_bytes": handler_peak,
        "total_peak_bytes": total_peak,
        "method": "tracemalloc" if use_tracemalloc else "VmHWM",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("mode", choices=["warm", "memory"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    result = warm(args.quick) if args.mode == "warm" else memory(args.tracemalloc)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
