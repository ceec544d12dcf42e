"""The model registry: which provider serves which model, with its limits, and the per-model validation that
turns an :class:`ImageGenerationRequest` into a :class:`GenerationPlan` (or a 400/404 naming the field).

Numbers follow the OpenAI Images API reference (openai-openapi ``CreateImageRequest``, openai-python
``image_generate_params.py``). ``standard``/``hd`` from the seed contract map to ``medium``/``high`` on GPT image models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imagegen.errors import InvalidRequestError, ModelNotFoundError
from imagegen.options import ImageGenerationRequest, OutputFormat, ResponseFormat

ProviderName = Literal["local", "openai", "bedrock", "azure"]
# What the provider's wire protocol expects: DALL-E takes response_format/style, GPT image models output_format etc.;
# on Bedrock, Amazon's image models (Nova Canvas, Titan v2) share one body and Stability's models another.
ModelFamily = Literal["local", "dall-e", "gpt-image", "amazon-image", "stability"]
_SIZE = re.compile(r"^(\d+)x(\d+)$")

# The most bytes an image can take per pixel in each format, for worst-case content (uniform random noise) at the
# heaviest settings (PNG: 8-bit, deflate falling back to stored blocks; JPEG: quality 100, no chroma subsampling,
# standard Huffman tables; WebP: lossless, or lossy at quality 100), measured with Pillow by
# tests/unit/test_worst_case_bounds.py. Opaque images are RGB; a model that can draw a transparent background answers
# RGBA. (Adversarial content can do worse, e.g. JPEG of noise of pure 0/255 values: ~4.8; an image model draws
# neither, and an image above its bound is still delivered: imagegen.service.)
OPAQUE_BYTES_PER_PIXEL: Mapping[OutputFormat, float] = {"png": 3.05, "jpeg": 4.2, "webp": 3.2}
TRANSPARENT_BYTES_PER_PIXEL: Mapping[OutputFormat, float] = {"png": 4.05, "jpeg": 4.2, "webp": 4.05}
# Per image, on top: headers, ancillary chunks and metadata a provider adds (colour profiles, EXIF, C2PA manifests).
IMAGE_OVERHEAD_BYTES = 64 * 1024


def _pixels(size: str) -> int:
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(f"{size!r} is not WIDTHxHEIGHT")
    return int(match[1]) * int(match[2])


class CustomSizeRule(BaseModel):
    """Free-form WIDTHxHEIGHT sizes (gpt-image-2, Nova Canvas): sides multiples of ``multiple_of``, bounded edges,
    aspect and area. The defaults are gpt-image-2's."""

    model_config = ConfigDict(frozen=True)

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
        pixels = f"{self.min_pixels} to {self.max_pixels}" if self.min_pixels else f"at most {self.max_pixels}"
        return (
            f"WIDTHxHEIGHT with both sides multiples of {self.multiple_of}, {edges}, aspect "
            f"between 1:{self.max_aspect:g} and {self.max_aspect:g}:1, {pixels} pixels"
        )


class ModelSpec(BaseModel):
    """One servable model and everything validation needs to know about it."""

    model_config = ConfigDict(frozen=True)

    id: str
    provider: ProviderName
    family: ModelFamily
    provider_model: str
    sizes: tuple[str, ...]
    custom_sizes: CustomSizeRule | None = None
    default_size: str = "1024x1024"
    # Size "auto" leaves the choice to the provider; providers that need pixels draw this one.
    auto_size: str = "1024x1024"
    # The largest size "auto" may give (None: auto_size), for the worst case of an answer.
    auto_max_size: str | None = None
    # A provider that draws at its own resolution whatever the size asked: at most this many pixels per image.
    max_output_pixels: int | None = None
    max_n: int = 10
    max_prompt_chars: int
    # Accepted request quality -> the value sent to the provider.
    qualities: Mapping[str, str] = Field(default_factory=dict)
    styles: tuple[str, ...] = ()
    response_formats: tuple[ResponseFormat, ...] = ("url", "b64_json")
    default_response_format: ResponseFormat = "url"
    # Values the output_format parameter may take (empty: the parameter is not supported) and the default format.
    output_formats: tuple[OutputFormat, ...] = ()
    native_format: OutputFormat = "png"
    supports_compression: bool = False
    backgrounds: tuple[str, ...] = ()
    moderations: tuple[str, ...] = ()
    # Worst-case bytes per pixel per output format, plus a fixed overhead per image: what a base64 answer is planned
    # with before the provider is called (RGB bounds unless the model can draw a transparent background).
    bytes_per_pixel: Mapping[OutputFormat, float] = Field(default_factory=lambda: dict(OPAQUE_BYTES_PER_PIXEL))
    image_overhead_bytes: int = IMAGE_OVERHEAD_BYTES

    @model_validator(mode="after")
    def _bounds_for_every_format(self) -> ModelSpec:
        formats = tuple(dict.fromkeys((*self.output_formats, self.native_format)))
        missing = [fmt for fmt in formats if fmt not in self.bytes_per_pixel]
        if missing:
            raise ValueError(f"{self.id}: no worst-case bytes per pixel for {missing}")
        if "transparent" in self.backgrounds:
            light = [fmt for fmt in formats if self.bytes_per_pixel[fmt] < TRANSPARENT_BYTES_PER_PIXEL[fmt]]
            if light:
                raise ValueError(f"{self.id}: draws transparent backgrounds, so its {light} bounds must be RGBA's")
        return self


class GenerationPlan(BaseModel):
    """A request checked against its model: the values a provider receives."""

    model_config = ConfigDict(frozen=True)

    model: ModelSpec
    prompt: str
    n: int
    size: str
    width: int
    height: int
    quality: str | None
    style: str | None
    response_format: ResponseFormat
    output_format: OutputFormat
    output_compression: int | None
    background: str | None
    moderation: str | None
    user: str | None

    @property
    def max_pixels(self) -> int:
        """The most pixels one image of this plan can have: the size asked, the largest "auto" may pick, or the
        provider's own resolution."""
        spec = self.model
        if spec.max_output_pixels is not None:
            return spec.max_output_pixels
        if self.size == "auto":
            return _pixels(spec.auto_max_size or spec.auto_size)
        return self.width * self.height

    @property
    def max_image_bytes(self) -> int:
        """The most bytes one image of this plan can take, from the model's worst-case bounds."""
        return math.ceil(self.model.bytes_per_pixel[self.output_format] * self.max_pixels) + self.model.image_overhead_bytes


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


_DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
_DALLE3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
_GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_GPT_IMAGE_QUALITIES = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "auto": "auto",
    "standard": "medium",
    "hd": "high",
}


def _gpt_image(
    model_id: str,
    custom_sizes: CustomSizeRule | None = None,
    backgrounds: tuple[str, ...] = ("transparent", "opaque", "auto"),
) -> ModelSpec:
    rgba = "transparent" in backgrounds
    return ModelSpec(
        id=model_id,
        provider="openai",
        family="gpt-image",
        provider_model=model_id,
        sizes=_GPT_IMAGE_SIZES,
        custom_sizes=custom_sizes,
        max_prompt_chars=32_000,
        auto_max_size="1536x1024",
        qualities=_GPT_IMAGE_QUALITIES,
        # OpenAI answers GPT image models in base64 only (and so is our default, what SDK users read); every image is
        # in S3 anyway, so "url" is served too.
        default_response_format="b64_json",
        output_formats=("png", "jpeg", "webp"),
        supports_compression=True,
        backgrounds=backgrounds,
        moderations=("low", "auto"),
        bytes_per_pixel=TRANSPARENT_BYTES_PER_PIXEL if rgba else OPAQUE_BYTES_PER_PIXEL,
    )


LOCAL_MODEL = ModelSpec(
    id="local",
    provider="local",
    family="local",
    provider_model="placeholder",
    sizes=tuple(dict.fromkeys(_DALLE2_SIZES + _DALLE3_SIZES + _GPT_IMAGE_SIZES)),
    max_prompt_chars=32_000,
    qualities={quality: quality for quality in ("standard", "hd", "low", "medium", "high", "auto")},
    styles=("vivid", "natural"),
    output_formats=("png",),
    # Its own output (flat cells, deflate): at most ~0.03 bytes per pixel, checked for every size by the tests.
    bytes_per_pixel={"png": 0.1},
    image_overhead_bytes=8 * 1024,
)

OPENAI_MODELS = (
    ModelSpec(
        id="dall-e-2",
        provider="openai",
        family="dall-e",
        provider_model="dall-e-2",
        sizes=_DALLE2_SIZES,
        max_prompt_chars=1000,
        qualities={"standard": "standard"},
    ),
    ModelSpec(
        id="dall-e-3",
        provider="openai",
        family="dall-e",
        provider_model="dall-e-3",
        sizes=_DALLE3_SIZES,
        max_n=1,
        max_prompt_chars=4000,
        qualities={"standard": "standard", "hd": "hd"},
        styles=("vivid", "natural"),
    ),
    _gpt_image("gpt-image-1"),
    _gpt_image("gpt-image-1-mini"),
    _gpt_image("gpt-image-1.5"),
    # gpt-image-2 takes custom sizes but no transparent background (openai-python images.py, gpt-image-2 era).
    _gpt_image("gpt-image-2", custom_sizes=CustomSizeRule(), backgrounds=("opaque", "auto")),
)


# Amazon Bedrock (model ids are Bedrock's own, so the registry id, the invoke_model id and the IAM resource agree).
# Titan Image Generator v2: a fixed list of sizes, 512-character prompts (Bedrock user guide, Titan Image Generator).
TITAN_V2_SIZES = (
    "1024x1024", "768x768", "512x512", "768x1152", "384x576", "1152x768", "576x384", "768x1280", "384x640", "1280x768",
    "640x384", "896x1152", "448x576", "1152x896", "576x448", "768x1408", "384x704", "1408x768", "704x384", "640x1408",
    "320x704", "1408x640", "704x320", "1152x640", "1173x640",
)  # fmt: skip
# Nova Canvas: each side 320-4096 and divisible by 16, aspect 1:4..4:1, fewer than 4,194,304 pixels; 1024-character prompts.
NOVA_CANVAS_SIZES = CustomSizeRule(multiple_of=16, min_edge=320, max_edge=4096, max_aspect=4.0, min_pixels=0, max_pixels=4_194_303)
_AMAZON_QUALITIES = {"standard": "standard", "hd": "premium"}
# Stability models take an aspect ratio, not pixels: these sizes are exactly the ratios they accept
# (1:1, 16:9, 9:16, 3:2, 2:3, 4:5, 5:4, 21:9, 9:21); the image comes back at the model's resolution for that ratio.
STABILITY_SIZES = (
    "1024x1024", "1280x720", "720x1280", "1536x1024", "1024x1536", "1024x1280", "1280x1024", "1344x576", "576x1344",
)  # fmt: skip


def _stability(model_id: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        provider="bedrock",
        family="stability",
        provider_model=model_id,
        sizes=STABILITY_SIZES,
        max_n=4,
        max_prompt_chars=10_000,
        output_formats=("png", "jpeg"),
        # Stability draws about 1 to 1.5 megapixels at the ratio asked, whatever our size says.
        max_output_pixels=1536 * 1024,
    )


BEDROCK_MODELS = (
    ModelSpec(
        id="amazon.nova-canvas-v1:0",
        provider="bedrock",
        family="amazon-image",
        provider_model="amazon.nova-canvas-v1:0",
        sizes=("1024x1024", "1280x720", "720x1280", "1792x1024", "1024x1792", "512x512"),
        custom_sizes=NOVA_CANVAS_SIZES,
        max_n=5,
        max_prompt_chars=1024,
        qualities=_AMAZON_QUALITIES,
    ),
    ModelSpec(
        id="amazon.titan-image-generator-v2:0",
        provider="bedrock",
        family="amazon-image",
        provider_model="amazon.titan-image-generator-v2:0",
        sizes=TITAN_V2_SIZES,
        max_n=5,
        max_prompt_chars=512,
        qualities=_AMAZON_QUALITIES,
    ),
    _stability("stability.stable-image-core-v1:1"),
    _stability("stability.stable-image-ultra-v1:1"),
    _stability("stability.sd3-5-large-v1:0"),
)


class ModelRegistry:
    """The models this deployment serves, and the one place that checks a request against them."""

    def __init__(self, models: Iterable[ModelSpec], default_model: str) -> None:
        self._models = {spec.id: spec for spec in models}
        if default_model not in self._models:
            raise ValueError(f"DEFAULT_MODEL {default_model!r} is not served here; choose one of {sorted(self._models)}")
        self.default_model = default_model

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return tuple(self._models.values())

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._models[model_id]
        except KeyError:
            raise ModelNotFoundError(
                f"The model '{model_id}' does not exist or is not served by this deployment. Available models: {_allowed(self._models)}.",
                param="model",
            ) from None

    def plan(self, request: ImageGenerationRequest) -> GenerationPlan:
        spec = self.get(request.model or self.default_model)
        size, width, height = _check_size(spec, request.size)
        return GenerationPlan(
            model=spec,
            prompt=_check_prompt(spec, request.prompt),
            n=_check_n(spec, request.n),
            size=size,
            width=width,
            height=height,
            quality=_check_choice(spec, "quality", request.quality, tuple(spec.qualities), spec.qualities),
            style=_check_choice(spec, "style", request.style, spec.styles),
            response_format=_check_response_format(spec, request.response_format),
            output_format=_check_choice(spec, "output_format", request.output_format, spec.output_formats) or spec.native_format,
            output_compression=_check_compression(spec, request),
            background=_check_background(spec, request),
            moderation=_check_choice(spec, "moderation", request.moderation, spec.moderations),
            user=request.user,
        )


def _invalid(spec: ModelSpec, param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}' for model '{spec.id}': {problem}.", param=param)


def _check_prompt(spec: ModelSpec, prompt: str) -> str:
    if len(prompt) > spec.max_prompt_chars:
        raise _invalid(spec, "prompt", f"{len(prompt)} characters, the maximum is {spec.max_prompt_chars}")
    return prompt


def _check_n(spec: ModelSpec, n: int | None) -> int:
    if n is None:
        return 1
    if n > spec.max_n:
        allowed = "only n=1 is supported" if spec.max_n == 1 else f"n must be between 1 and {spec.max_n}"
        raise _invalid(spec, "n", f"{n} requested, {allowed}")
    return n


def _check_size(spec: ModelSpec, size: str | None) -> tuple[str, int, int]:
    size = size or spec.default_size
    match = _SIZE.match(spec.auto_size if size == "auto" else size)
    if size not in spec.sizes:
        rule = spec.custom_sizes
        why = rule.check(*map(int, match.groups())) if rule and match else "not one of the sizes"
        if why:
            allowed = f"allowed sizes are {_allowed(spec.sizes)}" + (f", or {rule.describe()}" if rule else "")
            raise _invalid(spec, "size", f"'{size}' is not supported ({why}); {allowed}")
    assert match is not None  # every listed size and every custom size is WIDTHxHEIGHT
    return size, int(match[1]), int(match[2])


def _check_choice(
    spec: ModelSpec, param: str, value: str | None, allowed: tuple[str, ...], mapping: Mapping[str, str] | None = None
) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        if not allowed:
            raise _invalid(spec, param, f"'{param}' is not supported by this model; omit it")
        raise _invalid(spec, param, f"'{value}' is not supported; allowed values are {_allowed(allowed)}")
    return mapping[value] if mapping else value


def _check_response_format(spec: ModelSpec, value: ResponseFormat | None) -> ResponseFormat:
    if value is not None and value not in spec.response_formats:
        raise _invalid(
            spec,
            "response_format",
            f"'{value}' is not supported; this model always answers {_allowed(spec.response_formats)}, omit response_format",
        )
    return value or spec.default_response_format


def _check_compression(spec: ModelSpec, request: ImageGenerationRequest) -> int | None:
    if request.output_compression is None:
        return None
    if not spec.supports_compression:
        raise _invalid(spec, "output_compression", "'output_compression' is not supported by this model; omit it")
    if request.output_format not in ("jpeg", "webp"):
        raise _invalid(spec, "output_compression", "it applies only to output_format 'jpeg' or 'webp'")
    return request.output_compression


def _check_background(spec: ModelSpec, request: ImageGenerationRequest) -> str | None:
    background = _check_choice(spec, "background", request.background, spec.backgrounds)
    if background == "transparent" and (request.output_format or "png") not in ("png", "webp"):
        raise _invalid(spec, "background", "'transparent' needs output_format 'png' or 'webp'")
    return background


def _bedrock_models(ids: Sequence[str]) -> tuple[ModelSpec, ...]:
    specs = {model_id: catalog_spec(model_id) for model_id in dict.fromkeys(ids)}
    unknown = [model_id for model_id, spec in specs.items() if spec is None or spec.provider != "bedrock"]
    if unknown:
        known = sorted(spec.id for spec in BEDROCK_MODELS)
        raise ValueError(
            f"BEDROCK_MODELS lists unknown models {unknown}; Bedrock models are {known}, each also as a cross-Region "
            f"inference profile '<geo>.<model id>' with geo one of {list(BEDROCK_GEO_PREFIXES)}"
        )
    return tuple(spec for spec in specs.values() if spec is not None)


AZURE_PREFIX = "azure/"


def azure_models(deployments: Mapping[str, str]) -> tuple[ModelSpec, ...]:
    """Azure OpenAI models from ``{openai model id: deployment name}``: the OpenAI catalog entry (same limits) served
    as ``azure/<id>`` (never clashing with OpenAI's own ids), posted to that deployment."""
    known = {spec.id: spec for spec in OPENAI_MODELS}
    unknown = [model_id for model_id in deployments if model_id not in known]
    if unknown:
        raise ValueError(f"AZURE_OPENAI_DEPLOYMENTS names unknown models {unknown}; Azure models are {sorted(known)}")
    return tuple(
        known[model_id].model_copy(update={"id": AZURE_PREFIX + model_id, "provider": "azure", "provider_model": deployment})
        for model_id, deployment in deployments.items()
    )


# Every model this code can serve; a deployment serves all of a provider's, or the ones its registry document lists.
CATALOG: Mapping[str, ModelSpec] = {spec.id: spec for spec in (LOCAL_MODEL, *OPENAI_MODELS, *BEDROCK_MODELS)}

# Bedrock's cross-Region (system-defined) inference profiles are named "<geo>.<model id>" (us.stability.sd3-5-large-v1:0);
# a model that Bedrock offers only through a profile must be invoked by the profile's id.
BEDROCK_GEO_PREFIXES = ("us", "us-gov", "eu", "apac", "jp", "au", "global")


def bedrock_base_id(model_id: str) -> str:
    """The foundation model of a Bedrock id: ``us.amazon.nova-canvas-v1:0`` -> ``amazon.nova-canvas-v1:0``."""
    geo, _, base = model_id.partition(".")
    return base if geo in BEDROCK_GEO_PREFIXES and base else model_id


def catalog_spec(model_id: str) -> ModelSpec | None:
    """The catalog entry of ``model_id``; a Bedrock inference profile id is served and invoked under its own id, with
    the rules of the base model's entry. None when the catalog has no such model."""
    spec = CATALOG.get(model_id)
    if spec is not None:
        return spec
    base = CATALOG.get(bedrock_base_id(model_id))
    if base is None or base.provider != "bedrock" or base.id == model_id:
        return None
    return base.model_copy(update={"id": model_id, "provider_model": model_id})


class ModelChoice(BaseModel):
    """One entry of a deployment's registry document: a catalog id, optionally with tighter limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    # Lower any model's limit; raise a Bedrock model's up to 10 (more calls per request: Nova/Titan draw 5 per call,
    # Stability 1, run concurrently).
    max_n: int | None = Field(default=None, ge=1, le=10)
    default_size: str | None = None

    def spec(self) -> ModelSpec:
        base = catalog_spec(self.id)
        assert base is not None  # RegistryConfig checks every id
        update: dict[str, object] = {}
        if self.max_n is not None:
            update["max_n"] = self.max_n
        if self.default_size is not None:
            update["default_size"] = self.default_size
        return base.model_copy(update=update)


class RegistryConfig(BaseModel):
    """A deployment's registry document (``MODEL_REGISTRY`` JSON or the SSM parameter ``MODEL_REGISTRY_PARAMETER``):
    ``{"models": ["local", "amazon.nova-canvas-v1:0", {"id": "stability.sd3-5-large-v1:0", "max_n": 2}],
    "default_model": "amazon.nova-canvas-v1:0"}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[ModelChoice, ...] = Field(min_length=1)
    default_model: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _bare_ids(cls, value: object) -> object:
        return [{"id": item} if isinstance(item, str) else item for item in value] if isinstance(value, list | tuple) else value

    @model_validator(mode="after")
    def _known_models(self) -> RegistryConfig:
        ids = [choice.id for choice in self.models]
        unknown = [model_id for model_id in ids if catalog_spec(model_id) is None]
        if unknown:
            raise ValueError(f"unknown model ids {unknown}; the catalog has {sorted(CATALOG)} (Bedrock's also as '<geo>.<model id>')")
        if len(set(ids)) != len(ids):
            raise ValueError(f"a model is listed twice: {ids}")
        for choice in self.models:
            base = catalog_spec(choice.id)
            assert base is not None  # checked above
            if choice.max_n is not None and choice.max_n > base.max_n and base.provider != "bedrock":
                raise ValueError(f"{choice.id}: max_n {choice.max_n} is above the model's own limit {base.max_n}")
            if choice.default_size is not None and choice.default_size not in base.sizes:
                raise ValueError(f"{choice.id}: default_size {choice.default_size!r} is not one of {list(base.sizes)}")
        if self.default_model is not None and self.default_model not in ids:
            raise ValueError(f"default_model {self.default_model!r} is not among the listed models")
        return self

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(spec.provider for choice in self.models if (spec := catalog_spec(choice.id)) is not None)


def build_registry(
    *,
    openai_enabled: bool,
    default_model: str | None,
    bedrock_enabled: bool = False,
    bedrock_models: Sequence[str] = (),
    config: RegistryConfig | None = None,
    azure_deployments: Mapping[str, str] | None = None,
) -> ModelRegistry:
    """The registry of this deployment. With a registry document: exactly the models it lists (OpenAI's need a key).
    Without: the local model always, OpenAI's when a key is configured, Bedrock's when enabled (all of them, or those
    in ``bedrock_models``); the default is ``default_model``, else dall-e-3 with OpenAI, else the first Bedrock model,
    else local. Azure OpenAI models (``azure/<id>``, one per configured deployment) are served in either case."""
    azure = azure_models(azure_deployments or {})
    if config is not None:
        specs = (*(choice.spec() for choice in config.models), *azure)
        needs_key = [spec.id for spec in specs if spec.provider == "openai"]
        if needs_key and not openai_enabled:
            raise ValueError(f"the model registry lists {needs_key} but no OpenAI key is configured")
        return ModelRegistry(specs, default_model or config.default_model or specs[0].id)
    bedrock = _bedrock_models(bedrock_models) if bedrock_models else BEDROCK_MODELS if bedrock_enabled else ()
    models = (LOCAL_MODEL, *(OPENAI_MODELS if openai_enabled else ()), *azure, *bedrock)
    fallback = "dall-e-3" if openai_enabled else azure[0].id if azure else bedrock[0].id if bedrock else LOCAL_MODEL.id
    return ModelRegistry(models, default_model or fallback)
