"""The request model: both spellings, unknown fields refused, types strict, blank prompt refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagegen.errors import InvalidRequestError
from imagegen.options import Image, ImageGenerationRequest, ImagesResponse
from imagegen.planning import plan
from imagegen.specs import catalog


def test_camel_case_and_snake_case_are_the_same_field() -> None:
    camel = ImageGenerationRequest.model_validate({"prompt": "x", "responseFormat": "b64_json", "outputFormat": "webp"})
    snake = ImageGenerationRequest.model_validate({"prompt": "x", "response_format": "b64_json", "output_format": "webp"})
    assert camel == snake
    assert camel.response_format == "b64_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "reponseFormat": "url"}, "reponseFormat"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "n": "2"}, "n"),
        ({"prompt": "x", "n": True}, "n"),
        ({"prompt": "x", "n": 1.5}, "n"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "quality": "ultra"}, "quality"),
        ({"prompt": "x", "style": "retro"}, "style"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x", "user": "u" * 257}, "user"),
        ({"prompt": "x", "output_compression": 101}, "output_compression"),
        ({"prompt": "x", "safety_identifier": "s" * 257}, "safety_identifier"),
        ({"prompt": "x", "complexity": "extreme"}, "complexity"),
        ({"prompt": "x", "quality": "maximum"}, "quality"),
        ({"prompt": "x", "output_format": "bmp"}, "output_format"),
        # image_generate_params.py: 2 through 16 frames; partial images 0-3.
        ({"prompt": "x", "frame_count": 1}, "frame_count"),
        ({"prompt": "x", "frame_count": 17}, "frame_count"),
        ({"prompt": "x", "frame_count": "4"}, "frame_count"),
        ({"prompt": "x", "frame_duration_ms": -10}, "frame_duration_ms"),
        ({"prompt": "x", "partial_images": 4}, "partial_images"),
        ({"prompt": "x", "svg": {"reasoning": {"effort": "low"}}}, "svg.model"),  # svg.model is required
        ({"prompt": "x", "svg": {"model": "m", "reasoning": {"effort": "huge"}}}, "svg.reasoning.effort"),
        ({"prompt": "x", "svg": {"model": "m", "colour": "red"}}, "svg.colour"),
        ({}, "prompt"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ImageGenerationRequest.model_validate(body)
    assert ".".join(map(str, caught.value.errors()[0]["loc"])) == field


def test_response_omits_absent_fields_like_openai() -> None:
    response = ImagesResponse(created=1, data=[Image(url="https://x"), Image(b64_json="QUJD", revised_prompt="r")])
    assert response.model_dump(mode="json") == {"created": 1, "data": [{"url": "https://x"}, {"b64_json": "QUJD", "revised_prompt": "r"}]}


@pytest.mark.parametrize("size", ["7x7", "1x4096", "64x64", "99999x1"])
def test_any_width_x_height_has_the_size_shape_and_is_left_to_the_models_rules(size: str) -> None:
    assert ImageGenerationRequest.model_validate({"prompt": "x", "size": size}).size == size


@pytest.mark.parametrize("size", ["0x0", "07x7", "7x", "x7", "7X7", "100000x1", "-1x1", " 7x7"])
def test_what_is_not_width_x_height_is_refused_by_its_shape(size: str) -> None:
    with pytest.raises(ValidationError, match="WIDTHxHEIGHT"):
        ImageGenerationRequest.model_validate({"prompt": "x", "size": size})


def test_a_tiny_size_is_refused_by_the_models_rule_naming_its_sizes() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(catalog()["local"], ImageGenerationRequest(prompt="x", size="7x7"))
    assert caught.value.param == "size" and "'256x256'" in caught.value.message
    custom = catalog()["gpt-image-2"]
    assert custom.custom_sizes is not None  # takes WIDTHxHEIGHT within its rule
    with pytest.raises(InvalidRequestError) as caught:
        plan(custom, ImageGenerationRequest(prompt="x", size="16x16"))
    assert caught.value.param == "size"
