"""The service with in-memory fakes: keys, metadata, url vs b64, the 6 MB guard (before the provider is called),
all-or-nothing storage."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest

from imagegen import service as service_module
from imagegen.deadline import Deadline
from imagegen.errors import ModelNotFoundError, PayloadTooLargeError, ProviderError, StorageError
from imagegen.options import ImageGenerationRequest, StoredImage
from imagegen.providers.base import ProviderImage, ProviderResult, sniff_format
from imagegen.providers.local import LocalProvider, draw
from imagegen.registry import ModelRegistry, build_registry
from imagegen.service import ImageService
from imagegen.settings import LAMBDA_SYNC_RESPONSE_LIMIT, Settings
from imagegen.specs import catalog
from tests.fakes.memory_store import InMemoryStore as _InMemoryStore

NOW = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)


class InMemoryStore(_InMemoryStore):
    """The shared fake, taking the deadline ImageStore.put_all takes."""

    def put_all(self, objects, metadata, *, deadline=None) -> None:
        super().put_all(objects, metadata)


class FixedProvider:
    def __init__(self, result: ProviderResult) -> None:
        self.result = result
        self.calls = 0

    def generate(self, plan, deadline):
        self.calls += 1
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


def test_b64_that_cannot_fit_at_worst_is_413_before_the_provider_is_called() -> None:
    """1536x1024 PNG from a GPT image model: RGBA noise takes 6 MB, 8 MB in base64, above Lambda's 6 MB answer."""
    store = InMemoryStore()
    provider = FixedProvider(ProviderResult((ProviderImage(draw("x", 256, 256)),)))
    with pytest.raises(PayloadTooLargeError) as caught:
        generate(make_service(provider=provider, store=store, openai=True), model="gpt-image-1.5", size="1536x1024")
    error = caught.value
    assert (error.status_code, error.param, error.code) == (413, "response_format", "response_too_large")
    assert "'url'" in error.message and "6 MB" in error.message and "8.2 MB" in error.message and "4.05 bytes" in error.message
    assert provider.calls == 0 and store.objects == {}


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "gpt-image-1.5", "size": "auto"},  # "auto" may pick 1536x1024
        {"model": "gpt-image-1.5", "size": "1024x1024", "n": 2},
        {"model": "gpt-image-2.5-flare", "size": "2048x1152"},
    ],
)
def test_every_b64_request_is_planned_at_its_worst(fields) -> None:
    provider = FixedProvider(ProviderResult((ProviderImage(draw("x", 256, 256)),)))
    with pytest.raises(PayloadTooLargeError):
        generate(make_service(provider=provider, openai=True), **fields)
    assert provider.calls == 0


def test_the_same_request_as_url_is_served_for_gpt_image_models() -> None:
    images = tuple(ProviderImage(draw("x", 256, 256, seed)) for seed in range(2))
    service = make_service(provider=FixedProvider(ProviderResult(images)), openai=True)
    response = generate(service, model="gpt-image-1.5", size="1536x1024", n=2, response_format="url")
    assert [bool(item.url) and item.b64_json is None for item in response.data] == [True, True]


def test_plan_limit_is_the_callers(monkeypatch) -> None:
    service = make_service(openai=True)
    request = ImageGenerationRequest(prompt="x", model="gpt-image-1.5", size="1536x1024")
    with pytest.raises(PayloadTooLargeError):
        service.plan(request)
    assert service.plan(request, max_response_bytes=None).response_format == "b64_json"  # results to S3 only
    with pytest.raises(PayloadTooLargeError):
        service.plan(ImageGenerationRequest(prompt="x", model="gpt-image-1.5"), max_response_bytes=LAMBDA_SYNC_RESPONSE_LIMIT // 2)


class Recorded:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict]] = []
        self.metrics: list[str] = []


@pytest.fixture
def recorded(monkeypatch) -> Recorded:
    seen = Recorded()
    monkeypatch.setattr(service_module.logger, "error", lambda message, extra=None, **_: seen.errors.append((message, extra or {})))
    real_add = service_module.metrics.add_metric
    monkeypatch.setattr(
        service_module.metrics, "add_metric", lambda name, **kwargs: (seen.metrics.append(name), real_add(name=name, **kwargs))
    )
    return seen


def test_an_image_above_its_bound_is_a_logged_bug_but_still_answered(recorded: Recorded) -> None:
    """The provider has billed: the images are stored and answered, never refused; the bound is what was wrong."""
    png = draw("x", 256, 256) + bytes(64 * 1024)  # above the local model's bound for 256x256, the answer still fits
    store = InMemoryStore()
    response = generate(
        make_service(provider=FixedProvider(ProviderResult((ProviderImage(png),))), store=store), size="256x256", response_format="b64_json"
    )
    assert base64.b64decode(response.data[0].b64_json) == png
    assert len(store.objects) == 1
    assert [extra["model"] for message, extra in recorded.errors if "worst-case bound" in message] == ["local"]


def test_a_billed_answer_too_big_for_base64_is_delivered_as_urls(recorded: Recorded) -> None:
    big = draw("x", 256, 256) + b"\0" * (5 * 1024 * 1024)
    store = InMemoryStore()
    service = make_service(provider=FixedProvider(ProviderResult((ProviderImage(big),))), store=store)
    response = generate(service, size="256x256", response_format="b64_json")
    (item,) = response.data
    assert item.b64_json is None and item.url == "https://bucket.example/images/2026/11/25/req-1/0.png?ttl=900"
    assert len(store.objects) == 1
    assert "B64AnswerAsUrls" in recorded.metrics


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
    ("data", "asked", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n...", None, ("png", "image/png")),
        (b"\xff\xd8\xff\xe0..", None, ("jpeg", "image/jpeg")),
        (b"RIFF\0\0\0\0WEBPVP8 ", None, ("webp", "image/webp")),
        (b"GIF89a\x01\x00\x01\x00", "gif", ("gif", "image/gif")),
        (b"GIF87a\x01\x00\x01\x00", "gif", ("gif", "image/gif")),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "svg", ("svg", "image/svg+xml")),
        (b'\xef\xbb\xbf\n<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "svg", ("svg", "image/svg+xml")),
    ],
)
def test_sniff_format(data: bytes, asked: str | None, expected: tuple[str, str]) -> None:
    assert sniff_format(data, asked) == expected


@pytest.mark.parametrize(
    ("data", "asked"),
    [
        (b"<html>", None),
        (b"<?xml version='1.0'?><html/>", "svg"),  # XML, but no SVG
        (b"GIF89a\x01\x00", "png"),  # a GIF when a PNG was asked for
        (b"GIF89a\x01\x00", None),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "gif"),
    ],
)
def test_non_image_bytes_from_a_provider_are_502(data: bytes, asked: str | None) -> None:
    with pytest.raises(ProviderError):
        sniff_format(data, asked)


@pytest.mark.parametrize(
    ("fields", "identifier"),
    [
        ({"safety_identifier": "end-user-7", "user": "legacy-9"}, "end-user-7"),
        ({"user": "legacy-9"}, "legacy-9"),  # user is used when safety_identifier is omitted
        ({"safety_identifier": "", "user": "legacy-9"}, "legacy-9"),  # ... or empty
    ],
)
def test_the_end_user_is_logged_as_a_hash_only(monkeypatch, fields, identifier) -> None:
    logged: list[dict] = []
    monkeypatch.setattr(service_module.logger, "info", lambda message, extra=None, **_: logged.append(extra or {}))
    generate(make_service(), **fields)
    entry = next(extra for extra in logged if "prompt_sha256" in extra)
    assert entry["safety_identifier_sha256"] == hashlib.sha256(identifier.encode()).hexdigest()
    text = repr(logged)
    assert "end-user-7" not in text and "legacy-9" not in text


def test_a_retired_model_never_reaches_the_provider() -> None:
    retired = catalog()["dall-e-3"].model_copy(update={"retired_on": dt.date(2026, 5, 12), "successor": "gpt-image-2.5-sunburst"})
    provider = FixedProvider(ProviderResult(images=(ProviderImage(draw("x", 8, 8)),)))
    service = ImageService(
        registry=ModelRegistry([catalog()["local"], retired], "local", today=lambda: dt.date(2026, 12, 2)),
        provider_for=lambda name: provider,
        store=InMemoryStore(),
        settings=Settings(IMAGES_BUCKET="bucket"),
        clock=lambda: NOW,
    )
    with pytest.raises(ModelNotFoundError) as caught:
        generate(service, model="dall-e-3")
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (404, "model_retired", "model")
    assert "2026-05-12" in caught.value.message and "'gpt-image-2.5-sunburst'" in caught.value.message
    assert provider.calls == 0


def test_a_stored_generation_too_big_for_base64_is_read_back_as_urls(recorded: Recorded) -> None:
    """A finished job polled, or an idempotent replay: the images are in S3 whatever their size, so they can always be
    fetched (a base64 answer Lambda could not send would be a 502 from API Gateway, the paid images lost)."""
    images = [StoredImage(key=f"images/2026/11/25/job/{index}.png", content_type="image/png", bytes=3 * 2**20) for index in range(2)]
    response = make_service().answer(images, response_format="b64_json", created=1)
    assert [item.url for item in response.data] == [f"https://bucket.example/{image.key}?ttl=900" for image in images]
    assert "B64AnswerAsUrls" in recorded.metrics
