"""The model catalog as data (imagegen/catalog/*.json): read once, validated, in step with the installed SDK; the
lifecycle (retired models answer 404 model_retired naming the successor); every parameter of the SDK's
ImageGenerateParams either served or refused by name; safety_identifier; GIF and SVG rules."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import image_generate_params, image_model
from PIL import Image

from imagegen.errors import InvalidRequestError, ModelNotFoundError
from imagegen.options import ImageGenerationRequest
from imagegen.planning import plan
from imagegen.providers.openai import build_request_body
from imagegen.registry import ModelRegistry, build_registry
from imagegen.specs import AZURE_PREFIX, GifRule, azure_models, catalog, parse_catalog

SDK_MODELS = set(typing.get_args(image_model.ImageModel))
# openai-python types/image_model.py: "gpt-image-1" shut down on 2026-10-23, "dall-e-2"/"dall-e-3" retired 2026-05-12.
SDK_SHUT_DOWN = {"gpt-image-1": dt.date(2026, 10, 23), "dall-e-2": dt.date(2026, 5, 12), "dall-e-3": dt.date(2026, 5, 12)}
TODAY = dt.date(2026, 12, 2)


def test_the_catalog_is_read_once_per_container() -> None:
    assert catalog() is catalog()


def test_every_model_the_sdk_lists_is_in_the_catalog() -> None:
    assert set(catalog().of_ids("openai")) >= SDK_MODELS


def test_the_default_openai_model_is_a_current_one() -> None:
    default = catalog()[catalog().defaults["openai"]]
    assert default.id in SDK_MODELS and default.id not in SDK_SHUT_DOWN
    assert build_registry(openai_enabled=True, default_model=None).default_model == default.id


def _document(profiles: dict[str, Any] | None = None, **fields: Any) -> dict[str, str]:
    model = {"id": "m", "family": "gpt-image", "sizes": ["1024x1024"], "max_prompt_chars": 10, **fields}
    document = {"provider": "openai", "source": "test", "profiles": profiles or {}, "models": [model, {**model, "id": "next"}]}
    return {"x.json": json.dumps(document)}


def test_a_profile_may_build_on_another() -> None:
    profiles = {"base": {"max_n": 3, "styles": ["vivid"]}, "wide": {"profile": "base", "max_n": 4}}
    spec = parse_catalog(_document(profiles, profile="wide"))["m"]
    assert (spec.max_n, spec.styles) == (4, ("vivid",))
    with pytest.raises(ValueError, match="its own base: a -> b -> a"):
        parse_catalog(_document({"a": {"profile": "b"}, "b": {"profile": "a"}}, profile="a"))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"successor": "local"}, "a successor needs legacy_on or retired_on"),
        ({"retired_on": "2026-05-12", "lifecycle_unverified": True}, "never retired on an unverified date"),
        ({"extended_access_on": "2026-05-12"}, "extended access is part of the Legacy period"),
        ({"legacy_on": "2026-05-12", "end_of_life_on": "2026-01-01"}, "end_of_life_on (2026-01-01) comes before legacy_on"),
        ({"end_of_life_on": "2026-05-12", "retired_on": "2026-05-12"}, "give one"),
        ({"retired_on": "2026-05-12", "successor": "nowhere"}, "successor 'nowhere' is not in the catalog"),
        ({"profile": "missing"}, "no profile 'missing'"),
        ({"max_n": 11}, "less than or equal to 10"),
        ({"output_formats": ["png", "gif"], "bytes_per_pixel": {"png": 3.05, "gif": 1.5}}, "'gif' and a gif rule go together"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_a_bad_data_file_is_refused_naming_the_file(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="imagegen/catalog") as caught:
        parse_catalog(_document(**fields))
    assert problem in str(caught.value)


def _retired(model_id: str, on: dt.date, successor: str = "gpt-image-2.5-sunburst"):
    return catalog()[model_id].model_copy(update={"retired_on": on, "successor": successor})


@pytest.mark.parametrize(("model_id", "on"), sorted(SDK_SHUT_DOWN.items()))
def test_a_retired_model_is_404_model_retired_naming_the_day_and_the_successor(model_id: str, on: dt.date) -> None:
    registry = ModelRegistry([catalog()["gpt-image-2.5-sunburst"], _retired(model_id, on)], "gpt-image-2.5-sunburst", today=lambda: TODAY)
    with pytest.raises(ModelNotFoundError) as caught:
        registry.plan(ImageGenerationRequest(prompt="x", model=model_id))
    error = caught.value
    assert (error.status_code, error.code, error.param) == (404, "model_retired", "model")
    assert f"retired on {on:%Y-%m-%d}" in error.message and "'gpt-image-2.5-sunburst'" in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"
    # Not listed (GET /v1/models) once retired, still served the day before.
    assert [spec.id for spec in registry.models] == ["gpt-image-2.5-sunburst"]
    day_before = ModelRegistry(registry.models + (_retired(model_id, on),), "gpt-image-2.5-sunburst", today=lambda: on - dt.timedelta(1))
    assert day_before.plan(ImageGenerationRequest(prompt="x", model=model_id)).model.id == model_id


def test_a_retired_model_is_named_retired_even_where_its_provider_is_not_served() -> None:
    # A deployment without OpenAI (make local's): dall-e-3 is not "unknown", it is gone, and the answer says so
    registry = ModelRegistry([catalog()["local"]], "local", today=lambda: TODAY)
    with pytest.raises(ModelNotFoundError) as caught:
        registry.plan(ImageGenerationRequest.model_validate({"prompt": "a fox", "model": "dall-e-3"}))
    assert (caught.value.code, caught.value.param) == ("model_retired", "model")
    assert "retired on 2026-05-12" in caught.value.message
    # A model the catalog does not know, or one that is current but not served here, is still not found
    for model_id in ("dall-e-9", "gpt-image-2.5-sunburst"):
        with pytest.raises(ModelNotFoundError) as caught:
            registry.plan(ImageGenerationRequest.model_validate({"prompt": "a fox", "model": model_id}))
        assert caught.value.code == "model_not_found"


def test_a_retired_model_cannot_be_the_default() -> None:
    with pytest.raises(ValueError, match="retired"):
        ModelRegistry([_retired("dall-e-3", dt.date(2026, 5, 12))], "dall-e-3", today=lambda: TODAY)


def test_azure_keeps_serving_its_deployments_on_azures_own_schedule() -> None:
    (spec,) = azure_models({"dall-e-3": "my-dalle3"})
    assert (spec.id, spec.retired_on, spec.successor) == (AZURE_PREFIX + "dall-e-3", None, None)


# Every parameter of today's ImageGenerateParams, with a value to try on a current model.
SAMPLES: dict[str, Any] = {
    "prompt": "a fox",
    "background": "opaque",
    "complexity": "high",
    "frame_count": 4,
    "frame_duration_ms": 120,
    "model": "gpt-image-2.5-sunburst",
    "moderation": "low",
    "n": 2,
    "output_compression": 50,
    "output_format": "jpeg",
    "partial_images": 2,
    "quality": "xhigh",
    "response_format": "url",
    "safety_identifier": "user-hash",
    "size": "1536x864",
    "style": "vivid",
    "svg": {"model": "svg-author", "reasoning": {"effort": "low"}},
    "user": "legacy-user",
    "stream": True,
}
# Served by this deployment rather than sent upstream (we always ask OpenAI for base64 and store every image).
SERVED_HERE = {"response_format", "model", "stream"}
# Sent upstream under another name.
SENT_AS = {"user": "safety_identifier"}


def _sdk_parameters() -> set[str]:
    return set(image_generate_params.ImageGenerateParamsNonStreaming.__annotations__) | set(
        image_generate_params.ImageGenerateParamsStreaming.__annotations__
    )


def test_every_sdk_parameter_is_supported_or_refused_by_name() -> None:
    parameters = _sdk_parameters()
    assert parameters == set(SAMPLES), "a new SDK parameter: serve it or refuse it by name, and add it here"
    registry = build_registry(openai_enabled=True, default_model=None)
    for name in sorted(parameters):
        assert name in ImageGenerationRequest.model_fields, name  # never an unknown_parameter
        request = ImageGenerationRequest.model_validate({"prompt": "a fox", name: SAMPLES[name]})
        try:
            planned = registry.plan(request)
        except InvalidRequestError as error:
            assert error.param == name, (name, error.message)
            assert error.status_code == 400
            continue
        body = build_request_body(planned)
        assert name in SERVED_HERE or SENT_AS.get(name, name) in body, f"{name} is accepted but silently dropped"


def test_stream_plans_and_partial_images_need_it() -> None:
    # The core plans streams for every model (the HTTP API refuses them until its runtime streams: test_streaming.py)
    registry = build_registry(openai_enabled=True, default_model=None)
    planned = registry.plan(ImageGenerationRequest(prompt="x", stream=True, partial_images=2))
    assert (planned.stream, planned.partial_images) == (True, 2)
    with pytest.raises(InvalidRequestError) as caught:
        registry.plan(ImageGenerationRequest(prompt="x", partial_images=2))
    assert (caught.value.param, caught.value.code) == ("partial_images", "invalid_value")
    assert "need streaming" in caught.value.message
    assert registry.plan(ImageGenerationRequest(prompt="x", stream=False)).stream is False


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"safety_identifier": "s-1", "user": "u-1"}, "s-1"),  # a non-empty safety_identifier takes precedence
        ({"user": "u-1"}, "u-1"),  # user is used when safety_identifier is omitted
        ({"safety_identifier": "", "user": "u-1"}, "u-1"),  # ... or empty
        ({}, None),
    ],
)
def test_safety_identifier_goes_upstream_with_user_as_its_fallback(fields: dict[str, Any], expected: str | None) -> None:
    registry = build_registry(openai_enabled=True, default_model=None, azure_deployments={"gpt-image-1.5": "img"})
    openai = build_request_body(registry.plan(ImageGenerationRequest(prompt="x", model="gpt-image-2.6-flare", **fields)))
    assert openai.get("safety_identifier") == expected and "user" not in openai
    azure = build_request_body(registry.plan(ImageGenerationRequest(prompt="x", model="azure/gpt-image-1.5", **fields)), send_model=False)
    assert azure.get("user") == expected and "safety_identifier" not in azure


def test_complexity_and_xhigh_quality_are_sent_upstream() -> None:
    registry = build_registry(openai_enabled=True, default_model=None)
    body = build_request_body(
        registry.plan(ImageGenerationRequest(prompt="x", model="gpt-image-2.5-flare", complexity="low", quality="max"))
    )
    assert (body["complexity"], body["quality"]) == ("low", "max")


# GIF and SVG output (preview features): the rules, on a model whose catalog entry lists the formats.
ANIMATED = catalog()["gpt-image-2.5-sunburst"].model_copy(
    update={"output_formats": ("png", "jpeg", "webp", "gif", "svg"), "gif": GifRule()}
)


def _plan(**fields: Any):
    return plan(ANIMATED, ImageGenerationRequest.model_validate({"prompt": "x", **fields}))


def test_gif_frames_are_sent_and_planned_at_their_worst() -> None:
    gif = _plan(output_format="gif", frame_count=16, frame_duration_ms=120, size="1024x1024")
    body = build_request_body(gif)
    assert (body["output_format"], body["frame_count"], body["frame_duration_ms"]) == ("gif", 16, 120)
    assert gif.max_image_bytes == int(1.5 * 1024 * 1024 * 16) + ANIMATED.image_overhead_bytes
    assert _plan(output_format="gif").frames == 9  # the SDK's default frame count


def test_svg_options_are_sent() -> None:
    body = build_request_body(_plan(output_format="svg", svg={"model": "author", "reasoning": {"effort": "high"}}))
    assert (body["output_format"], body["svg"]) == ("svg", {"model": "author", "reasoning": {"effort": "high"}})


@pytest.mark.parametrize(
    ("fields", "param", "text"),
    [
        ({"frame_count": 4}, "frame_count", "applies only to output_format 'gif'"),
        ({"frame_duration_ms": 100, "output_format": "png"}, "frame_duration_ms", "applies only to output_format 'gif'"),
        ({"svg": {"model": "a"}, "output_format": "gif"}, "svg", "applies only to output_format 'svg'"),
        ({"output_format": "svg", "n": 2}, "n", "n must be 1"),
        ({"output_format": "gif", "output_compression": 50}, "output_compression", "'jpeg' or 'webp'"),
        ({"output_format": "svg", "output_compression": 50}, "output_compression", "'jpeg' or 'webp'"),
        ({"output_format": "gif", "background": "transparent"}, "background", "'png' or 'webp'"),
    ],
)
def test_gif_and_svg_rules_name_the_field(fields: dict[str, Any], param: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _plan(**fields)
    assert caught.value.param == param and text in caught.value.message


@pytest.mark.parametrize("model", ["local", "amazon.nova-canvas-v1:0", "stability.sd3-5-large-v1:0", "gpt-image-1.5"])
@pytest.mark.parametrize(
    ("fields", "param", "allowed"),
    [
        ({"output_format": "gif"}, "output_format", "'gif' is not supported; allowed values are"),
        ({"output_format": "svg"}, "output_format", "'svg' is not supported; allowed values are"),
        ({"frame_count": 4}, "frame_count", "no 'gif' output"),
        ({"svg": {"model": "a"}}, "svg", "no 'svg' output"),
    ],
)
def test_models_without_gif_or_svg_refuse_them_by_name(model: str, fields: dict[str, Any], param: str, allowed: str) -> None:
    registry = build_registry(openai_enabled=True, default_model=None, bedrock_enabled=True)
    with pytest.raises(InvalidRequestError) as caught:
        registry.plan(ImageGenerationRequest.model_validate({"prompt": "x", "model": model, **fields}))
    message = caught.value.message
    assert caught.value.param == param
    # Nova and Titan take no output_format at all.
    assert allowed in message or (param == "output_format" and "'output_format' is not supported by this model" in message)


def test_the_gif_bound_holds_for_noise_in_every_frame() -> None:
    """GIF's worst case per pixel of each frame (LZW at its widest codes), checked against Pillow's encoder on
    palette noise, a different noise in each frame so that no frame repeats another."""
    width, height, count = 256, 256, 4
    rng = random.Random(3)
    frames = [Image.frombytes("P", (width, height), rng.randbytes(width * height)) for _ in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=200, optimize=False)
    per_pixel = len(buffer.getvalue()) / (width * height * count)
    bounds = {spec.bytes_per_pixel.get("gif") for spec in catalog().specs if "gif" in spec.bytes_per_pixel}
    assert bounds and all(bound is not None and per_pixel <= bound for bound in bounds), (per_pixel, bounds)


FIELD_VALUES: dict[str, list[Any]] = {
    "model": [spec.id for spec in catalog().specs],
    "size": ["auto", "1024x1024", "1536x864", "4096x4096", "16x16", "1792x1024", "256x256"],
    "n": [1, 2, 5, 10],
    "quality": ["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"],
    "style": ["vivid", "natural"],
    "output_format": ["png", "jpeg", "webp", "gif", "svg"],
    "output_compression": [0, 50, 100],
    "background": ["transparent", "opaque", "auto"],
    "moderation": ["low", "auto"],
    "complexity": ["low", "medium", "high"],
    "frame_count": [2, 9, 16],
    "frame_duration_ms": [0, 200, 655_350, 2**31 - 1],
    "svg": [{"model": "author"}, {"model": "author", "reasoning": {"effort": "max"}}],
    "safety_identifier": ["", "s"],
    "user": ["u"],
    "stream": [False, True],
    "partial_images": [0, 3],
    "response_format": ["url", "b64_json"],
}


def test_every_combination_of_fields_plans_or_is_a_400_naming_a_field() -> None:
    """Any mix of today's fields on any catalog model (retired ones too, planned by their rules) and on one with GIF and
    SVG output: a plan whose body the OpenAI provider can build, or a 400 naming one of the fields sent; never another
    exception (a 500)."""
    body = st.fixed_dictionaries(
        {"prompt": st.just("a fox")}, optional={name: st.sampled_from(values) for name, values in FIELD_VALUES.items()}
    )

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(body)
    def check(fields: dict[str, Any]) -> None:
        request = ImageGenerationRequest.model_validate(fields)
        for spec in (catalog()[request.model or "local"], ANIMATED):
            try:
                planned = plan(spec, request)
            except InvalidRequestError as error:
                assert error.status_code == 400 and error.param in fields, (spec.id, fields, error.param)
                continue
            build_request_body(planned)
            assert planned.max_image_bytes > 0

    check()
