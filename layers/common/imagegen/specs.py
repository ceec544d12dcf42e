"""The types of a model spec, and the catalog: every model this code knows, read from the data files in
``imagegen/catalog/`` (one per provider) and validated once per container.

Adding a model is a change to a data file. A file holds ``profiles`` (shared fields, by name) and ``models``; each
model names at most one profile and overrides any of its fields.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from imagegen.models import Model
from imagegen.options import OutputFormat, ResponseFormat

ProviderName = Literal["local", "openai", "bedrock", "azure", "google", "bfl", "stability"]
# What the provider's wire protocol expects: DALL-E takes response_format/style, GPT image models output_format etc.;
# on Bedrock, Amazon's image models (Nova Canvas, Titan v2) share one body and Stability's models another. Google's
# Gemini image models answer generateContent, its Imagen models :predict; FLUX is Black Forest Labs' submit-and-poll
# API; "stability-platform" is Stability AI's own v2beta API (multipart), not Bedrock's.
ModelFamily = Literal["local", "dall-e", "gpt-image", "amazon-image", "stability", "gemini", "imagen", "flux", "stability-platform"]
SIZE = re.compile(r"^(\d+)x(\d+)$")
CATALOG_FILES = ("local.json", "openai.json", "bedrock.json", "google.json", "bfl.json", "stability.json")

# The most bytes an image can take per pixel in each format, for worst-case content (uniform random noise) at the
# heaviest settings (PNG: 8-bit, deflate falling back to stored blocks; JPEG: quality 100, no chroma subsampling,
# standard Huffman tables; WebP: lossless, or lossy at quality 100), measured with Pillow by
# tests/unit/test_worst_case_bounds.py. Opaque images are RGB; a model that can draw a transparent background answers
# RGBA. GIF: LZW at its widest codes (12 bits) per pixel of each frame. SVG: an author may embed the reference raster
# as a base64 PNG (4.05 x 4/3). (Adversarial content can do worse; an image above its bound is still delivered.)
OPAQUE_BYTES_PER_PIXEL: Mapping[OutputFormat, float] = {"png": 3.05, "jpeg": 4.2, "webp": 3.2, "gif": 1.5, "svg": 5.4}
TRANSPARENT_BYTES_PER_PIXEL: Mapping[OutputFormat, float] = {"png": 4.05, "jpeg": 4.2, "webp": 4.05, "gif": 1.5, "svg": 5.4}
# Per image, on top: headers, ancillary chunks and metadata a provider adds (colour profiles, EXIF, C2PA manifests).
IMAGE_OVERHEAD_BYTES = 64 * 1024


def pixels(size: str) -> int:
    match = SIZE.match(size)
    if match is None:
        raise ValueError(f"{size!r} is not WIDTHxHEIGHT")
    return int(match[1]) * int(match[2])


class CustomSizeRule(Model):
    """Free-form WIDTHxHEIGHT sizes (gpt-image-2, Nova Canvas): sides multiples of ``multiple_of``, bounded edges,
    aspect and area. The defaults are gpt-image-2's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    multiple_of: int = 16
    min_edge: int = 0
    max_edge: int = 3840
    max_aspect: float = 3.0
    min_pixels: int = 655_360
    max_pixels: int = 8_294_400

    def check(self, width: int, height: int) -> str | None:
        """None when the size is allowed, else why not."""
        long_side, short_side = max(width, height), min(width, height)
        if width % self.multiple_of or height % self.multiple_of:
            return f"both sides must be multiples of {self.multiple_of}"
        if short_side < self.min_edge:
            return f"the shorter side must be at least {self.min_edge}"
        if long_side > self.max_edge:
            return f"the longer side must be at most {self.max_edge}"
        if long_side > self.max_aspect * short_side:
            return f"the aspect ratio must be between 1:{self.max_aspect:g} and {self.max_aspect:g}:1"
        if not self.min_pixels <= width * height <= self.max_pixels:
            return f"the size must have between {self.min_pixels} and {self.max_pixels} pixels"
        return None

    def describe(self) -> str:
        edges = f"each side {self.min_edge} to {self.max_edge}" if self.min_edge else f"the longer at most {self.max_edge}"
        count = f"{self.min_pixels} to {self.max_pixels}" if self.min_pixels else f"at most {self.max_pixels}"
        return (
            f"WIDTHxHEIGHT with both sides multiples of {self.multiple_of}, {edges}, aspect "
            f"between 1:{self.max_aspect:g} and {self.max_aspect:g}:1, {count} pixels"
        )


class GifRule(Model):
    """Animated GIF output (``output_format: gif``, a preview feature): frames and their delay (openai-python
    ``image_generate_params.py``: 2-16 frames, default 9; 200 ms default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_frames: int = 2
    max_frames: int = 16
    default_frames: int = 9


InputFormat = Literal["png", "jpeg", "webp", "gif"]


class InputRule(Model):
    """What a model takes as input images, for edits or variations. The defaults are the GPT image models' edits
    (openai-python ``image_edit_params.py``: up to 16 png, webp or jpg images under 50 MB; a PNG mask under 4 MB with
    the first image's size)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_images: int = Field(default=16, ge=1, le=16)
    formats: tuple[InputFormat, ...] = ("png", "jpeg", "webp")
    max_image_bytes: int = Field(default=50 * 2**20, ge=1)
    # Each input image's sides and pixels (the vendor's input limits, where it has them).
    min_edge: int = 1
    max_edge: int = 16384
    max_pixels: int | None = None
    square: bool = False
    # A mask (a PNG with an alpha channel; fully transparent pixels mark what to edit), at most this many bytes.
    mask: bool = False
    mask_max_bytes: int = 4 * 2**20
    # With a mask, at most this many images (the mask applies to the first).
    max_images_with_mask: int | None = None
    # A markup overlay (a transparent PNG on the first image; never with a mask).
    markup: bool = False
    input_fidelities: tuple[str, ...] = ()
    # The output has the first input's size: size must be omitted, 'auto' or exactly that size.
    output_follows_input: bool = False
    # Worst-case bytes per pixel of this operation's output where it differs from the model's generations (an offline
    # transform of a photo is as heavy as the photo).
    bytes_per_pixel: Mapping[OutputFormat, float] | None = None


class ModelSpec(Model):
    """One servable model and everything validation needs to know about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    provider: ProviderName
    family: ModelFamily
    provider_model: str
    # What GET /v1/models and README call it.
    title: str = ""
    sizes: tuple[str, ...]
    custom_sizes: CustomSizeRule | None = None
    default_size: str = "1024x1024"
    # Size "auto" leaves the choice to the provider; providers that need pixels draw this one.
    auto_size: str = "1024x1024"
    # The largest size "auto" may give (None: auto_size), for the worst case of an answer.
    auto_max_size: str | None = None
    # A provider that draws at its own resolution whatever the size asked: at most this many pixels per image.
    max_output_pixels: int | None = None
    max_n: int = Field(default=10, ge=1, le=10)
    max_prompt_chars: int
    # Accepted request quality -> the value sent to the provider.
    qualities: Mapping[str, str] = Field(default_factory=dict)
    styles: tuple[str, ...] = ()
    complexities: tuple[str, ...] = ()
    response_formats: tuple[ResponseFormat, ...] = ("url", "b64_json")
    default_response_format: ResponseFormat = "url"
    # Values the output_format parameter may take (empty: the parameter is not supported) and the default format.
    output_formats: tuple[OutputFormat, ...] = ()
    native_format: OutputFormat = "png"
    supports_compression: bool = False
    backgrounds: tuple[str, ...] = ()
    moderations: tuple[str, ...] = ()
    gif: GifRule | None = None
    # Values that are previews at the vendor (its project must have access): request field -> values.
    previews: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    # Takes the end-user id as ``safety_identifier`` (else as the legacy ``user``).
    safety_identifier: bool = False
    # Worst-case bytes per pixel per output format, plus a fixed overhead per image: what a base64 answer is planned
    # with before the provider is called (RGB bounds unless the model can draw a transparent background).
    bytes_per_pixel: Mapping[OutputFormat, float] = Field(default_factory=lambda: dict(OPAQUE_BYTES_PER_PIXEL))
    image_overhead_bytes: int = IMAGE_OVERHEAD_BYTES
    # Input images: how the model edits (POST /v1/images/edits) and makes variations (/v1/images/variations); None:
    # it does not.
    edits: InputRule | None = None
    variations: InputRule | None = None
    # False: the model only edits (or makes variations); a generation naming it is refused at planning, a 400.
    generations: bool = True
    # How long the provider usually takes for one request (seconds), where that is longer than a synchronous request
    # may be able to wait: such a request is refused before any call unless its deadline leaves this much
    # (imagegen.routing.fitting), and served through async jobs instead.
    typical_seconds: float | None = Field(default=None, gt=0)
    # Lifecycle (Amazon Bedrock's states, docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html: Active,
    # Legacy, EOL). legacy_on: the day the vendor lists the model as Legacy (or, with only a third party's word, the
    # first day it was seen so): still served, but new accounts may be refused. extended_access_on: from this day the
    # Legacy model is in "public extended access" at the vendor's higher prices. end_of_life_on: the end of life the
    # vendor announced, shown, never enforced here; retired_on: from this day the vendor no longer serves the model,
    # so requests are refused (404 model_retired), naming the successor where the vendor names one.
    # lifecycle_unverified: the dates come from third parties only; such a model is marked, never retired.
    legacy_on: dt.date | None = None
    extended_access_on: dt.date | None = None
    end_of_life_on: dt.date | None = None
    retired_on: dt.date | None = None
    successor: str | None = None
    lifecycle_unverified: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        formats = tuple(dict.fromkeys((*self.output_formats, self.native_format)))
        missing = [fmt for fmt in formats if fmt not in self.bytes_per_pixel]
        if missing:
            raise ValueError(f"{self.id}: no worst-case bytes per pixel for {missing}")
        if "transparent" in self.backgrounds:
            light = [fmt for fmt in formats if self.bytes_per_pixel[fmt] < TRANSPARENT_BYTES_PER_PIXEL[fmt]]
            if light:
                raise ValueError(f"{self.id}: draws transparent backgrounds, so its {light} bounds must be RGBA's")
        if ("gif" in self.output_formats) != (self.gif is not None):
            raise ValueError(f"{self.id}: output_format 'gif' and a gif rule go together")
        self._consistent_lifecycle()
        return self

    def _consistent_lifecycle(self) -> None:
        if self.successor is not None and self.legacy_on is None and self.retired_on is None:
            raise ValueError(f"{self.id}: a successor needs legacy_on or retired_on")
        if self.successor == self.id:
            raise ValueError(f"{self.id}: a model cannot be its own successor")
        if self.lifecycle_unverified and self.retired_on is not None:
            raise ValueError(f"{self.id}: never retired on an unverified date (lifecycle_unverified): use end_of_life_on")
        if self.extended_access_on is not None and self.legacy_on is None:
            raise ValueError(f"{self.id}: extended access is part of the Legacy period, so it needs legacy_on")
        if self.end_of_life_on is not None and self.retired_on is not None:
            raise ValueError(f"{self.id}: end_of_life_on is an announced end of life, retired_on an enforced one: give one")
        names = ("legacy_on", "extended_access_on", "end_of_life_on", "retired_on")
        days = [(name, day) for name in names if (day := getattr(self, name)) is not None]
        for (earlier, first), (later, second) in zip(days, days[1:], strict=False):
            if second < first:
                raise ValueError(f"{self.id}: {later} ({second}) comes before {earlier} ({first})")

    def legacy(self, today: dt.date) -> bool:
        """Listed as Legacy by the vendor on ``today`` (and not yet retired)."""
        return self.legacy_on is not None and self.legacy_on <= today and not self.retired(today)

    def retired(self, today: dt.date) -> bool:
        return self.retired_on is not None and self.retired_on <= today


class CatalogFile(Model):
    """One data file of ``imagegen/catalog/``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: ProviderName
    source: str = Field(min_length=1, description="Where the facts come from.")
    # The provider's default model in a deployment without a registry document (none: the provider's first).
    default_model: str | None = None
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: tuple[dict[str, Any], ...] = Field(min_length=1)

    def _resolved(self, entry: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
        """``entry`` over its profile's fields (a profile may name a profile of its own)."""
        fields = dict(entry)
        profile = fields.pop("profile", None)
        if profile is None:
            return fields
        if profile in seen:
            raise ValueError(f"profile {profile!r} is its own base: {' -> '.join((*seen, profile))}")
        if profile not in self.profiles:
            raise ValueError(f"{entry.get('id', 'a profile')}: no profile {profile!r} in the {self.provider} catalog")
        return {**self._resolved(self.profiles[profile], (*seen, profile)), **fields}

    def specs(self) -> tuple[ModelSpec, ...]:
        out = []
        for entry in self.models:
            merged = self._resolved(entry)
            merged.setdefault("provider", self.provider)
            merged.setdefault("provider_model", merged.get("id"))
            out.append(ModelSpec.model_validate(merged))
        return tuple(out)


class Catalog:
    """Every model this code can serve, by id, in the order of the data files."""

    def __init__(self, specs: tuple[ModelSpec, ...], defaults: Mapping[ProviderName, str] | None = None) -> None:
        self._specs = {spec.id: spec for spec in specs}
        self.defaults: Mapping[ProviderName, str] = dict(defaults or {})
        if len(self._specs) != len(specs):
            raise ValueError("a model id appears twice in the catalog")
        for spec in specs:
            if spec.successor is not None and spec.successor not in self._specs:
                raise ValueError(f"{spec.id}: successor {spec.successor!r} is not in the catalog")
        for provider, model_id in self.defaults.items():
            if model_id not in self._specs or self._specs[model_id].provider != provider or self._specs[model_id].retired_on:
                raise ValueError(f"the {provider} default model {model_id!r} is not a current {provider} model of the catalog")

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def __getitem__(self, model_id: str) -> ModelSpec:
        return self._specs[model_id]

    def get(self, model_id: str) -> ModelSpec | None:
        return self._specs.get(model_id)

    def ids(self) -> list[str]:
        return list(self._specs)

    def of_ids(self, provider: ProviderName) -> list[str]:
        return [spec.id for spec in self.of(provider)]

    def of(self, provider: ProviderName, *, include_retired: bool = True, today: dt.date | None = None) -> tuple[ModelSpec, ...]:
        day = today or dt.date.today()
        return tuple(spec for spec in self._specs.values() if spec.provider == provider and (include_retired or not spec.retired(day)))

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        return tuple(self._specs.values())


def parse_catalog(documents: Mapping[str, str]) -> Catalog:
    """The catalog from the text of its data files (``{file name: JSON}``)."""
    specs: list[ModelSpec] = []
    defaults: dict[ProviderName, str] = {}
    for name, text in documents.items():
        try:
            document = CatalogFile.model_validate(json.loads(text))
            specs.extend(document.specs())
        except ValueError as exc:
            raise ValueError(f"imagegen/catalog/{name}: {exc}") from exc
        if document.default_model is not None:
            defaults[document.provider] = document.default_model
    try:
        return Catalog(tuple(specs), defaults)
    except ValueError as exc:
        raise ValueError(f"imagegen/catalog: {exc}") from exc


@cache
def catalog() -> Catalog:
    """The catalog of this container: the data files shipped in the layer, read and validated once."""
    folder = resources.files("imagegen") / "catalog"
    return parse_catalog({name: (folder / name).read_text(encoding="utf-8") for name in CATALOG_FILES})


# Bedrock's cross-Region (system-defined) inference profiles are named "<geo>.<model id>" (us.stability.sd3-5-large-v1:0);
# a model that Bedrock offers only through a profile must be invoked by the profile's id.
BEDROCK_GEO_PREFIXES = ("us", "us-gov", "eu", "apac", "jp", "au", "global")
AZURE_PREFIX = "azure/"


def bedrock_base_id(model_id: str) -> str:
    """The foundation model of a Bedrock id: ``us.amazon.nova-canvas-v1:0`` -> ``amazon.nova-canvas-v1:0``."""
    geo, _, base = model_id.partition(".")
    return base if geo in BEDROCK_GEO_PREFIXES and base else model_id


def catalog_spec(model_id: str) -> ModelSpec | None:
    """The catalog entry of ``model_id``; a Bedrock inference profile id is served and invoked under its own id, with
    the rules of the base model's entry. None when the catalog has no such model."""
    known = catalog()
    spec = known.get(model_id)
    if spec is not None:
        return spec
    base = known.get(bedrock_base_id(model_id))
    if base is None or base.provider != "bedrock" or base.id == model_id:
        return None
    return base.model_copy(update={"id": model_id, "provider_model": model_id})


def azure_models(deployments: Mapping[str, str]) -> tuple[ModelSpec, ...]:
    """Azure OpenAI models from ``{openai model id: deployment name}``: the OpenAI catalog entry (same limits) served
    as ``azure/<id>`` (never clashing with OpenAI's own ids), posted to that deployment. Azure retires models on a
    schedule of its own (the deployment says what it serves), so OpenAI's lifecycle does not carry over; Azure takes
    the end-user id as ``user``."""
    known = {spec.id: spec for spec in catalog().of("openai")}
    unknown = [model_id for model_id in deployments if model_id not in known]
    if unknown:
        raise ValueError(f"AZURE_OPENAI_DEPLOYMENTS names unknown models {unknown}; Azure models are {sorted(known)}")
    return tuple(
        known[model_id].model_copy(
            update={
                "id": AZURE_PREFIX + model_id,
                "provider": "azure",
                "provider_model": deployment,
                "legacy_on": None,
                "extended_access_on": None,
                "end_of_life_on": None,
                "retired_on": None,
                "successor": None,
                "lifecycle_unverified": False,
                "safety_identifier": False,
            }
        )
        for model_id, deployment in deployments.items()
    )
