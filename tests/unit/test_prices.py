"""The price data (imagegen/catalog/prices.json) and imagegen.usage.prices: one entry per catalog model with its source
and date; every price cell as the data file says (read here independently); the research's anchors computed by hand
(docs/research/usage-and-prices.md); LiteLLM's image-cost bugs absent; the pre-call estimate an upper bound."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from imagegen.options import ImageEditOptions, ImageGenerationRequest, ImageVariationOptions
from imagegen.pictures import Picture
from imagegen.planning import GenerationPlan, InputPictures, plan, plan_edit, plan_variation
from imagegen.providers.bedrock import amazon_body
from imagegen.registry_document import RegistryDocument
from imagegen.specs import GifRule, ModelSpec, azure_models, catalog, pixels
from imagegen.usage.prices import PerImagePrice, TokenPrice, parse_prices, price_book
from imagegen.usage.records import TokenCounts

PRICES = Path(__file__).parents[2] / "layers/common/imagegen/catalog/prices.json"
MILLION = Decimal(1_000_000)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicated, f"prices.json names {duplicated} twice"
    return dict(pairs)


# The data file as this test reads it, apart from the code under test: exact decimals, duplicate keys refused.
DATA: dict[str, Any] = json.loads(PRICES.read_text(encoding="utf-8"), parse_float=Decimal, object_pairs_hook=_unique)
MODELS: dict[str, dict[str, Any]] = DATA["models"]
TOKEN_MODELS = [model_id for model_id, entry in MODELS.items() if entry["kind"] == "tokens"]
PER_IMAGE_MODELS = [model_id for model_id, entry in MODELS.items() if entry["kind"] == "per_image"]
FLAT_MODELS = [model_id for model_id, entry in MODELS.items() if entry["kind"] == "flat"]
RATES = ("text_in", "image_in", "image_out", "text_out")
# docs/research/usage-and-prices.md: what is not verified on the vendor's own page (2.2, 2.5), what the vendor retired.
UNVERIFIED = {
    "gpt-image-2.6-flare",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-1.5",
    "chatgpt-image-latest",
    "amazon.nova-canvas-v1:0",
    "amazon.titan-image-generator-v2:0",
    "flux-2-pro",
    "gemini-2.5-flash-image",
    "gemini-3.1-flash-image",
    "gemini-3-pro-image",
    "imagen-4.0-generate-001",
    "imagen-4.0-fast-generate-001",
    "imagen-4.0-ultra-generate-001",
    "stable-image-ultra",
    "stable-image-core",
    "sd3.5-large",
    "sd3.5-large-turbo",
    "sd3.5-medium",
    "stability.stable-image-inpaint-v1:0",
    "stability.stable-image-control-structure-v1:0",
    "stability.stable-image-control-sketch-v1:0",
    "stability.stable-image-style-guide-v1:0",
}
PROMPT = "a red fox in fresh snow, at dawn"
PROMPT_BYTES = len(PROMPT.encode("utf-8"))


def tokens_cost(model_id: str, counts: dict[str, int]) -> Decimal:
    """The cost of ``counts`` at the data file's rates, computed here."""
    rates = MODELS[model_id]["usd_per_1m_tokens"]
    return sum((Decimal(count) * rates[kind] for kind, count in counts.items()), Decimal(0)) / MILLION


def request(model_id: str, **fields: Any) -> GenerationPlan:
    return plan(catalog()[model_id], ImageGenerationRequest.model_validate({"prompt": PROMPT, **fields}))


def bounded(planned: GenerationPlan) -> Decimal:
    """The estimate of ``planned``, which must have one."""
    estimate = price_book().estimate(planned)
    assert estimate is not None, planned
    return estimate


def tier_price(model_id: str, size: str, quality: str) -> Decimal | None:
    """The data file's price of one image of ``size`` at ``quality``, the tier chosen here by pixel count."""
    count = pixels(size)
    for tier in MODELS[model_id]["tiers"]:
        if "below" in tier and count < pixels(tier["below"]) or "up_to" in tier and count <= pixels(tier["up_to"]):
            return tier["usd"].get(quality)
        if "below" not in tier and "up_to" not in tier:
            return tier["usd"].get(quality)
    return None


# --- the data ---------------------------------------------------------------------------------------------------------


def test_every_catalog_model_has_exactly_one_price_and_nothing_else_is_priced() -> None:
    assert sorted(MODELS) == sorted(catalog().ids())
    assert sorted(price_book().ids()) == sorted(catalog().ids())


@pytest.mark.parametrize("model_id", catalog().ids())
def test_every_catalog_model_has_a_price_entry(model_id: str) -> None:
    entry = price_book().price(model_id)
    assert entry is not None, f"{model_id} has no entry in prices.json"
    assert entry.kind == MODELS[model_id]["kind"]


@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_price_has_its_source_and_date_and_says_whether_it_is_verified_or_historical(model_id: str) -> None:
    entry = MODELS[model_id]
    assert entry["source"].strip() and entry["date"]
    assert entry.get("verified", True) is (model_id not in UNVERIFIED)
    assert entry.get("historical", False) is (catalog()[model_id].retired_on is not None)
    price = price_book().price(model_id)
    assert price is not None
    assert (price.source, price.date.isoformat(), price.verified) == (entry["source"], entry["date"], model_id not in UNVERIFIED)


def test_local_is_a_deliberate_zero_not_a_default() -> None:
    assert MODELS["local"] == {"kind": "flat", "usd": 0, "source": "no provider call", "date": MODELS["local"]["date"]}
    cost = price_book().cost("local", size="1024x1024", quality=None, images=3, tokens=None)
    assert cost is not None and cost == 0
    assert price_book().estimate(request("local", n=4)) == 0


def test_the_price_book_is_read_once_per_container() -> None:
    assert price_book() is price_book()


def test_prices_are_decimals_never_floats() -> None:
    book = price_book()
    cost = book.cost("amazon.titan-image-generator-v2:0", size="320x704", quality="standard", images=3, tokens=None)
    assert isinstance(cost, Decimal) and cost == Decimal("0.024")  # 0.008 x 3, which float makes 0.024000000000000004
    rated = book.cost("gpt-image-2", size="1024x1024", quality="low", images=1, tokens=TokenCounts(text_in=7, image_in=0, image_out=196))
    assert isinstance(rated, Decimal) and rated == Decimal("0.005915")


# --- every cell against the data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "rate"), [(model_id, rate) for model_id in TOKEN_MODELS for rate in RATES])
def test_each_token_rate_prices_its_own_kind_of_token(model_id: str, rate: str) -> None:
    counts = {"text_in": 0, "image_in": 0, "image_out": 0, "text_out": 0, rate: 1_000_000}
    cost = price_book().cost(model_id, size="1024x1024", quality="high", images=1, tokens=TokenCounts(**counts))
    assert cost == MODELS[model_id]["usd_per_1m_tokens"].get(rate)  # text_out without a price: None, not 0


def _tier_cells() -> list[tuple[str, str, str, Decimal]]:
    """(model, a size at the tier's upper edge, quality, price) for every cell of every per-image model."""
    cells = []
    for model_id in PER_IMAGE_MODELS:
        previous = 0
        for tier in MODELS[model_id]["tiers"]:
            edge = pixels(tier["up_to"]) if "up_to" in tier else pixels(tier["below"]) - 1 if "below" in tier else previous + 1
            previous = edge
            cells += [(model_id, f"1x{edge}", quality, usd) for quality, usd in tier["usd"].items()]
    return cells


@pytest.mark.parametrize(("model_id", "size", "quality", "usd"), _tier_cells())
def test_each_per_image_cell_is_the_data_files(model_id: str, size: str, quality: str, usd: Decimal) -> None:
    assert price_book().cost(model_id, size=size, quality=quality, images=3, tokens=None) == 3 * usd


def _servable_cells() -> list[tuple[str, str, str]]:
    cells = []
    for model_id in PER_IMAGE_MODELS:
        spec = catalog()[model_id]
        cells += [(model_id, size, quality) for size in spec.sizes for quality in sorted(set(spec.qualities.values()))]
    return cells


@pytest.mark.parametrize(("model_id", "size", "quality"), _servable_cells())
def test_every_size_and_quality_a_per_image_model_serves_is_priced(model_id: str, size: str, quality: str) -> None:
    expected = tier_price(model_id, size, quality)
    assert expected is not None, f"{model_id} {size} {quality}: no price in the data"
    assert price_book().cost(model_id, size=size, quality=quality, images=2, tokens=None) == 2 * expected


@pytest.mark.parametrize(("model_id", "size"), [(model_id, size) for model_id in FLAT_MODELS for size in catalog()[model_id].sizes])
def test_a_flat_price_is_the_same_for_every_size(model_id: str, size: str) -> None:
    assert price_book().cost(model_id, size=size, quality=None, images=4, tokens=None) == 4 * MODELS[model_id]["usd"]


# --- the research's anchors -------------------------------------------------------------------------------------------


def test_gpt_image_1_5_medium_square_by_hand() -> None:
    # LiteLLM #18541's response: 1024x1024 medium, output_tokens 1056, 23 text tokens in, no output_tokens_details.
    usage = {
        "input_tokens": 23,
        "input_tokens_details": {"text_tokens": 23, "image_tokens": 0},
        "output_tokens": 1056,
        "total_tokens": 1079,
    }
    cost = price_book().cost("gpt-image-1.5", size="1024x1024", quality="medium", images=1, tokens=TokenCounts.of(usage))
    assert cost == Decimal("0.033792") + Decimal("0.000115")  # 1056 x $32/1M + 23 x $5/1M


def test_image_output_tokens_are_priced_at_the_image_rate_not_the_text_rate() -> None:
    # LiteLLM #31142: without output_tokens_details every output token is an image token ($32/1M, not $10/1M).
    plain = TokenCounts.of({"input_tokens": 0, "output_tokens": 4160})
    assert price_book().cost("gpt-image-1.5", size="1024x1024", quality="high", images=1, tokens=plain) == Decimal("0.13312")
    split = TokenCounts.of({"input_tokens": 0, "output_tokens": 4260, "output_tokens_details": {"image_tokens": 4160, "text_tokens": 100}})
    assert price_book().cost("gpt-image-1.5", size="1024x1024", quality="high", images=1, tokens=split) == Decimal("0.13412")
    # gpt-image-2 lists no text output price: reported text output leaves the cost unknown, not priced at 0.
    assert price_book().cost("gpt-image-2", size="1024x1024", quality="high", images=1, tokens=split) is None


def test_input_tokens_are_priced_at_their_own_rates() -> None:
    # LiteLLM #13847: input text and image tokens were ignored.
    counts = TokenCounts(text_in=40, image_in=388, image_out=1056)
    expected = tokens_cost("gpt-image-1", {"text_in": 40, "image_in": 388, "image_out": 1056})
    assert expected == Decimal("0.04632")  # 40 x 5 + 388 x 10 + 1056 x 40, per 1M
    assert price_book().cost("gpt-image-1", size="1024x1536", quality="medium", images=1, tokens=counts) == expected


def test_an_auto_request_is_priced_from_what_was_produced() -> None:
    book = price_book()
    # LiteLLM #10335 priced auto at $0: a token model's cost comes from its tokens whatever the size and quality.
    counts = TokenCounts(text_in=10, image_in=0, image_out=1568)
    produced = book.cost("gpt-image-1", size="1536x1024", quality="medium", images=1, tokens=counts)
    assert produced == tokens_cost("gpt-image-1", {"text_in": 10, "image_out": 1568}) and produced > 0
    assert book.cost("gpt-image-1", size="auto", quality="auto", images=1, tokens=counts) == produced
    # A per-image model is priced at the size produced; the word "auto" names no tier.
    assert book.cost("dall-e-3", size="1792x1024", quality="hd", images=1, tokens=None) == Decimal("0.12")
    assert book.cost("amazon.nova-canvas-v1:0", size="auto", quality="standard", images=1, tokens=None) is None


def test_a_token_model_without_tokens_is_unpriced_never_from_the_per_image_table() -> None:
    assert price_book().cost("gpt-image-1", size="1024x1024", quality="low", images=1, tokens=None) is None


@pytest.mark.parametrize(
    "model_id", ["gpt-image-2.7", "stability.sd4-v1:0", "azure/gpt-image-2.7", "us.gpt-image-1", "eu.unknown-model-v1:0"]
)
def test_a_model_without_a_price_costs_none_never_zero(model_id: str) -> None:
    book = price_book()
    assert book.price(model_id) is None
    assert book.cost(model_id, size="1024x1024", quality="high", images=1, tokens=TokenCounts(1, 0, 272)) is None


def test_titans_tier_edge_is_by_pixel_count() -> None:
    book = price_book()
    titan = "amazon.titan-image-generator-v2:0"
    # The worked example: 1024x1024 standard = $0.01. 512x512 is "512x512 or larger"; 384x576 has a side over 512
    # but fewer pixels, so it is "smaller than 512x512".
    assert book.cost(titan, size="1024x1024", quality="standard", images=1, tokens=None) == Decimal("0.01")
    assert book.cost(titan, size="512x512", quality="standard", images=1, tokens=None) == Decimal("0.01")
    assert book.cost(titan, size="512x512", quality="premium", images=1, tokens=None) == Decimal("0.012")
    assert book.cost(titan, size="384x576", quality="standard", images=1, tokens=None) == Decimal("0.008")
    assert book.cost(titan, size="511x512", quality="premium", images=1, tokens=None) == Decimal("0.01")


def test_nova_canvas_above_2048x2048_has_no_price() -> None:
    book = price_book()
    nova = "amazon.nova-canvas-v1:0"
    assert book.cost(nova, size="1024x1024", quality="premium", images=1, tokens=None) == Decimal("0.06")
    assert book.cost(nova, size="1024x1040", quality="standard", images=1, tokens=None) == Decimal("0.06")
    assert book.cost(nova, size="2048x2048", quality="standard", images=1, tokens=None) == Decimal("0.06")
    assert book.cost(nova, size="2048x2064", quality="standard", images=1, tokens=None) is None
    assert book.cost(nova, size="2048x2064", quality="premium", images=1, tokens=None) is None


def test_dall_e_prices_are_exact_not_per_pixel() -> None:
    # LiteLLM's per-pixel price gave $0.019923 for dall-e-2 1024x1024.
    assert price_book().cost("dall-e-2", size="1024x1024", quality="standard", images=1, tokens=None) == Decimal("0.02")


@pytest.mark.parametrize(
    ("model_id", "asked", "produced", "usd"),
    [
        ("amazon.nova-canvas-v1:0", "hd", "premium", Decimal("0.06")),
        ("amazon.titan-image-generator-v2:0", "hd", "premium", Decimal("0.012")),
        ("amazon.titan-image-generator-v2:0", "standard", "standard", Decimal("0.01")),
        ("dall-e-3", "hd", "hd", Decimal("0.08")),
    ],
)
def test_the_quality_priced_is_the_plans_after_the_catalogs_mapping(model_id: str, asked: str, produced: str, usd: Decimal) -> None:
    planned = request(model_id, quality=asked, size="1024x1024")
    assert planned.quality == produced
    assert price_book().cost(model_id, size=planned.size, quality=planned.quality, images=1, tokens=None) == usd


@pytest.mark.parametrize(("model_id", "quality"), [("amazon.nova-canvas-v1:0", "hd"), ("dall-e-3", "ultra"), ("dall-e-2", "hd")])
def test_a_quality_the_model_has_no_price_for_is_unpriced(model_id: str, quality: str) -> None:
    assert price_book().cost(model_id, size="1024x1024", quality=quality, images=1, tokens=None) is None


@pytest.mark.parametrize("model_id", ["amazon.nova-canvas-v1:0", "amazon.titan-image-generator-v2:0"])
def test_no_quality_on_bedrock_is_priced_as_what_the_provider_sends(model_id: str) -> None:
    planned = request(model_id, size="1024x1024")
    assert planned.quality is None
    sent = amazon_body(planned, 1, 0)["imageGenerationConfig"]["quality"]
    cost = price_book().cost(model_id, size="1024x1024", quality=None, images=1, tokens=None)
    assert cost == tier_price(model_id, "1024x1024", sent)


def test_a_per_image_model_without_a_default_quality_leaves_no_quality_unpriced() -> None:
    text = PRICES.read_text(encoding="utf-8")
    document = json.loads(text)
    del document["models"]["dall-e-3"]["default_quality"]
    book = parse_prices(json.dumps(document))
    assert book.cost("dall-e-3", size="1024x1024", quality=None, images=1, tokens=None) is None
    assert book.cost("dall-e-3", size="1024x1024", quality="hd", images=1, tokens=None) == Decimal("0.08")


# --- models served under another id ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", catalog().of_ids("openai"))
def test_azure_is_priced_as_openai_and_marked_unverified(model_id: str) -> None:
    book = price_book()
    (served,) = azure_models({model_id: "my-deployment"})
    azure, openai = book.price(served.id), book.price(model_id)
    assert azure is not None and openai is not None
    assert azure.verified is False and azure.note == "Azure OpenAI: assumed equal to OpenAI's list price, unverified"
    assert azure.model_dump(exclude={"verified", "note"}) == openai.model_dump(exclude={"verified", "note"})
    counts = TokenCounts(text_in=20, image_in=0, image_out=1056)
    quality = "hd" if model_id == "dall-e-3" else "standard"
    assert book.cost(served.id, size="1024x1024", quality=quality, images=1, tokens=counts) == book.cost(
        model_id, size="1024x1024", quality=quality, images=1, tokens=counts
    )


def test_an_azure_prefix_on_a_bedrock_model_is_not_priced() -> None:
    assert price_book().price("azure/amazon.nova-canvas-v1:0") is None


def test_a_bedrock_inference_profile_is_priced_as_its_model() -> None:
    book = price_book()
    profile = book.price("us.stability.sd3-5-large-v1:0")
    assert profile is not None and profile.verified is False and "inference profile" in profile.note
    assert book.cost("us.stability.sd3-5-large-v1:0", size="1024x1024", quality=None, images=2, tokens=None) == 2 * Decimal("0.08")
    assert book.cost("eu.amazon.nova-canvas-v1:0", size="1024x1024", quality="premium", images=1, tokens=None) == Decimal("0.06")


def test_a_model_declared_in_the_registry_document_has_no_price() -> None:
    document = RegistryDocument.model_validate(
        {
            "models": [
                {"id": "gpt-image-2.7", "provider": "openai", "family": "gpt-image", "sizes": ["1024x1024"], "max_prompt_chars": 32000}
            ]
        }
    )
    (declared,) = document.specs()
    planned = plan(declared, ImageGenerationRequest(prompt=PROMPT))
    assert price_book().price(declared.id) is None
    assert price_book().estimate(planned) is None
    assert price_book().cost(declared.id, size="1024x1024", quality=None, images=1, tokens=TokenCounts(1, 0, 272)) is None


# --- the gpt-image-2 formula ----------------------------------------------------------------------------------------


# research 2.4, and the community thread's 1792x1024 and 3584x2048 high figures: (size, low, medium, high)
FORMULA_ANCHORS = [
    ("1024x1024", 196, 1756, 7024),
    ("1024x1536", 158, 1372, 5488),
    ("1536x1024", 158, 1372, 5488),
    ("1536x864", 120, 1078, 4312),
    ("2048x2048", 397, 3568, 14272),
    ("3840x2160", 371, 3336, 13342),
    ("1792x1024", None, None, 5063),
    ("3584x2048", None, None, 12329),
]


def _servable(spec: ModelSpec, size: str) -> bool:
    width, height = map(int, size.split("x"))
    return size in spec.sizes or (spec.custom_sizes is not None and spec.custom_sizes.check(width, height) is None)


def _formula_cells() -> list[tuple[str, str, str, int]]:
    """(model, size, quality, tokens) for every model whose estimate is the formula's alone, at every anchor size it
    serves."""
    users = [model_id for model_id in TOKEN_MODELS if MODELS[model_id]["output_tokens"] == ["gpt-image-2"]]
    return [
        (model_id, size, quality, count)
        for model_id in users
        for size, *counts in FORMULA_ANCHORS
        if _servable(catalog()[model_id], size)
        for quality, count in zip(("low", "medium", "high"), counts, strict=True)
        if count is not None
    ]


@pytest.mark.parametrize(("model_id", "size", "quality", "tokens"), _formula_cells())
def test_the_gpt_image_2_formula_gives_the_published_token_counts(model_id: str, size: str, quality: str, tokens: int) -> None:
    rates = MODELS[model_id]["usd_per_1m_tokens"]
    expected = (2 * tokens * rates["image_out"] + PROMPT_BYTES * rates["text_in"]) / MILLION
    assert price_book().estimate(request(model_id, size=size, quality=quality, n=2)) == expected
    reported = TokenCounts(text_in=PROMPT_BYTES, image_in=0, image_out=2 * tokens)
    assert price_book().cost(model_id, size=size, quality=quality, images=2, tokens=reported) == expected


def test_every_formula_model_is_checked_at_a_size() -> None:
    checked = {model_id for model_id, *_ in _formula_cells()}
    assert checked == {model_id for model_id in TOKEN_MODELS if MODELS[model_id]["output_tokens"] == ["gpt-image-2"]}
    assert {"gpt-image-2", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare"} <= checked


def test_the_formulas_factors_are_data() -> None:
    formula = DATA["estimates"]["output_tokens"]["gpt-image-2"]
    assert formula["verified"] is False and set(formula["factors"]) == {"low", "medium", "high"}
    document = json.loads(PRICES.read_text(encoding="utf-8"))
    document["estimates"]["output_tokens"]["gpt-image-2"]["factors"]["high"] = 48
    book = parse_prices(json.dumps(document))
    planned = request("gpt-image-2", size="1024x1024", quality="high")
    assert book.estimate(planned) == price_book().estimate(request("gpt-image-2", size="1024x1024", quality="medium"))


# --- estimates ----------------------------------------------------------------------------------------------------


def _table_cells() -> list[tuple[str, str, str, int]]:
    """(model, size, quality, published tokens) for every model whose estimate reads the gpt-image-1 table, and the
    table's tokens: the counts a response reports."""
    table = DATA["estimates"]["output_tokens"]["gpt-image-1"]["tokens"]
    users = [model_id for model_id in TOKEN_MODELS if "gpt-image-1" in MODELS[model_id]["output_tokens"] or model_id == "gpt-image-1-mini"]
    return [(model_id, size, quality, count) for model_id in users for quality, sizes in table.items() for size, count in sizes.items()]


@pytest.mark.parametrize(("model_id", "size", "quality", "tokens"), _table_cells())
def test_the_estimate_bounds_the_cost_at_the_published_token_counts(model_id: str, size: str, quality: str, tokens: int) -> None:
    book = price_book()
    planned = request(model_id, size=size, quality=quality, n=3)
    reported = TokenCounts(text_in=PROMPT_BYTES, image_in=0, image_out=3 * tokens)  # a prompt has at most a token a byte
    cost = book.cost(model_id, size=size, quality=quality, images=3, tokens=reported)
    estimate = book.estimate(planned)
    assert cost is not None and estimate is not None and estimate >= cost
    assert bounded(request(model_id, size="auto", quality=quality, n=3)) >= estimate
    assert bounded(request(model_id, size=size, quality="auto", n=3)) >= estimate


def _single_table_users() -> list[tuple[str, str]]:
    """(model, table) for every model whose estimate reads one output-token table."""
    tables = DATA["estimates"]["output_tokens"]
    return [
        (model_id, MODELS[model_id]["output_tokens"][0])
        for model_id in TOKEN_MODELS
        if len(MODELS[model_id]["output_tokens"]) == 1 and tables[MODELS[model_id]["output_tokens"][0]]["kind"] == "table"
    ]


@pytest.mark.parametrize(("model_id", "table"), _single_table_users())
def test_each_output_token_cell_is_the_data_files(model_id: str, table: str) -> None:
    cells = DATA["estimates"]["output_tokens"][table]
    rates = MODELS[model_id]["usd_per_1m_tokens"]
    for quality, sizes in cells["tokens"].items():
        for size, count in sizes.items():
            expected = (2 * count * rates["image_out"] + PROMPT_BYTES * rates["text_in"]) / MILLION
            assert price_book().estimate(request(model_id, size=size, quality=quality, n=2)) == expected, (size, quality)


def _gpt_image_1_table_users() -> list[str]:
    return [model_id for model_id in TOKEN_MODELS if MODELS[model_id]["output_tokens"] == ["gpt-image-1"]]


@pytest.mark.parametrize("model_id", _gpt_image_1_table_users())
def test_auto_size_takes_the_largest_size_and_auto_quality_the_highest(model_id: str) -> None:
    rates = MODELS[model_id]["usd_per_1m_tokens"]
    text = PROMPT_BYTES * rates["text_in"]
    auto_size = price_book().estimate(request(model_id, size="auto", quality="low"))
    assert auto_size == (408 * rates["image_out"] + text) / MILLION  # 1024x1536 low: the most tokens at low
    auto_quality = price_book().estimate(request(model_id, size="1024x1024", quality="auto"))
    assert auto_quality == (4160 * rates["image_out"] + text) / MILLION
    unset = price_book().estimate(request(model_id, size="1024x1024"))
    assert unset == auto_quality
    assert price_book().estimate(request(model_id, size="auto")) == (6240 * rates["image_out"] + text) / MILLION


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536", "1536x864", "1248x1248", "1280x1200"])
def test_a_gpt_image_2_auto_size_bounds_every_size_auto_may_give(size: str) -> None:
    assert bounded(request("gpt-image-2", size="auto", quality="high")) >= bounded(request("gpt-image-2", size=size, quality="high"))


@pytest.mark.parametrize("model_id", ["gpt-image-2.5-sunburst", "gpt-image-2.5-flare-2026-09-08"])
@pytest.mark.parametrize("quality", ["xhigh", "max", "auto", None])
def test_no_estimate_for_qualities_without_token_counts(model_id: str, quality: str | None) -> None:
    # gpt-image-2.5's highest quality is max, which the formula has no factor for: "auto" may draw at it.
    assert price_book().estimate(request(model_id, size="1024x1024", quality=quality)) is None
    assert price_book().estimate(request(model_id, size="1024x1024", quality="high")) is not None


def test_chatgpt_image_latest_takes_the_larger_of_its_two_token_sources() -> None:
    rates = MODELS["chatgpt-image-latest"]["usd_per_1m_tokens"]
    text = PROMPT_BYTES * rates["text_in"]
    square = price_book().estimate(request("chatgpt-image-latest", size="1024x1024", quality="high"))
    assert square == (7024 * rates["image_out"] + text) / MILLION  # the formula's 7024 over the table's 4160
    wide = price_book().estimate(request("chatgpt-image-latest", size="1536x1024", quality="high"))
    assert wide == (6208 * rates["image_out"] + text) / MILLION  # the table's 6208 over the formula's 5488


def test_partial_images_add_their_tokens_to_the_estimate() -> None:
    rates = MODELS["gpt-image-1.5"]["usd_per_1m_tokens"]
    per_partial = DATA["estimates"]["tokens_per_partial_image"]
    streamed = price_book().estimate(request("gpt-image-1.5", size="1024x1024", quality="low", n=2, stream=True, partial_images=3))
    assert streamed == (2 * (272 + 3 * per_partial) * rates["image_out"] + PROMPT_BYTES * rates["text_in"]) / MILLION


def test_the_prompt_is_bounded_by_its_utf8_bytes() -> None:
    prompt = "狐狸在雪中"  # 5 characters, 15 bytes
    planned = plan(catalog()["gpt-image-1"], ImageGenerationRequest(prompt=prompt, size="1024x1024", quality="low"))
    rates = MODELS["gpt-image-1"]["usd_per_1m_tokens"]
    assert price_book().estimate(planned) == (272 * rates["image_out"] + 15 * rates["text_in"]) / MILLION


def picture(width: int = 1024, height: int = 1024, *, alpha: bool = False) -> Picture:
    return Picture(data=b"\x89PNG....", format="png", width=width, height=height, has_alpha=alpha)


def test_an_edit_adds_a_bound_per_input_image_and_mask() -> None:
    spec = catalog()["gpt-image-1.5"]
    inputs = InputPictures(images=(picture(), picture(1536, 1024)), mask=picture(alpha=True))
    planned = plan_edit(spec, ImageEditOptions(prompt=PROMPT, size="1024x1024", quality="medium"), inputs)
    bound = DATA["estimates"]["input_images"][MODELS["gpt-image-1.5"]["input_images"]]
    assert bound["verified"] is False and bound["source"]
    rates = MODELS["gpt-image-1.5"]["usd_per_1m_tokens"]
    expected = (
        1056 * rates["image_out"] + (PROMPT_BYTES + 3 * bound["text_in"]) * rates["text_in"] + 3 * bound["image_in"] * rates["image_in"]
    )
    assert price_book().estimate(planned) == expected / MILLION
    # A reported edit within the bound costs less than the estimate (community measurement: 194 image tokens a tile).
    reported = TokenCounts(text_in=PROMPT_BYTES + 3 * 32, image_in=3 * 581, image_out=1056)
    cost = price_book().cost(spec.id, size="1024x1024", quality="medium", images=1, tokens=reported)
    assert cost is not None and cost < bounded(planned)


def test_per_image_estimates_are_the_exact_price_times_n() -> None:
    book = price_book()
    assert book.estimate(request("amazon.nova-canvas-v1:0", size="1792x1024", quality="hd", n=3)) == 3 * Decimal("0.08")
    assert book.estimate(request("amazon.titan-image-generator-v2:0", size="384x576", n=5)) == 5 * Decimal("0.008")
    assert book.estimate(request("stability.stable-image-ultra-v1:1", n=2)) == 2 * Decimal("0.14")
    assert book.estimate(request("dall-e-2", size="512x512")) == Decimal("0.018")
    variation = plan_variation(catalog()["amazon.titan-image-generator-v2:0"], ImageVariationOptions(n=2), picture(512, 512))
    assert book.estimate(variation) == 2 * Decimal("0.01")  # Titan: per output image, whatever the feature


def test_per_image_estimates_are_the_cost_of_the_plan() -> None:
    book = price_book()
    for model_id in PER_IMAGE_MODELS + FLAT_MODELS:
        spec = catalog()[model_id]
        if not spec.generations:  # an edit-only model: priced per edited image
            edited = plan_edit(spec, ImageEditOptions(prompt=PROMPT, n=1), InputPictures(images=(picture(),)))
            cost = book.cost(model_id, size=edited.size, quality=edited.quality, images=edited.n, tokens=None)
            assert cost is not None and book.estimate(edited) == cost, model_id
            continue
        for size in spec.sizes:
            planned = request(model_id, size=size, n=min(2, spec.max_n))
            cost = book.cost(model_id, size=planned.size, quality=planned.quality, images=planned.n, tokens=None)
            assert book.estimate(planned) == cost, (model_id, size)


ANIMATED: ModelSpec = catalog()["gpt-image-2"].model_copy(
    update={"output_formats": ("png", "jpeg", "webp", "gif", "svg"), "gif": GifRule()}
)


@pytest.mark.parametrize("output_format", ["gif", "svg"])
def test_no_estimate_for_gif_or_svg_output(output_format: str) -> None:
    planned = plan(ANIMATED, ImageGenerationRequest.model_validate({"prompt": PROMPT, "size": "1024x1024", "output_format": output_format}))
    assert price_book().estimate(planned) is None
    assert price_book().estimate(plan(ANIMATED, ImageGenerationRequest(prompt=PROMPT, size="1024x1024", quality="low"))) is not None


# --- the data file is checked when read -----------------------------------------------------------------------------


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(PRICES.read_text(encoding="utf-8"))
    return document


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (lambda d: d["models"]["dall-e-2"]["tiers"].reverse(), "tiers must go from the fewest pixels to the most"),
        (lambda d: d["models"]["amazon.titan-image-generator-v2:0"]["tiers"].reverse(), "only the last tier may have no limit"),
        (lambda d: d["models"]["dall-e-3"].update(default_quality="premium"), "not priced in every tier"),
        (lambda d: d["models"]["gpt-image-1"].update(output_tokens=["gpt-image-9"]), "no estimates named ['gpt-image-9']"),
        (lambda d: d["models"]["gpt-image-1"].update(input_images="nope"), "no estimates named ['nope']"),
        (lambda d: d["models"]["local"].pop("source"), "source"),
        (lambda d: d["models"]["local"].update(usd=-1), "greater than or equal to 0"),
        (lambda d: d["models"]["gpt-image-1"]["usd_per_1m_tokens"].pop("image_out"), "image_out"),
        (lambda d: d["estimates"]["output_tokens"]["gpt-image-2"]["factors"].update(ultra=200), "not in qualities_low_to_high"),
        (lambda d: d["models"]["dall-e-2"]["tiers"][0].update(below="256x256"), "'below' or 'up_to', not both"),
    ],
)
def test_a_bad_price_file_fails_naming_the_problem(change: Any, text: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(ValueError, match="prices.json") as caught:
        parse_prices(json.dumps(document))
    assert text in str(caught.value)


def test_price_entries_are_typed_by_kind() -> None:
    book = price_book()
    assert isinstance(book.price("gpt-image-1"), TokenPrice)
    assert isinstance(book.price("dall-e-3"), PerImagePrice)
