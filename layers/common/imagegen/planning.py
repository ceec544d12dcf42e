"""Request + model spec -> plan: the per-model validation that turns a generation, an edit (with its input
pictures) or a variation into a :class:`GenerationPlan`, or a 400 naming the field and the values the model allows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import ConfigDict

from imagegen.errors import InvalidRequestError
from imagegen.models import Model
from imagegen.options import (
    ImageEditOptions,
    ImageGenerationRequest,
    ImageOptions,
    ImageVariationOptions,
    OutputFormat,
    ResponseFormat,
    SvgOptions,
)
from imagegen.specs import SIZE, InputRule, ModelSpec, pixels

if TYPE_CHECKING:
    from imagegen.pictures import Picture

# GIF defaults when omitted (openai-python image_generate_params.py).
GIF_DEFAULT_FRAME_DURATION_MS = 200
T = TypeVar("T")
# What a plan asks of the provider; the names are OpenAI's (usage "source": image.generation, image.edit, ...).
Operation = Literal["generation", "edit", "variation"]


class InputPictures:
    """The input images of an edit or a variation, inspected (format, size): the first is the one a mask applies to.
    ``params`` names each image as the request sent it (``images[1].image_url`` in JSON), for the 400s of planning;
    empty means the multipart form's names (``image``, or ``image[i]`` for several).
    (A plain class: a plan holds it as it is, pydantic checks only its type.)"""

    __slots__ = ("images", "mask", "markup", "params")

    def __init__(
        self, images: tuple[Picture, ...], mask: Picture | None = None, markup: Picture | None = None, params: tuple[str, ...] = ()
    ) -> None:
        self.images = images
        self.mask = mask
        self.markup = markup
        self.params = params

    def param(self, index: int) -> str:
        if self.params:
            return self.params[index]
        return f"image[{index}]" if len(self.images) > 1 else "image"


class GenerationPlan(Model):
    """A request checked against its model: the values a provider receives."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: ModelSpec
    operation: Operation = "generation"
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
    # Edits and variations: the input pictures (validated for the model), and how closely to keep them.
    inputs: InputPictures | None = None
    input_fidelity: str | None = None
    # Streamed (stream: true): the answer is server-sent events, with this many partial images (0-3) before the final.
    stream: bool = False
    partial_images: int = 0
    # A request naming a route (imagegen.routing): the route's id, and the same request planned for each model after
    # this one, in the route's order, to fall to when this one cannot serve it.
    route: str | None = None
    fallbacks: tuple[GenerationPlan, ...] = ()

    @property
    def requested_model(self) -> str:
        """The model as the request named it: the route, else the model."""
        return self.route or self.model.id

    @property
    def candidates(self) -> tuple[GenerationPlan, ...]:
        """This plan, then its fallbacks."""
        return (self, *self.fallbacks)

    @property
    def input_rule(self) -> InputRule | None:
        return self.model.edits if self.operation == "edit" else self.model.variations if self.operation == "variation" else None

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
        rule = self.input_rule
        bounds = rule.bytes_per_pixel if rule is not None and rule.bytes_per_pixel is not None else self.model.bytes_per_pixel
        per_pixel = bounds[self.output_format]
        return math.ceil(per_pixel * self.max_pixels * self.frames) + self.model.image_overhead_bytes


def allowed(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def plan(spec: ModelSpec, request: ImageGenerationRequest) -> GenerationPlan:
    """``request`` checked against ``spec`` (a current model: retirement is the registry's check)."""
    if not spec.generations:
        raise InvalidRequestError(
            f"The model '{spec.id}' does not generate images; it only edits them (/v1/images/edits).",
            param="model",
            code="unsupported_operation",
        )
    return _plan(spec, request, style=request.style, moderation=request.moderation)


def plan_edit(spec: ModelSpec, options: ImageEditOptions, inputs: InputPictures) -> GenerationPlan:
    """An edit of ``inputs`` checked against ``spec``'s edit rule (the registry has checked that it edits at all)."""
    rule = spec.edits
    assert rule is not None  # imagegen.registry plans edits only for models that edit
    check_input_count(spec, rule, len(inputs.images), param="image", has_mask=inputs.mask is not None)
    first = inputs.images[0]
    for index, picture in enumerate(inputs.images):
        check_picture(spec, rule, picture, param=inputs.param(index))
    if inputs.mask is not None:
        _check_overlay(spec, rule, "mask", inputs.mask, first, allowed=rule.mask)
    if inputs.markup is not None:
        if inputs.mask is not None:
            raise _invalid(spec, "markup", "'markup' cannot be combined with 'mask'; send one of them")
        _check_overlay(spec, rule, "markup", inputs.markup, first, allowed=rule.markup)
    follows = first if rule.output_follows_input else None
    result = _plan(spec, options, operation="edit", follows=follows, inputs=inputs)
    if result.output_format == "gif" and inputs.mask is not None:
        raise _invalid(spec, "mask", "output_format 'gif' cannot be combined with a mask")
    fidelity = _check_choice(spec, "input_fidelity", options.input_fidelity, rule.input_fidelities)
    return result.model_copy(update={"input_fidelity": fidelity})


def plan_variation(spec: ModelSpec, options: ImageVariationOptions, picture: Picture) -> GenerationPlan:
    """Variations of ``picture`` checked against ``spec``'s variation rule."""
    rule = spec.variations
    assert rule is not None  # imagegen.registry plans variations only for models that make them
    check_picture(spec, rule, picture, param="image")
    # The options a plan reads, as validated by ImageVariationOptions: a variation has no prompt, the rest is unset.
    fields = ImageOptions.model_construct(
        prompt="", n=options.n, size=options.size, response_format=options.response_format, user=options.user
    )
    follows = picture if rule.output_follows_input else None
    return _plan(spec, fields, operation="variation", follows=follows, inputs=InputPictures(images=(picture,)))


def check_input_count(spec: ModelSpec, rule: InputRule, count: int, *, param: str, has_mask: bool = False) -> None:
    """Before any input is read or fetched: how many images the model takes (with a mask, maybe fewer)."""
    limit = rule.max_images_with_mask if has_mask and rule.max_images_with_mask is not None else rule.max_images
    if count > limit:
        why = f"with a mask this model takes at most {limit}" if limit != rule.max_images else f"this model takes at most {limit}"
        raise _invalid(spec, param, f"{count} images sent, {why}")


def check_picture(spec: ModelSpec, rule: InputRule, picture: Picture, *, param: str) -> None:
    """One input image against the model's input rule: format, bytes, sides, pixels, squareness."""
    if picture.format not in rule.formats:
        raise _invalid(spec, param, f"a {picture.format.upper()} image is not supported; send {_formats(rule.formats)}")
    if len(picture.data) > rule.max_image_bytes:
        raise _invalid(spec, param, f"the image is {len(picture.data)} bytes, the maximum is {rule.max_image_bytes}")
    size = f"{picture.width}x{picture.height}"
    if min(picture.width, picture.height) < rule.min_edge or max(picture.width, picture.height) > rule.max_edge:
        raise _invalid(spec, param, f"the image is {size}; each side must be {rule.min_edge} to {rule.max_edge} pixels")
    if rule.max_pixels is not None and picture.width * picture.height > rule.max_pixels:
        raise _invalid(spec, param, f"the image is {size}, above the model's {rule.max_pixels} pixels")
    if rule.square and picture.width != picture.height:
        raise _invalid(spec, param, f"the image is {size}; it must be square")


def _check_overlay(spec: ModelSpec, rule: InputRule, param: str, overlay: Picture, first: Picture, *, allowed: bool) -> None:
    """A mask or a markup: a PNG with an alpha channel, the first image's size."""
    if not allowed:
        raise _invalid(spec, param, f"'{param}' is not supported by this model; omit it")
    if overlay.format != "png" or not overlay.has_alpha:
        raise _invalid(spec, param, f"the {param} must be a PNG with an alpha channel (transparency)")
    if len(overlay.data) > rule.mask_max_bytes:
        raise _invalid(spec, param, f"the {param} is {len(overlay.data)} bytes, the maximum is {rule.mask_max_bytes}")
    if (overlay.width, overlay.height) != (first.width, first.height):
        raise _invalid(
            spec,
            param,
            f"the {param} is {overlay.width}x{overlay.height}; it must have the first image's size, {first.width}x{first.height}",
        )


def _formats(formats: Sequence[str]) -> str:
    names = [name.upper() for name in formats]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _plan(
    spec: ModelSpec,
    request: ImageOptions,
    *,
    operation: Operation = "generation",
    style: str | None = None,
    moderation: str | None = None,
    follows: Picture | None = None,
    inputs: InputPictures | None = None,
) -> GenerationPlan:
    if follows is not None:
        size, width, height = _check_follows(spec, request.size, follows)
    else:
        size, width, height = _check_size(spec, request.size, default="auto" if operation == "edit" and "auto" in spec.sizes else None)
    output_format = _check_choice(spec, "output_format", request.output_format, spec.output_formats) or spec.native_format
    n = _check_n(spec, request.n)
    if output_format == "svg" and n != 1:
        raise _invalid(spec, "n", f"{n} requested, output_format 'svg' makes one image: n must be 1")
    stream, partials = _check_stream(spec, request, output_format)
    return GenerationPlan(
        model=spec,
        operation=operation,
        prompt=_check_prompt(spec, request.prompt),
        n=n,
        size=size,
        width=width,
        height=height,
        quality=_check_choice(spec, "quality", request.quality, tuple(spec.qualities), spec.qualities),
        style=_check_choice(spec, "style", style, spec.styles),
        response_format=_check_response_format(spec, request.response_format),
        output_format=output_format,
        output_compression=_check_compression(spec, request),
        background=_check_background(spec, request),
        moderation=_check_choice(spec, "moderation", moderation, spec.moderations),
        safety_identifier=request.safety_identifier or request.user or None,
        complexity=_check_choice(spec, "complexity", request.complexity, spec.complexities),
        frame_count=_only_with(spec, "frame_count", request.frame_count, output_format, "gif"),
        frame_duration_ms=_only_with(spec, "frame_duration_ms", request.frame_duration_ms, output_format, "gif"),
        svg=_only_with(spec, "svg", request.svg, output_format, "svg"),
        inputs=inputs,
        stream=stream,
        partial_images=partials,
    )


def _check_follows(spec: ModelSpec, size: str | None, first: Picture) -> tuple[str, int, int]:
    """A model whose output has the input's size: size omitted, 'auto' or exactly the input's."""
    own = f"{first.width}x{first.height}"
    if size not in (None, "auto", own):
        raise _invalid(spec, "size", f"'{size}' is not supported: this model answers at the input image's size; omit size or send '{own}'")
    return own, first.width, first.height


def _invalid(spec: ModelSpec, param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}' for model '{spec.id}': {problem}.", param=param)


def _check_stream(spec: ModelSpec, request: ImageOptions, output_format: str) -> tuple[bool, int]:
    """(stream, partial_images): partial images only with streaming, and no streaming of GIF or SVG output (the SDK:
    they "cannot use streaming, partial images")."""
    stream = bool(request.stream)
    if request.partial_images is not None and not stream:
        raise _invalid(spec, "partial_images", "partial images need streaming; send 'stream': true with it, or omit it")
    if stream and output_format in ("gif", "svg"):
        raise _invalid(
            spec, "stream", f"output_format '{output_format}' cannot be streamed; omit 'stream' or ask for another output_format"
        )
    return stream, request.partial_images or 0


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


def _check_size(spec: ModelSpec, size: str | None, *, default: str | None = None) -> tuple[str, int, int]:
    size = size or default or spec.default_size
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


def _check_compression(spec: ModelSpec, request: ImageOptions) -> int | None:
    if request.output_compression is None:
        return None
    if not spec.supports_compression:
        raise _invalid(spec, "output_compression", "'output_compression' is not supported by this model; omit it")
    if request.output_format not in ("jpeg", "webp"):
        raise _invalid(spec, "output_compression", "it applies only to output_format 'jpeg' or 'webp'")
    return request.output_compression


def _check_background(spec: ModelSpec, request: ImageOptions) -> str | None:
    background = _check_choice(spec, "background", request.background, spec.backgrounds)
    if background == "transparent" and (request.output_format or "png") not in ("png", "webp"):
        raise _invalid(spec, "background", "'transparent' needs output_format 'png' or 'webp'")
    return background
