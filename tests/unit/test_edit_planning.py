"""imagegen.planning for edits and variations: plan_edit, plan_variation, check_input_count and check_picture against
the catalog's input rules, with pictures recognised by imagegen.pictures.inspect. Every refusal is a 400 naming its
param (in the field and the message)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image as PILImage

from imagegen.errors import InvalidRequestError
from imagegen.options import ImageEditOptions, ImageGenerationRequest, ImageVariationOptions
from imagegen.pictures import Picture, inspect
from imagegen.planning import InputPictures, check_input_count, check_picture, plan, plan_edit, plan_variation
from imagegen.specs import InputRule, ModelSpec, catalog

LOCAL = catalog()["local"]
GPT2 = catalog()["gpt-image-2"]
SUNBURST = catalog()["gpt-image-2.5-sunburst"]
MINI = catalog()["gpt-image-1-mini"]
NOVA = catalog()["amazon.nova-canvas-v1:0"]


def encoded(size: tuple[int, int], mode: str = "RGB", image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, size, (120, 30, 200, 0)[: len(mode)] if mode != "P" else 0).save(buffer, format=image_format)
    return buffer.getvalue()


def pic(size: tuple[int, int] = (64, 48), mode: str = "RGB", image_format: str = "PNG", param: str = "image") -> Picture:
    return inspect(encoded(size, mode, image_format), param=param)


def mask(size: tuple[int, int] = (64, 48), mode: str = "RGBA", image_format: str = "PNG") -> Picture:
    return inspect(encoded(size, mode, image_format), param="mask")


def options(**fields: Any) -> ImageEditOptions:
    return ImageEditOptions.model_validate({"prompt": "make it blue", **fields})


def refused(named: str, call: Any, *args: Any, **kwargs: Any) -> InvalidRequestError:
    """``call`` raises a 400 whose param is ``named``, and whose message names it too."""
    with pytest.raises(InvalidRequestError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.status_code == 400
    assert error.param == named, error
    assert f"'{named}'" in str(error), error
    return error


def with_edits(spec: ModelSpec, **rule: Any) -> ModelSpec:
    assert spec.edits is not None
    return spec.model_copy(update={"edits": spec.edits.model_copy(update=rule)})


# --- sizes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, "auto", "64x48"])
def test_output_follows_the_input_size(size) -> None:
    plan = plan_edit(LOCAL, options(size=size), InputPictures(images=(pic(),)))
    assert (plan.size, plan.width, plan.height, plan.operation) == ("64x48", 64, 48, "edit")


def test_output_follows_the_first_input_not_a_later_one() -> None:
    plan = plan_edit(LOCAL, options(), InputPictures(images=(pic((40, 30)), pic((64, 64)))))
    assert (plan.width, plan.height) == (40, 30)


def test_another_size_is_refused_naming_the_input_size() -> None:
    error = refused("size", plan_edit, LOCAL, options(size="1024x1024"), InputPictures(images=(pic(),)))
    assert "'64x48'" in str(error)


def test_a_model_that_does_not_follow_the_input_takes_its_own_sizes() -> None:
    plan = plan_edit(GPT2, options(), InputPictures(images=(pic(),)))
    assert plan.size == "auto"  # an edit's default where the model has auto
    assert plan_edit(GPT2, options(size="1536x1024"), InputPictures(images=(pic(),))).size == "1536x1024"
    refused("size", plan_edit, GPT2, options(size="64x48"), InputPictures(images=(pic(),)))


def test_a_variation_follows_its_input() -> None:
    plan = plan_variation(LOCAL, ImageVariationOptions(n=2), pic((32, 32)))
    assert (plan.operation, plan.size, plan.n, plan.prompt, plan.inputs is not None) == ("variation", "32x32", 2, "", True)
    refused("size", plan_variation, LOCAL, ImageVariationOptions(size="256x256"), pic((32, 32)))


def test_a_variation_picture_is_checked_against_the_variation_rule() -> None:
    refused("image", plan_variation, LOCAL, ImageVariationOptions(), pic(image_format="GIF", mode="P"))
    refused("image", plan_variation, NOVA, ImageVariationOptions(), pic((100, 100)))  # Nova: sides of 320 or more


# --- count ----------------------------------------------------------------------------------------------------------


def test_check_input_count() -> None:
    rule = LOCAL.edits
    assert rule is not None
    check_input_count(LOCAL, rule, 16, param="image")
    error = refused("image", check_input_count, LOCAL, rule, 17, param="image")
    assert "17 images" in str(error) and "at most 16" in str(error)
    refused("images", check_input_count, LOCAL, rule, 17, param="images", has_mask=True)


def test_max_images_with_mask() -> None:
    rule = NOVA.edits
    assert rule is not None and rule.max_images_with_mask == 1 and rule.max_images > 1
    check_input_count(NOVA, rule, rule.max_images, param="image")
    check_input_count(NOVA, rule, 1, param="image", has_mask=True)
    error = refused("image", check_input_count, NOVA, rule, 2, param="image", has_mask=True)
    assert "with a mask" in str(error) and "at most 1" in str(error)
    big = pic((512, 512))
    refused("image", plan_edit, NOVA, options(), InputPictures(images=(big, big), mask=mask((512, 512))))


def test_plan_edit_checks_the_count_too() -> None:
    many = (pic(),) * 17
    refused("image", plan_edit, LOCAL, options(), InputPictures(images=many))


# --- each picture ---------------------------------------------------------------------------------------------------


def rule(**fields: Any) -> InputRule:
    return InputRule(**fields)


@pytest.mark.parametrize(
    ("input_rule", "picture", "words"),
    [
        pytest.param(rule(), pic(image_format="GIF", mode="P"), "GIF image is not supported", id="format"),
        pytest.param(rule(formats=("png",)), pic(image_format="JPEG"), "send PNG", id="jpeg where only png"),
        pytest.param(rule(max_image_bytes=50), pic(), "the maximum is 50", id="bytes"),
        pytest.param(rule(min_edge=320), pic((400, 100)), "320 to", id="short side"),
        pytest.param(rule(max_edge=100), pic((101, 20)), "to 100 pixels", id="long side"),
        pytest.param(rule(max_pixels=1000), pic((40, 30)), "above the model's 1000 pixels", id="pixels"),
        pytest.param(rule(square=True), pic((40, 30)), "must be square", id="square"),
    ],
)
def test_check_picture_refusals(input_rule, picture, words) -> None:
    error = refused("image[3]", check_picture, LOCAL, input_rule, picture, param="image[3]")
    assert words in str(error) and "'local'" in str(error)


def test_check_picture_accepts_what_the_rule_allows() -> None:
    check_picture(LOCAL, rule(formats=("png", "gif"), square=True, max_pixels=4096, min_edge=64), pic((64, 64)), param="image")
    check_picture(LOCAL, rule(), pic(image_format="WEBP"), param="image")


def test_plan_edit_names_each_image_as_sent() -> None:
    gif = pic(image_format="GIF", mode="P")
    refused("image", plan_edit, LOCAL, options(), InputPictures(images=(gif,)))
    refused("image[1]", plan_edit, LOCAL, options(), InputPictures(images=(pic(), gif)))
    json_names = ("images[0].image_url", "images[1].image_url")
    refused("images[1].image_url", plan_edit, LOCAL, options(), InputPictures(images=(pic(), gif), params=json_names))


# --- mask and markup ------------------------------------------------------------------------------------------------


def test_a_mask_is_kept_in_the_plan() -> None:
    overlay = mask()
    plan = plan_edit(LOCAL, options(), InputPictures(images=(pic(), pic((10, 10))), mask=overlay))
    assert plan.inputs is not None and plan.inputs.mask is overlay


@pytest.mark.parametrize(
    ("overlay", "words"),
    [
        pytest.param(mask((32, 48)), "it must have the first image's size, 64x48", id="another size"),
        pytest.param(mask(mode="RGB"), "alpha channel", id="no alpha"),
        pytest.param(mask(mode="RGB", image_format="JPEG"), "must be a PNG", id="jpeg"),
        pytest.param(mask(mode="RGBA", image_format="WEBP"), "must be a PNG", id="webp with alpha"),
    ],
)
def test_mask_refusals(overlay, words) -> None:
    error = refused("mask", plan_edit, LOCAL, options(), InputPictures(images=(pic(),), mask=overlay))
    assert words in str(error)


def test_a_mask_above_its_bytes_is_refused() -> None:
    refused("mask", plan_edit, with_edits(LOCAL, mask_max_bytes=20), options(), InputPictures(images=(pic(),), mask=mask()))


def test_a_mask_where_the_rule_has_none() -> None:
    error = refused("mask", plan_edit, with_edits(LOCAL, mask=False), options(), InputPictures(images=(pic(),), mask=mask()))
    assert "not supported by this model" in str(error)


def test_markup_only_where_the_rule_allows_it() -> None:
    assert SUNBURST.edits is not None and SUNBURST.edits.markup and GPT2.edits is not None and not GPT2.edits.markup
    overlay = mask()
    plan = plan_edit(SUNBURST, options(), InputPictures(images=(pic(),), markup=overlay))
    assert plan.inputs is not None and plan.inputs.markup is overlay
    error = refused("markup", plan_edit, GPT2, options(), InputPictures(images=(pic(),), markup=overlay))
    assert "not supported by this model" in str(error)
    refused("markup", plan_edit, SUNBURST, options(), InputPictures(images=(pic(),), markup=mask((10, 10))))
    refused("markup", plan_edit, SUNBURST, options(), InputPictures(images=(pic(),), markup=mask(mode="RGB")))


def test_markup_with_a_mask_is_refused() -> None:
    error = refused("markup", plan_edit, SUNBURST, options(), InputPictures(images=(pic(),), mask=mask(), markup=mask()))
    assert "cannot be combined with 'mask'" in str(error)


def test_gif_output_with_a_mask_is_refused() -> None:
    document = GPT2.model_dump()
    document.update(id="gpt-image-gif-test", output_formats=["png", "gif"], gif={})
    gif_model = ModelSpec.model_validate(document)
    plan = plan_edit(gif_model, options(output_format="gif"), InputPictures(images=(pic(),)))
    assert plan.output_format == "gif" and plan.frames == 9
    error = refused("mask", plan_edit, gif_model, options(output_format="gif"), InputPictures(images=(pic(),), mask=mask()))
    assert "'gif'" in str(error)


# --- input_fidelity -------------------------------------------------------------------------------------------------


def test_input_fidelity() -> None:
    assert plan_edit(LOCAL, options(input_fidelity="high"), InputPictures(images=(pic(),))).input_fidelity == "high"
    assert plan_edit(MINI, options(input_fidelity="low"), InputPictures(images=(pic(),))).input_fidelity == "low"
    assert plan_edit(GPT2, options(), InputPictures(images=(pic(),))).input_fidelity is None
    error = refused("input_fidelity", plan_edit, GPT2, options(input_fidelity="high"), InputPictures(images=(pic(),)))
    assert "not supported by this model" in str(error)
    error = refused("input_fidelity", plan_edit, MINI, options(input_fidelity="high"), InputPictures(images=(pic(),)))
    assert "'low'" in str(error)


def test_the_edit_bytes_bound_is_the_input_rule_s() -> None:
    plan = plan_edit(LOCAL, options(), InputPictures(images=(pic((100, 100)),)))
    assert plan.max_image_bytes == int(4.05 * 100 * 100) + LOCAL.image_overhead_bytes


EDIT_ONLY = [spec.id for spec in catalog().specs if not spec.generations]


def test_the_catalog_marks_stabilitys_image_services_edit_only() -> None:
    assert {model_id for model_id in EDIT_ONLY if model_id.startswith("stability.stable-image-")} >= {
        "stability.stable-image-inpaint-v1:0",
        "stability.stable-image-control-structure-v1:0",
        "stability.stable-image-control-sketch-v1:0",
        "stability.stable-image-style-guide-v1:0",
    }
    assert all(catalog()[model_id].edits is not None for model_id in EDIT_ONLY)  # an edit-only model edits


@pytest.mark.parametrize("model_id", EDIT_ONLY)
def test_a_generation_naming_an_edit_only_model_is_refused_at_planning(model_id: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(catalog()[model_id], ImageGenerationRequest(prompt="a lighthouse"))
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (400, "unsupported_operation", "model")
    assert "/v1/images/edits" in caught.value.message
