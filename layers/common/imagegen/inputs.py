"""The input images of an edit or a variation: where each one comes from (an upload of a multipart form, an
``image_url`` to fetch, a key under ``inputs/`` of this deployment's bucket) and how it becomes a checked
:class:`~imagegen.pictures.Picture`, bounded in bytes before it is read whole."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagegen.deadline import Deadline
from imagegen.errors import InvalidRequestError
from imagegen.options import ImageEditRequest, ImageReference, ImageVariationRequest
from imagegen.planning import InputPictures
from imagegen.storage import ImageStore, StoredObject, input_key

if TYPE_CHECKING:
    from imagegen.pictures import Picture


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart form, as sent."""

    data: bytes
    filename: str | None = None


InputSource = Upload | ImageReference


@dataclass(frozen=True, slots=True)
class EditSources:
    """Where an edit's images come from (and a variation's one image, as ``images[0]``)."""

    images: tuple[InputSource, ...]
    mask: InputSource | None = None
    markup: InputSource | None = None
    # A variation's JSON names its one image 'image', not 'images[0]'.
    variation: bool = False

    @classmethod
    def of_edit(cls, request: ImageEditRequest) -> EditSources:
        return cls(images=tuple(request.images), mask=request.mask, markup=request.markup)

    @classmethod
    def of_variation(cls, request: ImageVariationRequest) -> EditSources:
        return cls(images=(request.image,), variation=True)

    def params(self, *, json_form: bool) -> tuple[list[str], str, str]:
        """The request field of each image, of the mask and of the markup, as the caller sent them."""
        if json_form:
            names = ["image.image_url"] if self.variation else [f"images[{index}].image_url" for index in range(len(self.images))]
            return names, "mask.image_url", "markup.image_url"
        names = ["image"] if len(self.images) == 1 else [f"image[{index}]" for index in range(len(self.images))]
        return names, "mask", "markup"


@dataclass(frozen=True, slots=True)
class InputReader:
    """Reads sources into pictures. ``trusted`` sources (queue messages, request objects, jobs the API queued) may
    name keys under ``inputs/``; an API caller may not (it could name another caller's inputs)."""

    store: ImageStore
    max_bytes: int
    # image_url over plain http to loopback (tests, `make local`).
    allow_loopback_urls: bool = False
    trusted: bool = False

    def read(self, source: InputSource, *, param: str, max_bytes: int, deadline: Deadline) -> Picture:
        from imagegen.pictures import inspect

        limit = min(max_bytes, self.max_bytes)
        if isinstance(source, Upload):
            if len(source.data) > limit:
                raise InvalidRequestError(
                    f"Invalid '{param}': the image is {len(source.data)} bytes, the maximum is {limit}.",
                    param=param,
                    code="image_too_large",
                )
            return inspect(source.data, param=param)
        if source.file_id is not None:
            file_param = param.replace("image_url", "file_id")
            raise InvalidRequestError(
                f"Invalid '{file_param}': this deployment has no Files API, so a 'file_id' cannot be used; send the image in "
                "the multipart form, or as an 'image_url' (https or a data: URL).",
                param=file_param,
                code="file_id_unsupported",
            )
        if source.key is not None:
            key_param = param.replace("image_url", "key")
            if not self.trusted:
                raise InvalidRequestError(
                    f"Invalid '{key_param}': keys of this deployment's bucket are for queue messages and request objects; "
                    "send an 'image_url' or the image itself.",
                    param=key_param,
                )
            return inspect(self.store.read_input(source.key, max_bytes=limit, param=key_param), param=key_param)
        assert source.image_url is not None  # ImageReference holds exactly one
        from imagegen.fetch import UrlPolicy, fetch_image  # only requests with an image_url pay for the import

        policy = UrlPolicy(allow_http_loopback=self.allow_loopback_urls)
        fetched = fetch_image(source.image_url, param=param, max_bytes=limit, deadline=deadline, policy=policy)
        return inspect(fetched.data, param=param)

    def read_all(self, sources: EditSources, *, max_bytes: int, mask_max_bytes: int, deadline: Deadline, json_form: bool) -> InputPictures:
        names, mask_param, markup_param = sources.params(json_form=json_form)
        images = tuple(
            self.read(source, param=name, max_bytes=max_bytes, deadline=deadline)
            for source, name in zip(sources.images, names, strict=True)
        )
        mask = None if sources.mask is None else self.read(sources.mask, param=mask_param, max_bytes=mask_max_bytes, deadline=deadline)
        markup = (
            None if sources.markup is None else self.read(sources.markup, param=markup_param, max_bytes=mask_max_bytes, deadline=deadline)
        )
        return InputPictures(images=images, mask=mask, markup=markup, params=tuple(names))


def input_objects(
    sources: EditSources, pictures: InputPictures, request_id: str, when: dt.datetime
) -> tuple[tuple[StoredObject, ...], tuple[str, ...]]:
    """The inputs to write under ``inputs/`` before the provider is called, and every input's key in order (images,
    then mask, then markup): a source already stored there (a key) is not written again."""
    named: list[tuple[InputSource, Picture, str]] = [
        (source, picture, f"image-{index}") for index, (source, picture) in enumerate(zip(sources.images, pictures.images, strict=True))
    ]
    for name, source, picture in (("mask", sources.mask, pictures.mask), ("markup", sources.markup, pictures.markup)):
        if source is not None and picture is not None:
            named.append((source, picture, name))
    objects: list[StoredObject] = []
    keys: list[str] = []
    for source, picture, name in named:
        if isinstance(source, ImageReference) and source.key is not None:
            keys.append(source.key)
            continue
        obj = StoredObject(input_key(request_id, name, picture.format, when), picture.data, picture.content_type)
        objects.append(obj)
        keys.append(obj.key)
    return tuple(objects), tuple(keys)


def stored_sources(keys: Sequence[str], sources: EditSources) -> EditSources:
    """``sources`` as keys of their stored copies (what an async job's message carries)."""
    refs = [ImageReference(key=key) for key in keys]
    images, rest = refs[: len(sources.images)], refs[len(sources.images) :]
    mask = rest.pop(0) if sources.mask is not None else None
    markup = rest.pop(0) if sources.markup is not None else None
    return EditSources(images=tuple(images), mask=mask, markup=markup)
