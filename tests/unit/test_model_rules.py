"""Per-model rules, pinned one row per rule (numbers from the OpenAI Images API reference)."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen import planning
from imagegen.errors import InvalidRequestError, ModelNotFoundError
from imagegen.options import ImageGenerationRequest
from imagegen.registry import build_registry
from imagegen.specs import CustomSizeRule, azure_models, catalog, catalog_spec

LOCAL_MODEL = catalog()["local"]
REGISTRY = build_registry(openai_enabled=True, default_model=None)


def plan(**fields: Any):
    """The rules of a catalog entry, retired ones included (the registry refuses those before planning)."""
    request = ImageGenerationRequest(**{"prompt": "a cat", **fields})
    spec = catalog_spec(request.model or REGISTRY.default_model)
    assert spec is not None
    return planning.plan(spec, request)


ACCEPTED = [
    ("dall-e-2", {"size": "256x256", "n": 10}),
    ("dall-e-2", {"size": "512x512", "quality": "standard"}),
    ("dall-e-2", {"prompt": "p" * 1000}),
    ("dall-e-3", {"size": "1792x1024", "quality": "hd", "style": "natural"}),
    ("dall-e-3", {"size": "1024x1792", "style": "vivid", "n": 1}),
    ("dall-e-3", {"prompt": "p" * 4000}),
    ("gpt-image-1", {"size": "1536x1024", "quality": "low", "n": 10, "output_format": "webp", "output_compression": 50}),
    ("gpt-image-1", {"size": "auto", "background": "transparent", "moderation": "low"}),
    ("gpt-image-1", {"response_format": "b64_json"}),  # what it answers anyway: accepted, unlike OpenAI
    ("gpt-image-1", {"response_format": "url"}),  # every image is in S3: served as a presigned URL, unlike OpenAI
    ("gpt-image-2", {"response_format": "url", "size": "3840x2160"}),
    ("gpt-image-1-mini", {"size": "1024x1536", "quality": "auto"}),
    ("gpt-image-1.5", {"prompt": "p" * 32000, "output_format": "jpeg", "background": "opaque"}),
    ("gpt-image-2", {"size": "2048x1152"}),
    ("gpt-image-2", {"size": "3840x2160"}),
    ("gpt-image-2", {"size": "1024x3072"}),
    ("local", {"size": "256x256", "n": 10, "style": "vivid", "quality": "hd", "response_format": "b64_json"}),
    # Transparent backgrounds on gpt-image-2 are a preview (image_generate_params.py): passed through.
    ("gpt-image-2", {"background": "transparent", "output_format": "webp"}),
    ("gpt-image-2.5-sunburst", {"quality": "xhigh", "size": "2560x1440", "complexity": "high"}),
    ("gpt-image-2.5-flare-2026-09-08", {"quality": "max", "background": "transparent"}),
    ("gpt-image-2.6-flare", {"complexity": "low", "quality": "high"}),
    ("gpt-image-2.6-sunburst", {"size": "auto", "n": 10}),
    ("chatgpt-image-latest", {"size": "1536x1024", "complexity": "medium"}),
    ("gpt-image-2-2026-04-21", {"size": "1536x864"}),
]

REJECTED = [
    # (model, fields, param, text that must be in the message)
    ("dall-e-2", {"size": "1792x1024"}, "size", "'256x256', '512x512', '1024x1024'"),
    ("dall-e-2", {"quality": "hd"}, "quality", "'standard'"),
    ("dall-e-2", {"style": "vivid"}, "style", "not supported"),
    ("dall-e-2", {"prompt": "p" * 1001}, "prompt", "1000"),
    ("dall-e-2", {"output_format": "png"}, "output_format", "not supported"),
    ("dall-e-3", {"n": 2}, "n", "only n=1"),
    ("dall-e-3", {"size": "256x256"}, "size", "'1024x1024', '1792x1024', '1024x1792'"),
    ("dall-e-3", {"size": "auto"}, "size", "'1024x1024'"),
    ("dall-e-3", {"quality": "high"}, "quality", "'standard', 'hd'"),
    ("dall-e-3", {"prompt": "p" * 4001}, "prompt", "4000"),
    ("dall-e-3", {"background": "opaque"}, "background", "not supported"),
    ("gpt-image-1", {"style": "vivid"}, "style", "not supported"),
    ("gpt-image-1", {"size": "1792x1024"}, "size", "'1536x1024'"),
    ("gpt-image-1", {"size": "512x512"}, "size", "'1024x1024'"),
    ("gpt-image-1", {"prompt": "p" * 32001}, "prompt", None),  # caught by the request model for every model
    ("gpt-image-1", {"output_compression": 50}, "output_compression", "'jpeg' or 'webp'"),
    ("gpt-image-1", {"output_compression": 50, "output_format": "png"}, "output_compression", "'jpeg' or 'webp'"),
    ("gpt-image-1", {"background": "transparent", "output_format": "jpeg"}, "background", "'png' or 'webp'"),
    ("gpt-image-1-mini", {"quality": "ultra"}, "quality", None),  # not in the literal set at all
    ("gpt-image-2", {"size": "1000x1000"}, "size", "multiples of 16"),
    ("gpt-image-2", {"size": "4096x1024"}, "size", "at most 3840"),
    ("gpt-image-2", {"size": "3072x960"}, "size", "aspect ratio"),
    ("gpt-image-2", {"size": "512x512"}, "size", "pixels"),
    ("gpt-image-2", {"background": "transparent", "output_format": "jpeg"}, "background", "'png' or 'webp'"),
    # xhigh/max: the 2.5 models only.
    ("gpt-image-2.6-sunburst", {"quality": "xhigh"}, "quality", "'low', 'medium', 'high', 'auto'"),
    ("gpt-image-2", {"quality": "max"}, "quality", "'low', 'medium', 'high', 'auto'"),
    ("gpt-image-1.5", {"quality": "xhigh"}, "quality", "'low', 'medium', 'high', 'auto'"),
    # Free-form sizes: gpt-image-2 and the 2.5 models, not 2.6 or chatgpt-image-latest.
    ("gpt-image-2.6-flare", {"size": "1536x864"}, "size", "'1024x1024', '1536x1024', '1024x1536', 'auto'"),
    ("chatgpt-image-latest", {"size": "2048x1152"}, "size", "'1536x1024'"),
    ("gpt-image-1.5", {"complexity": "high"}, "complexity", "not supported"),
    ("dall-e-3", {"complexity": "high"}, "complexity", "not supported"),
    ("local", {"complexity": "low"}, "complexity", "not supported"),
    ("local", {"output_format": "jpeg"}, "output_format", "'png'"),
    ("local", {"size": "640x480"}, "size", "allowed sizes"),
]


@pytest.mark.parametrize(("model", "fields"), ACCEPTED)
def test_accepted(model: str, fields: dict[str, Any]) -> None:
    result = plan(model=model, **fields)
    assert result.model.id == model
    assert result.n == fields.get("n", 1)


@pytest.mark.parametrize(("model", "fields", "param", "text"), REJECTED)
def test_rejected_names_the_field_and_the_allowed_values(model: str, fields: dict[str, Any], param: str, text: str | None) -> None:
    with pytest.raises((InvalidRequestError, ValueError)) as caught:
        plan(model=model, **fields)
    if isinstance(caught.value, InvalidRequestError):
        assert caught.value.param == param
        assert caught.value.status_code == 400
        assert model in caught.value.message
        assert text is not None and text in caught.value.message
    else:  # pydantic's ValidationError: rejected before any model applies
        assert text is None
        assert param in str(caught.value)


def test_defaults_follow_the_model() -> None:
    dalle3 = plan(model="dall-e-3")
    assert (dalle3.size, dalle3.n, dalle3.response_format, dalle3.quality) == ("1024x1024", 1, "url", None)
    gpt = plan(model="gpt-image-1")
    assert gpt.response_format == "b64_json"  # OpenAI's answer for GPT image models, what SDK users read
    assert gpt.output_format == "png"


def test_every_model_serves_url() -> None:
    specs = (*catalog().specs, *azure_models({"gpt-image-1": "img"}))
    assert [spec.id for spec in specs if "url" not in spec.response_formats] == []
    assert {spec.id: spec.default_response_format for spec in specs if spec.default_response_format != "url"} == {
        "gpt-image-1": "b64_json",
        "gpt-image-1-mini": "b64_json",
        "gpt-image-1.5": "b64_json",
        "gpt-image-2": "b64_json",
        "gpt-image-2-2026-04-21": "b64_json",
        "gpt-image-2.5-sunburst": "b64_json",
        "gpt-image-2.5-sunburst-2026-09-08": "b64_json",
        "gpt-image-2.5-flare": "b64_json",
        "gpt-image-2.5-flare-2026-09-08": "b64_json",
        "gpt-image-2.6-sunburst": "b64_json",
        "gpt-image-2.6-flare": "b64_json",
        "chatgpt-image-latest": "b64_json",
        "azure/gpt-image-1": "b64_json",
    }


def test_seed_quality_maps_to_gpt_image_levels() -> None:
    assert plan(model="gpt-image-1", quality="standard").quality == "medium"
    assert plan(model="gpt-image-1", quality="hd").quality == "high"
    assert plan(model="dall-e-3", quality="hd").quality == "hd"


def test_auto_size_draws_the_models_auto_size() -> None:
    result = plan(model="gpt-image-1", size="auto")
    assert (result.size, result.width, result.height) == ("auto", 1024, 1024)


def test_unknown_model_is_404_listing_what_is_served() -> None:
    registry = build_registry(openai_enabled=False, default_model=None)
    with pytest.raises(ModelNotFoundError) as caught:
        registry.plan(ImageGenerationRequest(prompt="x", model="gpt-image-2.5-sunburst"))
    assert caught.value.status_code == 404
    assert caught.value.param == "model"
    assert "'local'" in caught.value.message


def test_default_model_is_local_without_a_provider_and_configurable() -> None:
    assert build_registry(openai_enabled=False, default_model=None).default_model == LOCAL_MODEL.id
    # A current model (DALL-E 2/3 and gpt-image-1 are shut down: openai-python types/image_model.py).
    assert build_registry(openai_enabled=True, default_model=None).default_model == "gpt-image-2.5-sunburst"
    assert build_registry(openai_enabled=True, default_model="gpt-image-1.5").default_model == "gpt-image-1.5"
    with pytest.raises(ValueError, match="not served"):
        build_registry(openai_enabled=False, default_model="dall-e-3")


@pytest.mark.parametrize(
    ("width", "height", "allowed"),
    [(1024, 1024, True), (3840, 2160, True), (2160, 3840, True), (1024, 640, True), (1008, 640, False), (3856, 1296, False)],
)
def test_custom_size_rule(width: int, height: int, allowed: bool) -> None:
    assert (CustomSizeRule().check(width, height) is None) is allowed
