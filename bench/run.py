"""Benchmarks: ``make bench`` (``python -m bench.run``; ``--quick`` for a < 30 s smoke run once caches exist).

Everything runs on loopback against the local stack (a real S3 server, the API function under the real Lambda
RIE behind the HTTP front) and prints one table in which every figure is a ratio measured side by side in this run:

1. cold start: a fresh interpreter importing the API function and serving its first request vs the naive handler
   (bench/naive_handler.py: ``openai`` SDK + boto3) doing the same job against the same fake OpenAI and S3 server;
2. warm overhead: the handler in-process (provider answering pre-made bytes, url) vs one put_object + one presign;
3. n=4 vs n=1 images (concurrent uploads);
4. peak memory of a ~4 MB image answered as b64_json vs the image size;
5. package size: the built layer + function vs the naive handler's dependencies (Lambda arm64 wheels);
6. throughput through the HTTP front and the RIE for a bounded time: requests/s, p50/p99;
7. ``stream: true``: time to the first partial and to the completed event through a second stack, the API function
   under its streaming runtime, vs the same stream straight from the fake OpenAI (bench/streaming.py).

Packages for cold starts and sizes are installed once into bench/.cache (see bench/sites.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import pieces, streaming
from bench.sites import (
    BENCH_DIR,
    CACHE,
    LAMBDA_PLATFORM,
    REPO_ROOT,
    compile_tree,
    copy_tree,
    layer_requirements,
    pip_target,
    tree_size,
)
from devtools.local import LocalStack
from devtools.rie import FunctionConfig
from tests.fakes.openai_server import FakeOpenAI

PYTHON312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
# The SDK the Lambda runtime ships (the layer strips its own copy): shared by both handlers' cold starts.
RUNTIME_PACKAGES = ["boto3"]
NAIVE_PACKAGES = ["openai"]
# The Globals of template.yaml (LogLevel's default), so the function initialises as deployed.
TEMPLATE_ENV = {
    "POWERTOOLS_SERVICE_NAME": "imagegen",
    "POWERTOOLS_METRICS_NAMESPACE": "ImageGen",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
}
PROMPT = "a lighthouse on a cliff at dawn, watercolor"
# The like-for-like job: two 512x512 images from the same fake OpenAI, stored, answered as presigned URLs.
COLD_BODY = {"prompt": PROMPT, "n": 2, "size": "512x512", "responseFormat": "url"}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    goal: float | None = None
    # A goal in milliseconds instead: ours minus the baseline (``extra_ms``) at most ``goal_ms``.
    goal_ms: float | None = None
    extra_ms: float | None = None

    def verdict(self) -> str:
        if self.goal_ms is not None and self.extra_ms is not None:
            return "ok" if self.extra_ms <= self.goal_ms else "MISSED"
        if self.goal is None or self.ratio is None:
            return ""
        return "ok" if self.ratio <= self.goal else "MISSED"

    def goal_text(self) -> str:
        if self.goal_ms is not None:
            return f"≤ +{self.goal_ms:g} ms"
        return "" if self.goal is None else f"≤ {self.goal:g}×"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        lines = ["| measure | ours | baseline | ratio | goal | |", "|---|---|---|---|---|---|"]
        for row in self.rows:
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}×"
            lines.append(f"| {row.measure} | {row.ours} | {row.baseline} | {ratio} | {row.goal_text()} | {row.verdict()} |")
        return "\n".join(lines)


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "−") + ms(abs(value))


def mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------------- cold start


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    paths: tuple[Path, ...]
    env: dict[str, str]
    event: Path


def write_event(directory: Path, name: str, body: dict[str, Any]) -> Path:
    event = json.loads((REPO_ROOT / "events" / "api_generate_url.json").read_text())
    event["body"] = json.dumps(body)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(event))
    return path


def run_child(python: str, variant: Variant, *, importtime: bool = False) -> tuple[dict[str, Any], str]:
    """One cold start in a fresh interpreter: (its result line, its stderr)."""
    config = FunctionConfig(code_dir=variant.paths[0], layer_dirs=variant.paths, env=variant.env, python=python)
    env = config.environment() | {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}
    flags = ["-X", "importtime"] if importtime else []
    command = [python, "-S", *flags, str(BENCH_DIR / "coldstart_child.py"), variant.module, str(variant.event)]
    done = subprocess.run(command, cwd=variant.paths[0], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH-RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"cold start {variant.name} failed ({done.returncode}):\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    if result["status"] != 200 or result["urls"] != COLD_BODY["n"]:
        raise RuntimeError(f"cold start {variant.name} answered {result['status']}: {result['error']}")
    return result, done.stderr


def importtime_offenders(stderr: str, top: int = 8) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From ``-X importtime`` output: self time summed per top-level package, and the slowest single modules (ms)."""
    per_package: dict[str, float] = {}
    per_module: list[tuple[str, float]] = []
    for match in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", stderr):
        self_ms, module = int(match[1]) / 1000, match[2]
        per_package[module.split(".")[0]] = per_package.get(module.split(".")[0], 0.0) + self_ms
        per_module.append((module, self_ms))
    packages = sorted(per_package.items(), key=lambda item: -item[1])[:top]
    modules = sorted(per_module, key=lambda item: -item[1])[:top]
    return packages, modules


@dataclass
class XRaySink:
    """A UDP socket standing in for the X-Ray daemon: counts the segments the traced function sends."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def drain(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return count
            count += 1

    def __enter__(self) -> XRaySink:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def installed_version(site: Path, package: str) -> str:
    """The version pip installed into ``site`` (from its dist-info directory name)."""
    found = sorted(site.glob(f"{package}-*.dist-info"))
    return found[0].name.removeprefix(f"{package}-").removesuffix(".dist-info") if found else "?"


def prepare_code(python: str, work: Path) -> dict[str, Path]:
    """The function and layer code as Lambda lays them out (/var/task, /opt/python), compiled and not."""
    layout = {}
    for compiled in (True, False):
        suffix = "pyc" if compiled else "src"
        task = copy_tree(REPO_ROOT / "functions" / "api", work / f"task-{suffix}", keep_bytecode=False)
        opt = work / f"opt-{suffix}" / "python"
        copy_tree(REPO_ROOT / "layers" / "common" / "imagegen", opt / "imagegen", keep_bytecode=False)
        if compiled:
            compile_tree(python, task, opt)
        layout[f"task-{suffix}"], layout[f"opt-{suffix}"] = task, opt
    for handler in ("naive", "minimal"):
        task = work / f"{handler}-task"
        task.mkdir()
        shutil.copy2(BENCH_DIR / f"{handler}_handler.py", task / f"{handler}_handler.py")
        compile_tree(python, task)
        layout[f"{handler}-task"] = task
    return layout


@dataclass(frozen=True)
class Sites:
    """Package directories for cold starts: the layer's (byte-compiled or not), the runtime's boto3, the naive's."""

    layer: Path
    layer_src: Path
    runtime: Path
    naive: Path

    @classmethod
    def install(cls, python: str) -> Sites:
        # The layer ships boto3 and botocore at the lock's versions (layers/common/Makefile), ahead of the runtime's; a
        # naive deployment uses the runtime's.
        drop = ("boto3", "botocore", "s3transfer")
        return cls(
            layer=pip_target("layer-cp312", python, layer_requirements()),
            layer_src=pip_target("layer-cp312-nopyc", python, layer_requirements(), compile_=False),
            runtime=pip_target("runtime-cp312", python, RUNTIME_PACKAGES),
            naive=pip_target("naive-cp312", python, NAIVE_PACKAGES, drop=drop),
        )


def cold_start(report: Report, stack: LocalStack, fake: FakeOpenAI, python: str, work: Path, rounds: int, importtime: bool) -> None:
    log(f"cold start: installing/reusing isolated packages for {python} in {CACHE} ...")
    sites = Sites.install(python)
    code = prepare_code(python, work)
    # SeaweedFS allocates its volumes on the first write (~1 s): not a cost of whichever handler comes first.
    stack.s3_client().put_object(Bucket=stack.bucket, Key="bench/warm-up", Body=b"warm-up")
    with XRaySink() as sink:
        variants = cold_start_variants(stack, fake, code, work, sink, sites)
        if not importtime:  # --quick: the local provider path is exercised by the warm and throughput runs
            variants = [variant for variant in variants if variant.name != "ours-local"]
        variants += pieces.piece_variants({variant.name: variant for variant in variants})
        results: dict[str, list[dict[str, Any]]] = {variant.name: [] for variant in variants}
        log(f"cold start: {rounds} round(s) of {len(variants)} fresh processes, interleaved ...")
        for _ in range(rounds):
            for variant in variants:
                results[variant.name].append(run_child(python, variant)[0])
        segments = sink.drain()
    report_cold_start(report, results, segments)
    pieces.report_pieces(report, results, Row, ms)
    versions = ((sites.naive, "openai"), (sites.runtime, "boto3"), (sites.layer, "aws_lambda_powertools"), (sites.layer, "pydantic"))
    report.notes.append("versions: " + ", ".join(f"{package} {installed_version(site, package)}" for site, package in versions))

    if not importtime:
        return
    log("cold start: -X importtime of both handlers ...")
    by_name = {variant.name: variant for variant in variants}
    for variant, who in ((by_name["ours-deployed"], "ours (as deployed)"), (by_name["naive"], "naive")):
        packages, modules = importtime_offenders(run_child(python, variant, importtime=True)[1])
        report.notes.append(f"importtime {who}, self ms by package: " + ", ".join(f"{name} {value:.0f}" for name, value in packages))
        report.notes.append(f"importtime {who}, slowest modules: " + ", ".join(f"{name} {value:.0f}" for name, value in modules))


def cold_start_variants(
    stack: LocalStack, fake: FakeOpenAI, code: dict[str, Path], work: Path, sink: XRaySink, sites: Sites
) -> list[Variant]:
    """The naive and the minimal handler first, then ours: like for like, local provider, as deployed (with and
    without .pyc)."""
    base = stack.s3.env() | TEMPLATE_ENV | {"IMAGES_BUCKET": stack.bucket}
    openai = {"OPENAI_API_KEY": "sk-bench-not-a-key", "OPENAI_BASE_URL": fake.base_url}
    untraced = {"POWERTOOLS_TRACE_DISABLED": "true"}
    # As template.yaml deploys the API function: X-Ray active and the async job backends configured (their clients
    # are only built here; nothing listens at these names and the synchronous request must not need them).
    deployed = {
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": sink.address,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "JOBS_TABLE": "imagegen-jobs",
        "JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/imagegen-jobs",
    }
    fake_event = write_event(work, "cold-fake", COLD_BODY | {"model": "gpt-image-1-mini", "size": "1024x1024"})
    local_event = write_event(work, "cold-local", COLD_BODY | {"model": "local"})
    ours = (code["task-pyc"], code["opt-pyc"], sites.layer, sites.runtime)
    ours_src = (code["task-src"], code["opt-src"], sites.layer_src, sites.runtime)
    return [
        Variant("naive", "naive_handler", (code["naive-task"], sites.naive, sites.runtime), base | openai, fake_event),
        Variant("minimal", "minimal_handler", (code["minimal-task"], sites.runtime), base | openai, fake_event),
        Variant("ours-fake", "app", ours, base | openai | untraced, fake_event),
        Variant("ours-local", "app", ours, base | untraced, local_event),
        Variant("ours-deployed", "app", ours, base | openai | deployed, fake_event),
        Variant("ours-deployed-nopyc", "app", ours_src, base | openai | deployed, fake_event),
    ]


def report_cold_start(report: Report, results: dict[str, list[dict[str, Any]]], segments: int) -> None:
    def median(name: str, key: str) -> float:
        return float(statistics.median(result[key] for result in results[name]))

    def describe(name: str) -> str:
        return f"CPU {ms(median(name, 'cpu_ms'))}; wall {ms(median(name, 'total_ms'))}, import {ms(median(name, 'import_ms'))}"

    report.raw["cold_start"] = results
    labels = {
        "ours-fake": "cold start (CPU): import + 1st request, same fake OpenAI",
        "ours-local": "cold start (CPU): local provider (naive: fake OpenAI)",
        "ours-deployed": "cold start (CPU) as deployed (X-Ray, jobs configured), layer with .pyc",
        "ours-deployed-nopyc": "cold start (CPU) as deployed, layer without .pyc (a build host without CPython 3.12)",
    }
    for name, label in labels.items():
        if name not in results:
            continue
        report.rows.append(Row(label, describe(name), describe("naive"), median(name, "cpu_ms") / median("naive", "cpu_ms"), 0.5))
    floor = median("minimal", "cpu_ms")
    above = {"ours-fake": "same fake OpenAI", "ours-deployed": "ours as deployed"}
    for name, label in above.items():
        ours, naive = median(name, "cpu_ms") - floor, median("naive", "cpu_ms") - floor
        report.rows.append(
            Row(f"cold start (CPU) above a minimal boto3 + urllib handler, {label}", f"+{ms(ours)}", f"+{ms(naive)}", ours / naive)
        )
    report.notes.append(f"the minimal handler (bench/minimal_handler.py) cold-starts in {describe('minimal')}")
    report.notes.append(
        "cold start wall-time ratios (medians; a shared, busy host inflates these, hence CPU time in the table): "
        + ", ".join(f"{name} {median(name, 'total_ms') / median('naive', 'total_ms'):.2f}×" for name in labels if name in results)
    )
    report.notes.append(f"X-Ray: the deployed-configuration cold starts sent {segments} segment datagrams to the stand-in daemon.")


# ---------------------------------------------------------------------------------------------------- in-process


def inprocess(stack: LocalStack, mode: str, work: Path, *extra: str) -> dict[str, Any]:
    """Run ``bench.inprocess <mode>`` in a child pointed at the stack's S3 server; its stdout (logs) is dropped."""
    out = work / f"{mode}{'-'.join(extra)}.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'layers' / 'common'}",
        "LAMBDA_TASK_ROOT": str(REPO_ROOT / "functions" / "api"),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "IMAGES_BUCKET": stack.bucket,
        "POWERTOOLS_TRACE_DISABLED": "true",
        **stack.s3.env(),
        **TEMPLATE_ENV,
    }
    command = [sys.executable, "-m", "bench.inprocess", mode, "--out", str(out), *extra]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"bench.inprocess {mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def warm(report: Report, stack: LocalStack, work: Path, quick: bool) -> dict[str, Any]:
    log("warm: handler in-process vs put_object + presign, interleaved ...")
    result = inprocess(stack, "warm", work, *(["--quick"] if quick else []))
    report.raw["warm"] = result
    for name, label in (("placeholder", "placeholder PNG"), ("photo", "photo-like PNG")):
        handler, floor = result[f"{name}_handler"]["median_ms"], result[f"{name}_floor"]["median_ms"]
        size = f"{result[f'{name}_bytes'] / 1000:.0f} KB"
        report.rows.append(Row(f"warm request, url, {label} {size}", ms(handler), f"{ms(floor)} (put + presign)", handler / floor, 1.3))
    for name, label in (("placeholder", "placeholder"), ("photo", "photo-like")):
        one, four, floor_four = (result[f"{name}_{key}"]["median_ms"] for key in ("n1", "n4", "floor_n4"))
        size = f"{result[f'{name}_bytes'] / 1000:.0f} KB"
        report.rows.append(Row(f"n=4 vs n=1, {label} {size}, url", ms(four), f"{ms(one)} (n=1)", four / one, 1.5))
        report.rows.append(
            Row(f"n=4, {label}: ours vs 4 concurrent put + presign", ms(four), f"{ms(floor_four)} (floor n=4)", four / floor_four, 1.3)
        )
    return result


def memory(report: Report, stack: LocalStack, work: Path, quick: bool) -> None:
    log("memory: a ~4 MB image answered as b64_json, in a fresh process ...")
    methods = [()] if quick else [(), ("--tracemalloc",)]
    for extra in methods:
        result = inprocess(stack, "memory", work, *extra)
        report.raw[f"memory-{result['method']}"] = result
        image, method = result["image_bytes"], result["method"]
        answer = f"{mb(image)} image ({mb(result['payload_bytes'])} answer)"
        handler, total = result["handler_peak_bytes"], result["total_peak_bytes"]
        report.rows.append(Row(f"b64_json ~4 MB: peak memory growth in the handler ({method})", mb(handler), answer, handler / image, 3.0))
        report.rows.append(Row(f"b64_json ~4 MB: handler + the runtime's JSON encoding ({method})", mb(total), answer, total / image))


# ---------------------------------------------------------------------------------------------------- package size


def zipped_size(path: Path) -> int:
    with tempfile.TemporaryFile() as file:
        with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
            for item in sorted(path.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    archive.write(item, item.relative_to(path))
        return file.tell()


def package_size(report: Report, quick: bool) -> None:
    build = REPO_ROOT / ".aws-sam" / "build"
    parts = [build / "CommonLayer", build / "ApiFunction"]
    if not all(part.is_dir() for part in parts):
        if quick:
            report.notes.append("package size: skipped (no .aws-sam/build; run `make build` or the full bench)")
            return
        log("package size: no .aws-sam/build, running `make build` ...")
        subprocess.run(["make", "build"], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL, timeout=600)
    log("package size: the naive handler's dependencies as Lambda arm64 wheels ...")
    bundled = pip_target("naive-aarch64", sys.executable, [*NAIVE_PACKAGES, *RUNTIME_PACKAGES], platform=LAMBDA_PLATFORM, compile_=False)
    openai_only = pip_target("naive-openai-aarch64", sys.executable, NAIVE_PACKAGES, platform=LAMBDA_PLATFORM, compile_=False)
    ours = sum(tree_size(part)[0] for part in parts)
    for label, naive in (("openai + boto3", bundled), ("openai only, boto3 from the runtime", openai_only)):
        naive_bytes = tree_size(naive)[0]
        report.rows.append(Row(f"package unzipped: layer + function vs {label}", mb(ours), mb(naive_bytes), ours / naive_bytes))
    if not quick:
        ours_zip = sum(zipped_size(part) for part in parts)
        naive_zip = zipped_size(bundled)
        report.rows.append(Row("package zipped: layer + function vs openai + boto3", mb(ours_zip), mb(naive_zip), ours_zip / naive_zip))
    report.raw["package"] = {"ours": ours, "naive_bundled": tree_size(bundled)[0], "naive_openai": tree_size(openai_only)[0]}


# ---------------------------------------------------------------------------------------------------- throughput


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def throughput(report: Report, stack: LocalStack, seconds: float, concurrency: int, in_process_ms: float) -> None:
    url = f"{stack.base_url}/v1/images/generations"
    body = json.dumps({"prompt": "a red fox", "size": "256x256", "n": 1}).encode()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=35) as client:  # each worker's first generate sets up its S3 client
        for _ in range(2 * stack.workers):
            client.post(url, content=body, headers=headers).raise_for_status()
    log(f"throughput: {concurrency} clients for {seconds:.0f} s through the front and {stack.workers} RIE workers ...")
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[int] = []

    def client_loop() -> None:
        with httpx.Client(timeout=35) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = client.post(url, content=body, headers=headers)
                elapsed = time.perf_counter() - started
                ok = response.status_code == 200 and "url" in response.json()["data"][0]
                with lock:
                    (latencies.append(elapsed) if ok else failures.append(response.status_code))

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client_loop) for _ in range(concurrency)]:
            future.result()
    wall = time.monotonic() - started
    if not latencies:
        raise RuntimeError(f"throughput: no request succeeded ({len(failures)} failures)")
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    rate = len(latencies) / wall
    report.raw["throughput"] = {"requests": len(latencies), "failures": failures, "seconds": wall, "p50_ms": p50, "p99_ms": p99}
    ours = f"{rate:.1f} req/s, p50 {ms(p50)}, p99 {ms(p99)}, {len(failures)} errors"
    label = "throughput via front + RIE (256x256, url): p50 vs in-process"
    report.rows.append(Row(label, ours, f"{ms(in_process_ms)} in-process", p50 / in_process_ms))


# ---------------------------------------------------------------------------------------------------- streaming

# The first partial's extra over the fake's own, at most: a fifth of the fake's pause between events (streaming.PAUSE),
# so a relay that held an event back until the next one misses it by far; about twice what the relay cost on this
# 2-CPU host when idle (~9 ms: the request's way in to the fake and the event's way out); and nothing beside the
# seconds a real provider takes to its first partial.
FIRST_PARTIAL_GOAL_MS = 20.0
STREAM_ROUNDS = 11


def stream_rows(report: Report, fake: FakeOpenAI, work: Path, quick: bool) -> None:
    rounds, warmup = (3, 1) if quick else (STREAM_ROUNDS, 2)
    log(f"stream: a second stack (streaming runtime) and {rounds} interleaved rounds vs the fake directly ...")
    result = streaming.measure(fake, work / "stream-stack", rounds, warmup)
    report.raw["stream"] = result
    labels = {
        "first_partial_ms": "stream: time to first partial event, through the local stack vs the fake provider directly",
        "completed_ms": "stream: time to the completed event (ours: stored in S3, with its url) vs the fake's",
    }
    goals = {"first_partial_ms": FIRST_PARTIAL_GOAL_MS}
    spreads = []
    for key, label in labels.items():
        ours, direct = (float(statistics.median(sample[key] for sample in result[side])) for side in ("ours", "direct"))
        extra = ours - direct
        row = Row(label, f"{ms(ours)} ({signed_ms(extra)})", f"{ms(direct)} (fake)", ours / direct, goal_ms=goals.get(key), extra_ms=extra)
        report.rows.append(row)
        rounds_extra = [a[key] - b[key] for a, b in zip(result["ours"], result["direct"], strict=True)]
        low, _, high = statistics.quantiles(rounds_extra, n=4) if len(rounds_extra) > 1 else (extra, extra, extra)
        spreads.append(f"{key.removesuffix('_ms').replace('_', ' ')} {signed_ms(low)} to {signed_ms(high)}")
    report.notes.append(
        f"stream: {streaming.MODEL} {streaming.BODY['size']}, {streaming.PARTIALS} partials, the fake waiting "
        f"{streaming.PAUSE * 1000:.0f} ms before each event; {rounds} rounds after {warmup} discarded, medians; "
        f"the streaming stack started in {result['startup_seconds'] or 0:.1f} s. The fake draws its PNGs anew for each "
        f"request (~60 ms, ± 10 ms), which the per-round extra times carry (quartiles: {', '.join(spreads)})"
    )


# ---------------------------------------------------------------------------------------------------- main


def timed_section(name: str, section: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = section()
    log(f"{name}: {time.monotonic() - started:.1f} s")
    return result


def choose_python(requested: str | None) -> str:
    """The interpreter for cold starts: --python, else pyenv's 3.12 (Lambda's version), else this one."""
    if requested:
        return requested
    if PYTHON312.is_file():
        return str(PYTHON312)
    return shutil.which("python3.12") or sys.executable


@contextlib.contextmanager
def local_stack(data_dir: Path, workers: int) -> Iterator[tuple[LocalStack, FakeOpenAI]]:
    """The local stack on free ports and a fake OpenAI, stopped together whatever happens. Without async jobs: their
    moto server would also hold the usage table, and every request's usage record there (moto answers in tens of
    milliseconds, DynamoDB in a few) would be what the throughput row measures."""
    stack = LocalStack(data_dir=data_dir, port=0, s3_port=0, workers=workers, passthrough=(), async_jobs=False)
    with FakeOpenAI() as fake, stack:
        yield stack, fake


def run(args: argparse.Namespace) -> Report:
    report = Report()
    load_at_start = os.getloadavg()[0]
    python = choose_python(args.python)
    rounds = 1 if args.quick else args.rounds
    seconds = 2.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        work = Path(tmp)
        log("starting the local stack (S3 server, Lambda RIE workers, HTTP front) and a fake OpenAI ...")
        with local_stack(work / "stack", workers=1 if args.quick else 2) as (stack, fake):
            log(f"local stack: up in {stack.startup_seconds or 0:.1f} s")
            timed_section("cold start", lambda: cold_start(report, stack, fake, python, work, rounds, importtime=not args.quick))
            warm_result = timed_section("warm", lambda: warm(report, stack, work, args.quick))
            timed_section("memory", lambda: memory(report, stack, work, args.quick))
            timed_section("package size", lambda: package_size(report, args.quick))
            in_process = warm_result["local_256"]["median_ms"]
            # Before the throughput run: differences of a few ms, measured on a host not just out of 20 s at full load.
            timed_section("stream", lambda: stream_rows(report, fake, work, args.quick))
            timed_section("throughput", lambda: throughput(report, stack, seconds, args.concurrency, in_process))
    report.notes.insert(0, f"cold starts ran on {python} ({rounds} round(s), medians); the rest on {sys.executable}")
    report.notes.insert(1, f"load average (1 min) at start {load_at_start:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, one RIE worker, a 2 s load run: a smoke test in < 30 s")
    parser.add_argument("--rounds", type=int, default=7, help="cold starts per variant (default 7)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the throughput run (default 20)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients in the throughput run (default 4)")
    parser.add_argument("--python", help="interpreter for cold starts (default: pyenv 3.12, as Lambda runs)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(args)
    print(report.table())
    print()
    for note in report.notes:
        print(f"- {note}")
    print(f"- whole run: {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": [row.__dict__ for row in report.rows], "raw": report.raw}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
