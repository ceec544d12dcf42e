"""The price data (``imagegen/catalog/prices.json``, read and validated once per container) and what a generation
costs from it, in ``Decimal`` USD, never rounded here.

- ``cost``: what a generation cost, after the call. A token-priced model is priced from the tokens it reported (all
  output tokens as image output unless the provider split them), never from a per-image table; a per-image model from
  the images it returned and the size it produced them at. No price, no tokens, or a size no published tier covers:
  None, never 0.
- ``estimate``: an upper bound of the cost before the call (the budget reservation), None when no bound is known.
- ``price``: a model's price entry, with its source and date.

Azure models (``azure/<OpenAI id>``) and Bedrock inference profiles (``us.<model id>``) are priced as the model they
serve, marked unverified; any other model the data does not list (a model declared in the registry document) has no
price.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from imagegen.models import Model
from imagegen.specs import AZURE_PREFIX, SIZE, bedrock_base_id, catalog, pixels
from imagegen.usage.records import TokenCounts

if TYPE_CHECKING:
    from imagegen.planning import GenerationPlan

PRICES_FILE = "prices.json"
Money = Annotated[Decimal, Field(ge=0)]
TOKENS_PER_RATE = 6  # token rates are per 1M tokens: 10**6


class _Data(Model):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sourced(_Data):
    """Where a value comes from: the source, the date it gives (or the day it was seen), whether the vendor's own
    page says so, whether the vendor has retired the model, and a note when the entry stands in for another model."""

    source: str = Field(min_length=1)
    date: dt.date
    verified: bool = True
    historical: bool = False
    note: str = ""


class TokenRates(_Data):
    """USD per 1M tokens. The cached-input rates are kept for completeness: the Images API reports no cached tokens."""

    text_in: Money
    text_in_cached: Money | None = None
    image_in: Money
    image_in_cached: Money | None = None
    image_out: Money
    text_out: Money | None = None  # None: the vendor lists no text output price


class TokenPrice(Sourced):
    """A model billed by the tokens it reports (the GPT image models)."""

    kind: Literal["tokens"]
    usd_per_1m_tokens: TokenRates
    # For the pre-call estimate only: the output-token sources (``estimates.output_tokens``), the largest one counts;
    # and the bound per input image (``estimates.input_images``).
    output_tokens: tuple[str, ...] = ()
    input_images: str | None = None

    def of(self, tokens: TokenCounts) -> Decimal | None:
        """The cost of ``tokens``; None when they include text output and the model has no text output price."""
        rates = self.usd_per_1m_tokens
        total = tokens.text_in * rates.text_in + tokens.image_in * rates.image_in + tokens.image_out * rates.image_out
        if tokens.text_out:
            if rates.text_out is None:
                return None
            total += tokens.text_out * rates.text_out
        return total.scaleb(-TOKENS_PER_RATE)


class Tier(_Data):
    """The per-image prices (quality -> USD) of the sizes with fewer pixels than ``below``'s, or at most ``up_to``'s;
    neither: every size (the last tier)."""

    below: str | None = Field(default=None, pattern=SIZE.pattern)
    up_to: str | None = Field(default=None, pattern=SIZE.pattern)
    usd: Mapping[str, Money] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_bound(self) -> Tier:
        if self.below is not None and self.up_to is not None:
            raise ValueError("a tier has 'below' or 'up_to', not both")
        return self

    @property
    def max_pixels(self) -> int | None:
        """The most pixels a size of this tier has (None: no limit)."""
        if self.below is not None:
            return pixels(self.below) - 1
        return None if self.up_to is None else pixels(self.up_to)


class PerImagePrice(Sourced):
    """A model billed per image returned, by size tier (pixel count) and quality: DALL-E, Titan, Nova Canvas."""

    kind: Literal["per_image"]
    tiers: tuple[Tier, ...] = Field(min_length=1)
    # The quality priced when none (or "auto") was asked: what the vendor draws by default.
    default_quality: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PerImagePrice:
        limits = [tier.max_pixels for tier in self.tiers]
        if None in limits[:-1]:
            raise ValueError("only the last tier may have no limit")
        bounded = [limit for limit in limits if limit is not None]
        if bounded != sorted(set(bounded)):
            raise ValueError("tiers must go from the fewest pixels to the most")
        if self.default_quality is not None and any(self.default_quality not in tier.usd for tier in self.tiers):
            raise ValueError(f"default_quality {self.default_quality!r} is not priced in every tier")
        return self

    def per_image(self, count: int, quality: str | None) -> Decimal | None:
        """The price of one image of ``count`` pixels; None when no tier covers it or it has no such quality."""
        if quality in (None, "auto"):
            quality = self.default_quality
        if quality is None:
            return None
        for tier in self.tiers:
            if tier.max_pixels is None or count <= tier.max_pixels:
                return tier.usd.get(quality)
        return None


class FlatPrice(Sourced):
    """One price per image whatever its size and quality (Stability on Bedrock; ``local``'s explicit 0)."""

    kind: Literal["flat"]
    usd: Money


ModelPrice = Annotated[TokenPrice | PerImagePrice | FlatPrice, Field(discriminator="kind")]


class TokenTable(Sourced):
    """Output image tokens per image by quality and size (a published table)."""

    kind: Literal["table"]
    tokens: Mapping[str, Mapping[str, int]]

    def bound(self, plan: GenerationPlan, quality: str) -> int | None:
        """The most output tokens of one image of ``plan`` at ``quality``: its size's, or for "auto" the largest of
        the sizes the model lists; None when the table lacks one of them."""
        cells = self.tokens.get(quality, {})
        sizes = [size for size in plan.model.sizes if size != "auto"] if plan.size == "auto" else [plan.size]
        counts = [cells.get(size) for size in sizes]
        known = [count for count in counts if count is not None]
        return max(known) if known and len(known) == len(counts) else None


class TokenFormula(Sourced):
    """Output image tokens of a free size: ``ceil(f * s * (pixel_offset + w*h) / divisor)`` with ``f`` the quality's
    factor and ``s = (2*f*S + L) // (2*L)`` (``L``, ``S`` the longer and shorter side)."""

    kind: Literal["formula"]
    factors: Mapping[str, int] = Field(min_length=1)
    pixel_offset: int = Field(ge=0)
    divisor: int = Field(ge=1)

    def tokens(self, width: int, height: int, quality: str) -> int | None:
        factor = self.factors.get(quality)
        if factor is None:
            return None
        long_side, short_side = max(width, height), min(width, height)
        steps = (2 * factor * short_side + long_side) // (2 * long_side)
        return _ceil_div(factor * steps * (self.pixel_offset + width * height), self.divisor)

    def bound(self, plan: GenerationPlan, quality: str) -> int | None:
        """The tokens of ``plan``'s size; for "auto", of any size with at most the pixels "auto" may give."""
        if plan.size != "auto":
            return self.tokens(plan.width, plan.height, quality)
        factor = self.factors.get(quality)
        if factor is None:
            return None
        # s <= f for every shape ((2fS + L) // 2L <= f + 1/2 as S <= L), so f * f with the most pixels bounds them all.
        return _ceil_div(factor * factor * (self.pixel_offset + plan.max_pixels), self.divisor)


OutputTokens = Annotated[TokenTable | TokenFormula, Field(discriminator="kind")]


class InputImageBound(Sourced):
    """The most tokens one input image (or mask, or markup) of an edit or variation is billed: image input tokens,
    and the text tokens the endpoint adds per image."""

    image_in: int = Field(ge=0)
    text_in: int = Field(ge=0)


class Estimates(_Data):
    """What the pre-call estimate of a token-priced model needs beyond its rates."""

    qualities_low_to_high: tuple[str, ...] = Field(min_length=1)
    tokens_per_partial_image: int = Field(ge=0)
    tokens_per_partial_image_source: str = Field(min_length=1)
    output_tokens: Mapping[str, OutputTokens]
    input_images: Mapping[str, InputImageBound]


class Alias(_Data):
    """How models served under another id are priced: as the model they serve, with this note."""

    note: str = Field(min_length=1)
    source: str = Field(min_length=1)


class Aliases(_Data):
    azure: Alias
    bedrock_inference_profile: Alias


class PriceFile(_Data):
    """``imagegen/catalog/prices.json``."""

    currency: Literal["usd"]
    about: str = Field(min_length=1)
    aliases: Aliases
    estimates: Estimates
    models: Mapping[str, ModelPrice] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> PriceFile:
        order = self.estimates.qualities_low_to_high
        for name, source in self.estimates.output_tokens.items():
            qualities = source.tokens if isinstance(source, TokenTable) else source.factors
            unknown = [quality for quality in qualities if quality not in order]
            if unknown:
                raise ValueError(f"estimates.output_tokens.{name}: qualities {unknown} are not in qualities_low_to_high")
        for model_id, entry in self.models.items():
            if not isinstance(entry, TokenPrice):
                continue
            missing = [name for name in entry.output_tokens if name not in self.estimates.output_tokens]
            if entry.input_images is not None and entry.input_images not in self.estimates.input_images:
                missing.append(entry.input_images)
            if missing:
                raise ValueError(f"models.{model_id}: no estimates named {missing}")
        return self


class PriceBook:
    """The prices of every model the data lists, and the cost and the pre-call estimate of a generation."""

    def __init__(self, document: PriceFile) -> None:
        self.document = document

    def ids(self) -> list[str]:
        """The model ids the data lists (served aliases aside)."""
        return list(self.document.models)

    def price(self, model: str) -> TokenPrice | PerImagePrice | FlatPrice | None:
        """The price entry of ``model`` (with its source and date); an Azure model or a Bedrock inference profile
        gets the entry of the model it serves, marked unverified with a note; None when there is none."""
        models = self.document.models
        entry = models.get(model)
        if entry is not None:
            return entry
        if model.startswith(AZURE_PREFIX):
            served, alias, provider = model.removeprefix(AZURE_PREFIX), self.document.aliases.azure, "openai"
        else:
            served, alias, provider = bedrock_base_id(model), self.document.aliases.bedrock_inference_profile, "bedrock"
        spec = catalog().get(served)
        base = models.get(served)
        if served == model or base is None or spec is None or spec.provider != provider:
            return None
        return base.model_copy(update={"verified": False, "note": alias.note})

    def cost(self, model: str, *, size: str, quality: str | None, images: int, tokens: TokenCounts | None) -> Decimal | None:
        """What a generation cost: ``size`` and ``quality`` as produced (the real dimensions of an "auto" request),
        ``quality`` as the plan carries it (after the catalog's mapping), ``images`` returned, ``tokens`` as reported.
        None when the model has no price, a token-priced model reported no tokens, or no tier covers the size."""
        entry = self.price(model)
        if entry is None:
            return None
        if isinstance(entry, TokenPrice):
            return None if tokens is None else entry.of(tokens)
        if isinstance(entry, FlatPrice):
            return entry.usd * images
        if SIZE.match(size) is None:
            return None
        unit = entry.per_image(pixels(size), quality)
        return None if unit is None else unit * images

    def estimate(self, plan: GenerationPlan) -> Decimal | None:
        """An upper bound of what ``plan`` will cost, for the budget reservation; None when no bound is known."""
        entry = self.price(plan.model.id)
        if entry is None:
            return None
        if isinstance(entry, FlatPrice):
            return entry.usd * plan.n
        if isinstance(entry, PerImagePrice):
            unit = entry.per_image(plan.max_pixels, plan.quality)
            return None if unit is None else unit * plan.n
        return self._token_estimate(entry, plan)

    def _token_estimate(self, entry: TokenPrice, plan: GenerationPlan) -> Decimal | None:
        estimates = self.document.estimates
        # The output-token data counts one raster image: GIF frames and SVG output (billed apart) have none.
        if plan.frames != 1 or plan.output_format == "svg":
            return None
        quality = self._highest_quality(plan) if plan.quality in (None, "auto") else plan.quality
        if quality is None or not entry.output_tokens:
            return None
        bounds = [estimates.output_tokens[name].bound(plan, quality) for name in entry.output_tokens]
        known = [bound for bound in bounds if bound is not None]
        if len(known) != len(bounds):
            return None
        per_image = max(known) + plan.partial_images * estimates.tokens_per_partial_image
        text_in = len(plan.prompt.encode("utf-8"))  # a token is at least one byte of the prompt
        image_in = 0
        inputs = _input_images(plan)
        if inputs:
            if entry.input_images is None:
                return None
            bound = estimates.input_images[entry.input_images]
            text_in += inputs * bound.text_in
            image_in = inputs * bound.image_in
        rates = entry.usd_per_1m_tokens
        total = per_image * plan.n * rates.image_out + text_in * rates.text_in + image_in * rates.image_in
        return total.scaleb(-TOKENS_PER_RATE)

    def _highest_quality(self, plan: GenerationPlan) -> str | None:
        """What "auto" (or no quality) may draw at: the model's highest quality."""
        order = self.document.estimates.qualities_low_to_high
        ranks = [order.index(value) for value in plan.model.qualities.values() if value in order]
        return order[max(ranks)] if ranks else None


def _input_images(plan: GenerationPlan) -> int:
    """The images an edit or a variation sends: its inputs, and a mask or markup."""
    inputs = plan.inputs
    if inputs is None:
        return 0
    return len(inputs.images) + (inputs.mask is not None) + (inputs.markup is not None)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def parse_prices(text: str) -> PriceBook:
    """The price book from the text of ``prices.json`` (numbers read as ``Decimal``, never float)."""
    try:
        document = PriceFile.model_validate(json.loads(text, parse_float=Decimal))
    except ValueError as exc:
        raise ValueError(f"imagegen/catalog/{PRICES_FILE}: {exc}") from exc
    return PriceBook(document)


@cache
def price_book() -> PriceBook:
    """The prices of this container: the data file shipped in the layer, read and validated once."""
    return parse_prices((resources.files("imagegen") / "catalog" / PRICES_FILE).read_text(encoding="utf-8"))
