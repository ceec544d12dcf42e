"""imagegen.usage.meter's size as produced (issue #15: an ``auto`` size is priced at what was actually produced):
``auto`` is read from the first image's own header, PNG, JPEG and WebP alike; a size that was asked for stays as
asked; bytes no header reader knows leave it ``auto``. And the record a settlement makes carries that size."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from PIL import Image as PILImage

from imagegen.observability import metrics
from imagegen.options import ImageGenerationRequest
from imagegen.planning import GenerationPlan, plan
from imagegen.specs import catalog
from imagegen.usage.meter import Charge, Meter, produced_size
from imagegen.usage.prices import price_book

MODEL = "gpt-image-1-mini"  # takes size "auto", as OpenAI's GPT image models do


def planned(size: str) -> GenerationPlan:
    return plan(catalog()[MODEL], ImageGenerationRequest(prompt="a red fox", model=MODEL, size=size))


def encoded(width: int, height: int, image_format: str) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 30, 30)).save(out, format=image_format)
    return out.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(("width", "height"), [(1536, 1024), (1024, 1536)])  # not square: a swapped pair shows
def test_an_auto_size_is_the_produced_images_dimensions(image_format: str, width: int, height: int) -> None:
    assert produced_size(planned("auto"), [encoded(width, height, image_format)]) == f"{width}x{height}"


def test_the_first_image_gives_the_size() -> None:
    images = [encoded(1024, 1536, "PNG"), encoded(1536, 1024, "PNG")]
    assert produced_size(planned("auto"), images) == "1024x1536"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_a_size_asked_for_stays_as_asked_whatever_came_out(image_format: str) -> None:
    assert produced_size(planned("1024x1024"), [encoded(1536, 1024, image_format)]) == "1024x1024"


@pytest.mark.parametrize(
    "images",
    [[], [b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'], [b"\x89PNG\r\n\x1a\n truncated"]],
    ids=["no-images", "svg", "cut-short-png"],
)
def test_an_auto_size_nothing_can_be_read_from_stays_auto(images: list[bytes]) -> None:
    assert produced_size(planned("auto"), images) == "auto"


def test_a_settled_auto_generation_is_recorded_at_the_produced_size() -> None:
    charge = Charge(plan=planned("auto"), caller="key-0123456789abcdef", record_id="req-1", reservation=None)
    record = Meter(prices=price_book()).settle(charge, images=[encoded(1024, 1536, "JPEG")] * 2, usage=None, at=1_700_000_000)
    assert (record.size, record.images, record.source) == ("1024x1536", 2, "image.generation")


def test_images_paid_for_but_not_stored_count_their_cost_and_are_not_recorded(monkeypatch, capsys) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    model = "amazon.nova-canvas-v1:0"  # priced per image
    charged = plan(catalog()[model], ImageGenerationRequest(prompt="a red fox", model=model, size="1024x1024", n=2))
    charge = Charge(plan=charged, caller="key-0123456789abcdef", record_id="req-lost", reservation=None)
    meter = Meter(prices=price_book())
    cost = price_book().cost(model, size="1024x1024", quality=charged.quality, images=2, tokens=None)
    assert cost is not None and cost > Decimal(0)

    metrics.clear_metrics()  # what earlier tests added to the shared Metrics (disabled, so never flushed)
    meter.lost(charge, images=[encoded(1024, 1024, "PNG")] * 2, usage=None)
    metrics.flush_metrics()

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert [(record["model"], record["UndeliveredImages"]) for record in emitted if "UndeliveredImages" in record] == [(model, [2.0])]
    assert [record["CostUSD"] for record in emitted if "CostUSD" in record] == [[float(cost)]]
