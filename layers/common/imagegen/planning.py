"""Request + model spec -> plan: the per-model validation that turns an :class:`ImageGenerationRequest` into a
:class:`GenerationPlan`, or a 400 naming the field and the values the model allows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from imagegen.errors import InvalidRequestError
from imagegen.options import ImageGenerationRequest, OutputFormat, ResponseFormat, SvgOptions
from imagegen.specs import SIZE, ModelSpec, pixels

# GIF defaults when omitted (openai-python image_generate_params.py).
GIF_DEFAULT_FRAME_DURATION_MS = 200
T = TypeVar("T")


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
    # The end user, for the provider's abuse monitoring: safety_identifier, else the deprecated user.
    safety_identifier: str | None = None
    complexity: str | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    svg: SvgOptions | None = None

    @property
    def previews(self) -> dict[str, str]:
        """The preview features this plan uses (field -> value): the vendor may refuse them for its project."""
        asked = {"output_format": self.output_format, "background": self.background}
        return {field: value for field, value in asked.items() if value is not None and value in self.model.previews.get(field, ())}

    @property
    def frames(self) -> int:
        """Frames per image: a GIF's (asked, or the model's default), else one."""
        if self.output_format != "gif" or self.model.gif is None:
            return 1
        return self.frame_count or self.model.gif.default_frames

    @property
    def max_pixels(self) -> int:
        """The most pixels one image of this plan can have: the size asked, the largest "auto" may pick, or the
        provider's own resolution."""
        spec = self.model
        if spec.max_output_pixels is not None:
            return spec.max_output_pixels
        if self.size == "auto":
            return pixels(spec.auto_max_size or spec.auto_size)
        return self.width * self.height

    @property
    def max_image_bytes(self) -> int:
        """The most bytes one image of this plan can take, from the model's worst-case bounds (every GIF frame)."""
        per_pixel = self.model.bytes_per_pixel[self.output_format]
        return math.ceil(per_pixel * self.max_pixels * self.frames) + self.model.image_overhead_bytes


def allowed(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def plan(spec: ModelSpec, request: ImageGenerationRequest) -> GenerationPlan:
    """``request`` checked against ``spec`` (a current model: retirement is the registry's check)."""
    _check_not_streaming(request)
    size, width, height = _check_size(spec, request.size)
    output_format = _check_choice(spec, "output_format", request.output_format, spec.output_formats) or spec.native_format
    n = _check_n(spec, request.n)
    if output_format == "svg" and n != 1:
        raise _invalid(spec, "n", f"{n} requested, output_format 'svg' makes one image: n must be 1")
    return GenerationPlan(
        model=spec,
        prompt=_check_prompt(spec, request.prompt),
        n=n,
        size=size,
        width=width,
        height=height,
        quality=_check_choice(spec, "quality", request.quality, tuple(spec.qualities), spec.qualities),
        style=_check_choice(spec, "style", request.style, spec.styles),
        response_format=_check_response_format(spec, request.response_format),
        output_format=output_format,
        output_compression=_check_compression(spec, request),
        background=_check_background(spec, request),
        moderation=_check_choice(spec, "moderation", request.moderation, spec.moderations),
        safety_identifier=request.safety_identifier or request.user or None,
        complexity=_check_choice(spec, "complexity", request.complexity, spec.complexities),
        frame_count=_only_with(spec, "frame_count", request.frame_count, output_format, "gif"),
        frame_duration_ms=_only_with(spec, "frame_duration_ms", request.frame_duration_ms, output_format, "gif"),
        svg=_only_with(spec, "svg", request.svg, output_format, "svg"),
    )


def _invalid(spec: ModelSpec, param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}' for model '{spec.id}': {problem}.", param=param)


def _check_not_streaming(request: ImageGenerationRequest) -> None:
    if request.stream:
        raise InvalidRequestError(
            "Invalid 'stream': streaming is not supported by this deployment yet; omit 'stream' or set it to false.",
            param="stream",
            code="unsupported_parameter",
        )
    if request.partial_images is not None:
        raise InvalidRequestError(
            "Invalid 'partial_images': partial images need streaming, which this deployment does not support yet; omit it.",
            param="partial_images",
            code="unsupported_parameter",
        )


def _check_prompt(spec: ModelSpec, prompt: str) -> str:
    if len(prompt) > spec.max_prompt_chars:
        raise _invalid(spec, "prompt", f"{len(prompt)} characters, the maximum is {spec.max_prompt_chars}")
    return prompt


def _check_n(spec: ModelSpec, n: int | None) -> int:
    if n is None:
        return 1
    if n > spec.max_n:
        limit = "only n=1 is supported" if spec.max_n == 1 else f"n must be between 1 and {spec.max_n}"
        raise _invalid(spec, "n", f"{n} requested, {limit}")
    return n


def _check_size(spec: ModelSpec, size: str | None) -> tuple[str, int, int]:
    size = size or spec.default_size
    match = SIZE.match(spec.auto_size if size == "auto" else size)
    if size not in spec.sizes:
        rule = spec.custom_sizes
        why = rule.check(*map(int, match.groups())) if rule and match else "not one of the sizes"
        if why:
            sizes = f"allowed sizes are {allowed(spec.sizes)}" + (f", or {rule.describe()}" if rule else "")
            raise _invalid(spec, "size", f"'{size}' is not supported ({why}); {sizes}")
    assert match is not None  # every listed size and every custom size is WIDTHxHEIGHT
    return size, int(match[1]), int(match[2])


def _check_choice(
    spec: ModelSpec, param: str, value: str | None, values: tuple[str, ...], mapping: Mapping[str, str] | None = None
) -> str | None:
    if value is None:
        return None
    if value not in values:
        if not values:
            raise _invalid(spec, param, f"'{param}' is not supported by this model; omit it")
        raise _invalid(spec, param, f"'{value}' is not supported; allowed values are {allowed(values)}")
    return mapping[value] if mapping else value


def _only_with(spec: ModelSpec, param: str, value: T | None, output_format: str, needs: str) -> T | None:
    if value is None:
        return None
    if needs not in spec.output_formats:
        raise _invalid(spec, param, f"'{param}' is not supported by this model (it has no '{needs}' output); omit it")
    if output_format != needs:
        raise _invalid(spec, param, f"'{param}' applies only to output_format '{needs}'")
    return value


def _check_response_format(spec: ModelSpec, value: ResponseFormat | None) -> ResponseFormat:
    if value is not None and value not in spec.response_formats:
        raise _invalid(
            spec,
            "response_format",
            f"'{value}' is not supported; this model always answers {allowed(spec.response_formats)}, omit response_format",
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
