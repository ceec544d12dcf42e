"""The bodies of POST /v1/images/edits and /v1/images/variations -> options + input sources: a multipart form as the
SDKs send it (files ``image``/``image[]``, ``mask``, ``markup``), or JSON with the images by reference."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING or __package__:  # imported as functions.api.forms (tests, tools, mypy)
    from functions.api.multipart import FilePart, FormData, coerce_form_scalars, parse_form
else:  # in Lambda: a top-level module beside app.py
    from multipart import FilePart, FormData, coerce_form_scalars, parse_form
from imagegen.errors import InvalidRequestError, invalid_request_from
from imagegen.http import json_body, media_type
from imagegen.inputs import EditSources, Upload
from imagegen.options import ImageEditOptions, ImageEditRequest, ImageVariationOptions, ImageVariationRequest

M = TypeVar("M", bound=BaseModel)
_INT_FIELDS = frozenset({"n", "output_compression", "outputCompression", "partial_images", "partialImages", "frame_count"})
_INT_FIELDS |= frozenset({"frameCount", "frame_duration_ms", "frameDurationMs"})
_BOOL_FIELDS = frozenset({"stream"})
MULTIPART = "multipart/form-data"


def body_bytes(event: Mapping[str, Any]) -> bytes:
    """The raw body: API Gateway base64-encodes binary media types (multipart/form-data here)."""
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(body).encode("utf-8")
    try:
        return base64.b64decode(str(body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("The request body is not valid base64 as API Gateway sends it.", code="invalid_multipart") from exc


def read_edit(event: Mapping[str, Any]) -> tuple[ImageEditOptions, EditSources, bool]:
    """(options, sources, whether the images came by reference in JSON) of an edit request."""
    header, media = _content_type(event)
    if media == MULTIPART:
        form = parse_form(body_bytes(event), header)
        _only_files(form, allowed=("image", "mask", "markup"))
        images = form.files.get("image") or []
        if not images:
            raise InvalidRequestError(
                "Missing required parameter: 'image' (one or more image files).", param="image", code="missing_required_parameter"
            )
        options = _validate(ImageEditOptions, coerce_form_scalars(form.fields, _INT_FIELDS, _BOOL_FIELDS))
        sources = EditSources(
            images=tuple(_upload(part) for part in images),
            mask=_single(form.files, "mask"),
            markup=_single(form.files, "markup"),
        )
        return options, sources, False
    request = _validate_json(ImageEditRequest, event)
    return request, EditSources.of_edit(request), True


def read_variation(event: Mapping[str, Any]) -> tuple[ImageVariationOptions, EditSources, bool]:
    """(options, sources, whether the image came by reference in JSON) of a variation request."""
    header, media = _content_type(event)
    if media == MULTIPART:
        form = parse_form(body_bytes(event), header)
        _only_files(form, allowed=("image",))
        image = _single(form.files, "image")
        if image is None:
            raise InvalidRequestError(
                "Missing required parameter: 'image' (an image file).", param="image", code="missing_required_parameter"
            )
        options = _validate(ImageVariationOptions, coerce_form_scalars(form.fields, _INT_FIELDS, _BOOL_FIELDS))
        return options, EditSources(images=(image,)), False
    request = _validate_json(ImageVariationRequest, event)
    return request, EditSources.of_variation(request), True


def _content_type(event: Mapping[str, Any]) -> tuple[str, str]:
    name, media = media_type(event.get("headers"))
    header = str((event.get("headers") or {}).get(name, "")) if name is not None else ""
    return header, media


def _validate(model: type[M], fields: dict[str, object]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_request_from(exc.errors()) from exc


def _validate_json(model: type[M], event: Mapping[str, Any]) -> M:
    try:
        document = json_body(body_bytes(event).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError("We could not parse the JSON body of your request: send a JSON object.", code="invalid_json") from exc
    except RecursionError as exc:
        raise InvalidRequestError("The JSON body is nested too deeply.", code="invalid_json") from exc
    if not isinstance(document, dict):
        raise InvalidRequestError("The request body must be a JSON object, or a multipart/form-data form.", code="invalid_json")
    return _validate(model, document)


def _only_files(form: FormData, *, allowed: tuple[str, ...]) -> None:
    """Images are files: a text field of that name (a URL, say) is refused by name, as is an unknown file."""
    for name in allowed:
        if name in form.fields:
            raise InvalidRequestError(
                f"Invalid '{name}': send it as a file part of the form (or send JSON with an 'image_url').", param=name, code="invalid_type"
            )
    for name in form.files:
        if name not in allowed:
            raise InvalidRequestError(
                f"Unknown parameter: '{name}' (files may be {', '.join(repr(item) for item in allowed)}).",
                param=name,
                code="unknown_parameter",
            )


def _single(files: Mapping[str, list[FilePart]], name: str) -> Upload | None:
    parts = files.get(name) or []
    if len(parts) > 1:
        raise InvalidRequestError(f"Invalid '{name}': send one file, {len(parts)} were sent.", param=name)
    return _upload(parts[0]) if parts else None


def _upload(part: FilePart) -> Upload:
    return Upload(data=part.data, filename=part.filename)
