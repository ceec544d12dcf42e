"""generate(options) -> response: plan -> provider -> S3 -> presigned URL or base64. No event or HTTP concerns here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imagegen.deadline import Deadline
from imagegen.errors import ImageGenError, PayloadTooLargeError, ProviderError
from imagegen.models import GenerationPlan, ModelRegistry, ProviderName
from imagegen.observability import logger, metrics
from imagegen.options import Image, ImageGenerationRequest, ImagesResponse, ResponseFormat, StoredImage, Usage
from imagegen.providers import ImageProvider, ProviderResult, get_provider
from imagegen.settings import LAMBDA_SYNC_RESPONSE_LIMIT, Settings, get_settings
from imagegen.storage import ImageStore, StoredObject, image_key

# Magic numbers of the formats a provider may answer -> (extension, content type).
_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpeg", "image/jpeg"),
    (b"RIFF", "webp", "image/webp"),
)
# Room for the JSON around the base64 text: field names, revised prompts, the proxy envelope.
_RESPONSE_OVERHEAD_BYTES = 16 * 1024


def sniff_format(data: bytes) -> tuple[str, str]:
    for magic, extension, content_type in _FORMATS:
        if data.startswith(magic) and (extension != "webp" or data[8:12] == b"WEBP"):
            return extension, content_type
    raise ProviderError("The image provider returned bytes that are not a PNG, JPEG or WebP image.", code="provider_bad_response")


def b64_answer_bytes(image_sizes: Iterable[int]) -> int:
    """The size of a b64_json answer: base64 adds a third, plus the JSON around it."""
    return sum(4 * -(-size // 3) for size in image_sizes) + _RESPONSE_OVERHEAD_BYTES


def check_b64_answer(image_sizes: Iterable[int], *, limit: int = LAMBDA_SYNC_RESPONSE_LIMIT, can_use_url: bool = True) -> None:
    """A 413 before anything is written when a base64 answer could not leave the Lambda."""
    size = b64_answer_bytes(image_sizes)
    if size > limit:
        advice = "use response_format 'url'" if can_use_url else "ask for fewer or smaller images"
        raise PayloadTooLargeError(
            f"The images would make a {size / 2**20:.1f} MB base64 answer, above the {limit / 2**20:.0f} MB limit of a "
            f"synchronous Lambda response; {advice}.",
            param="response_format" if can_use_url else "n",
            code="response_too_large",
        )


@dataclass(frozen=True, slots=True)
class Generation:
    """What one request produced: the plan it ran, and every image as stored (bytes kept for the sync answer)."""

    plan: GenerationPlan
    created: int
    objects: tuple[StoredObject, ...]
    images: tuple[StoredImage, ...]
    usage: Usage | None


@dataclass
class ImageService:
    registry: ModelRegistry
    provider_for: Callable[[ProviderName], ImageProvider]
    store: ImageStore
    settings: Settings
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def generate(
        self,
        request: ImageGenerationRequest,
        *,
        request_id: str,
        deadline: Deadline,
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
    ) -> ImagesResponse:
        """Validate ``request`` for its model, generate, store every image, and answer as it asked."""
        generation = self.produce(request, request_id=request_id, deadline=deadline, max_response_bytes=max_response_bytes)
        return self.answer(
            generation.images,
            response_format=generation.plan.response_format,
            created=generation.created,
            usage=generation.usage,
            data={obj.key: obj.data for obj in generation.objects},
        )

    def produce(
        self,
        request: ImageGenerationRequest,
        *,
        request_id: str,
        deadline: Deadline,
        when: dt.datetime | None = None,
        max_response_bytes: int | None = None,
    ) -> Generation:
        """Plan, call the provider, and store every image (all or nothing). ``when`` dates the keys, so a retried
        job writes the same keys again instead of new ones."""
        plan = self.plan(request, max_response_bytes=max_response_bytes)
        now = when or self.clock()
        logger.info(
            "generating images",
            extra={
                "model": plan.model.id,
                "n": plan.n,
                "size": plan.size,
                "user": plan.user,
                "prompt_sha256": _sha256(plan.prompt),
                **({"prompt": plan.prompt} if self.settings.log_prompts else {}),
            },
        )
        result = self._call_provider(plan, deadline)
        if plan.response_format == "b64_json" and max_response_bytes is not None:
            sizes = (len(image.data) for image in result.images)
            check_b64_answer(sizes, limit=max_response_bytes, can_use_url="url" in plan.model.response_formats)
        objects = tuple(_stored(request_id, index, image.data, now) for index, image in enumerate(result.images))
        self.store.put_all(objects, _metadata(plan, request_id))
        # Per model on its own EMF record: one worker batch may hold several models.
        with single_metric(name="ImagesGenerated", unit=MetricUnit.Count, value=len(objects), namespace=metrics.namespace) as metric:
            metric.add_dimension(name="model", value=plan.model.id)
        metrics.add_metric(name="BytesStored", unit=MetricUnit.Bytes, value=sum(len(obj.data) for obj in objects))
        images = tuple(
            StoredImage(key=obj.key, content_type=obj.content_type, bytes=len(obj.data), revised_prompt=image.revised_prompt)
            for obj, image in zip(objects, result.images, strict=True)
        )
        usage = Usage.model_validate(result.usage) if result.usage else None
        return Generation(plan=plan, created=int(now.timestamp()), objects=objects, images=images, usage=usage)

    def plan(self, request: ImageGenerationRequest, *, max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT) -> GenerationPlan:
        """``request`` checked against its model's rules, and against every limit known before a provider is called
        (nothing is billed for an answer that could not be delivered); ``max_response_bytes`` None: no answer size
        limit (the results go to S3 only)."""
        return self.registry.plan(request)

    def _call_provider(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        """The provider call, measured: latency always, failures counted by provider and error code."""
        started = time.perf_counter()
        try:
            return self.provider_for(plan.model.provider).generate(plan, deadline)
        except ImageGenError as error:
            with single_metric(name="ProviderErrors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
                metric.add_dimension(name="provider", value=plan.model.provider)
                metric.add_dimension(name="code", value=error.code or type(error).__name__)
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            with single_metric(
                name="ProviderLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms, namespace=metrics.namespace
            ) as metric:
                metric.add_dimension(name="provider", value=plan.model.provider)

    def answer(
        self,
        images: Sequence[StoredImage],
        *,
        response_format: ResponseFormat,
        created: int,
        usage: Usage | None = None,
        data: Mapping[str, bytes] | None = None,
    ) -> ImagesResponse:
        """The OpenAI answer for stored images: URLs presigned now, or base64 of the bytes (read from S3 when
        ``data`` does not have them, e.g. when a finished job is polled)."""
        if response_format == "url":
            items = [
                Image(url=self.store.presign(image.key, self.settings.presign_ttl_seconds), revised_prompt=image.revised_prompt)
                for image in images
            ]
        else:
            check_b64_answer(image.bytes for image in images)
            payloads = {image.key: (data or {}).get(image.key) or self.store.get(image.key) for image in images}
            items = [
                Image(b64_json=base64.b64encode(payloads[image.key]).decode("ascii"), revised_prompt=image.revised_prompt)
                for image in images
            ]
        return ImagesResponse(created=created, data=items, usage=usage)


def _stored(request_id: str, index: int, data: bytes, now: dt.datetime) -> StoredObject:
    extension, content_type = sniff_format(data)
    return StoredObject(image_key(request_id, index, extension, now), data, content_type)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _metadata(plan: GenerationPlan, request_id: str) -> dict[str, str]:
    """Object metadata: enough to trace an image back, never the raw prompt or the user id."""
    return {"request-id": request_id, "model": plan.model.id, "size": plan.size, "prompt-sha256": _sha256(plan.prompt)}


@lru_cache(maxsize=1)
def get_service() -> ImageService:
    """The service of this container, built from the validated settings on first use."""
    from imagegen.clients import s3_client
    from imagegen.registry import deployment_registry

    settings = get_settings()
    return ImageService(
        registry=deployment_registry(settings),
        provider_for=get_provider,
        store=ImageStore(s3_client(), settings.images_bucket),
        settings=settings,
    )
