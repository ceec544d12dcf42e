"""The service with in-memory fakes: keys, metadata, url vs b64, the 6 MB guard, all-or-nothing storage."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest

from imagegen.deadline import Deadline
from imagegen.errors import PayloadTooLargeError, ProviderError, StorageError
from imagegen.models import build_registry
from imagegen.options import ImageGenerationRequest
from imagegen.providers.base import ProviderImage, ProviderResult
from imagegen.providers.local import LocalProvider, draw
from imagegen.service import ImageService, sniff_format
from imagegen.settings import Settings
from tests.fakes.memory_store import InMemoryStore

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


class FixedProvider:
    def __init__(self, result: ProviderResult) -> None:
        self.result = result

    def generate(self, plan, deadline):
        return self.result


def make_service(provider=None, store=None, openai: bool = False) -> ImageService:
    return ImageService(
        registry=build_registry(openai_enabled=openai, default_model=None),
        provider_for=lambda name: provider or LocalProvider(),
        store=store or InMemoryStore(),
        settings=Settings(IMAGES_BUCKET="bucket", PRESIGN_TTL_SECONDS=900),
        clock=lambda: NOW,
    )


def generate(service: ImageService, **fields):
    request = ImageGenerationRequest.model_validate({"prompt": "a fox", **fields})
    return service.generate(request, request_id="req/1", deadline=Deadline.after(10))


def test_url_answer_stores_every_image_under_dated_request_keys() -> None:
    store = InMemoryStore()
    response = generate(make_service(store=store), n=2, size="256x256")
    assert sorted(store.objects) == ["images/2026/11/25/req-1/0.png", "images/2026/11/25/req-1/1.png"]
    assert [image.url for image in response.data] == [
        "https://bucket.example/images/2026/11/25/req-1/0.png?ttl=900",
        "https://bucket.example/images/2026/11/25/req-1/1.png?ttl=900",
    ]
    assert response.created == int(NOW.timestamp())


def test_metadata_has_no_raw_prompt() -> None:
    store = InMemoryStore()
    generate(make_service(store=store), size="256x256", user="end-user-7")
    (_, content_type, metadata), *_ = store.objects.values()
    assert content_type == "image/png"
    assert set(metadata) == {"request-id", "model", "size", "prompt-sha256"}
    assert "a fox" not in str(metadata) and "end-user-7" not in str(metadata)
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["prompt-sha256"])


def test_b64_answer_is_the_stored_bytes() -> None:
    store = InMemoryStore()
    response = generate(make_service(store=store), size="256x256", response_format="b64_json")
    (stored, _, _), *_ = store.objects.values()
    assert base64.b64decode(response.data[0].b64_json) == stored == draw("a fox", 256, 256, 0)


def test_b64_past_the_lambda_limit_is_413_and_stores_nothing() -> None:
    big = draw("x", 256, 256) + b"\0" * (5 * 1024 * 1024)
    store = InMemoryStore()
    service = make_service(provider=FixedProvider(ProviderResult((ProviderImage(big),))), store=store)
    with pytest.raises(PayloadTooLargeError) as caught:
        generate(service, size="256x256", response_format="b64_json")
    assert caught.value.status_code == 413 and caught.value.param == "response_format"
    assert "'url'" in caught.value.message
    assert store.objects == {}


def test_same_image_as_url_is_fine() -> None:
    big = draw("x", 256, 256) + b"\0" * (5 * 1024 * 1024)
    service = make_service(provider=FixedProvider(ProviderResult((ProviderImage(big),))))
    assert generate(service, size="256x256").data[0].url


def test_storage_failure_surfaces_as_storage_error() -> None:
    with pytest.raises(StorageError):
        generate(make_service(store=InMemoryStore(fail_on_index=1)), n=2, size="256x256")


def test_revised_prompt_and_usage_are_passed_through() -> None:
    png = draw("x", 256, 256)
    result = ProviderResult((ProviderImage(png, "a fox, watercolor"),), usage={"input_tokens": 5, "output_tokens": 10, "total_tokens": 15})
    response = generate(make_service(provider=FixedProvider(result)), size="256x256")
    assert response.data[0].revised_prompt == "a fox, watercolor"
    assert response.usage is not None and response.usage.total_tokens == 15


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n...", ("png", "image/png")),
        (b"\xff\xd8\xff\xe0..", ("jpeg", "image/jpeg")),
        (b"RIFF\0\0\0\0WEBPVP8 ", ("webp", "image/webp")),
    ],
)
def test_sniff_format(data: bytes, expected: tuple[str, str]) -> None:
    assert sniff_format(data) == expected


def test_non_image_bytes_from_a_provider_are_502() -> None:
    with pytest.raises(ProviderError):
        sniff_format(b"<html>")
