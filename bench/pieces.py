"""Where a cold start's CPU goes: the API function's cold start (like for like, and as deployed with X-Ray) cut into
pieces next to the minimal handler's, in fresh processes interleaved with the other cold starts (bench/run.py).

Each piece runs before the handler is imported (bench/coldstart_child.py, ``BENCH_PIECES``), in the order below, so
each is charged what it adds to those before it: the libraries first, the floor's own pieces (boto3, the S3 client)
next, then our modules, the rest of the handler's import and the first request. The sum is the whole cold start;
what it has above the minimal handler's sum is what issue #17 asks to bring to 100 ms or account for.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Report, Variant

REST, FIRST = "the rest of the handler's import", "the first request"
# (name, code, the minimal handler's piece it compares with, what it is for)
OURS: tuple[tuple[str, str, str | None, str], ...] = (
    ("pydantic", "from pydantic import BaseModel", None, "validation, settings and wire models (a required package)"),
    ("Powertools Logger, Metrics, Tracer", "from aws_lambda_powertools import Logger, Metrics, Tracer", None, "logs, EMF metrics"),
    (
        "Powertools REST resolver",
        "from aws_lambda_powertools.event_handler import APIGatewayRestResolver",
        None,
        "routing; its package imports every resolver, AppSync's asyncio with them",
    ),
    ("httpx", "import httpx", None, "the providers' HTTP client"),
    ("boto3", "import boto3", "boto3", "S3 (the floor's too)"),
    ("X-Ray", "import imagegen.observability", None, "as deployed only: the X-Ray SDK and its patches of botocore and httpx"),
    ("our settings, catalog and price modules", "import imagegen.settings, imagegen.usage.prices", None, "our code"),
    ("the S3 client", "from imagegen.clients import s3_client; s3_client()", REST, "the floor's too (its module makes it)"),
    (
        "the httpx client",
        "from imagegen.clients import http_client; http_client()",
        None,
        "its TLS context loads certifi's CA bundle; the naive handler's openai client does too, the floor speaks plain http",
    ),
)
MINIMAL: tuple[tuple[str, str], ...] = (("boto3", "import boto3"),)


def piece_variants(variants: dict[str, Variant]) -> list[Variant]:
    """The like-for-like and as-deployed cold starts of ours, and the minimal handler's, each cut into pieces."""
    ours = json.dumps([[name, code] for name, code, _, _ in OURS])
    minimal = json.dumps([list(piece) for piece in MINIMAL])
    return [
        replace(variants["ours-fake"], name="pieces-ours", env=variants["ours-fake"].env | {"BENCH_PIECES": ours}),
        replace(variants["ours-deployed"], name="pieces-deployed", env=variants["ours-deployed"].env | {"BENCH_PIECES": ours}),
        replace(variants["minimal"], name="pieces-minimal", env=variants["minimal"].env | {"BENCH_PIECES": minimal}),
    ]


def report_pieces(report: Report, results: dict[str, list[dict[str, Any]]], row: type[Any], ms: Any) -> None:
    """One row per piece (median CPU ms), the minimal handler's matching piece beside it, and the sum above it."""

    def median(name: str, piece: str) -> float:
        return float(statistics.median(result["pieces"].get(piece, 0.0) for result in results[name]))

    def total(name: str) -> float:
        return float(statistics.median(result["cpu_ms"] for result in results[name]))

    report.raw["cold_start_pieces"] = {name: results[name] for name in ("pieces-ours", "pieces-deployed", "pieces-minimal")}
    rows = [(name, floor, why) for name, _, floor, why in OURS if name != "X-Ray"]
    rows += [(REST, None, "our modules, the routes"), (FIRST, FIRST, "the job, and what the first request builds once")]
    for name, floor, why in rows:
        baseline = f"{ms(median('pieces-minimal', floor))} (minimal)" if floor else "–"
        report.rows.append(row(f"cold start piece (CPU): {name}: {why}", ms(median("pieces-ours", name)), baseline, None))
    xray = median("pieces-deployed", "X-Ray") - median("pieces-ours", "X-Ray")
    report.rows.append(row("cold start piece (CPU): X-Ray as deployed (the SDK, patching botocore and httpx)", f"+{ms(xray)}", "–", None))

    def unpieced(name: str) -> float:
        """The median of each run's CPU outside its pieces: the child script's own start (reading the event)."""
        return float(statistics.median(result["cpu_ms"] - sum(result["pieces"].values()) for result in results[name]))

    report.rows.append(
        row(
            "cold start piece (CPU): the script's own start",
            ms(unpieced("pieces-ours")),
            f"{ms(unpieced('pieces-minimal'))} (minimal)",
            None,
        )
    )
    above = total("pieces-ours") - total("pieces-minimal")
    report.rows.append(
        row(
            "cold start (CPU), the pieces' sum above the minimal handler's (like for like)",
            f"+{ms(above)}",
            f"{ms(total('pieces-ours'))} vs {ms(total('pieces-minimal'))}",
            None,
            goal_ms=100,
            extra_ms=above,
        )
    )
