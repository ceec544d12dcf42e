"""generate(options) -> response: plan -> provider -> S3 -> presigned URL or base64. No event or HTTP concerns here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit

from imagegen.deadline import Deadline
from imagegen.errors import PayloadTooLargeError, ProviderError
from imagegen.models import GenerationPlan, ModelRegistry, ProviderName, build_registry
from imagegen.observability import logger, metrics
from imagegen.options import Image, ImageGenerationRequest, ImagesResponse, Usage
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


def b64_response_bytes(result: ProviderResult) -> int:
    """The size of a b64_json answer: base64 adds a third, plus the JSON around it."""
    revised = sum(len((image.revised_prompt or "").encode()) for image in result.images)
    return sum(4 * -(-len(image.data) // 3) for image in result.images) + revised + _RESPONSE_OVERHEAD_BYTES


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
        plan = self.registry.plan(request)
        now = self.clock()
        logger.info(
            "generating images",
            extra={
                "model": plan.model.id,
                "n": plan.n,
                "size": plan.size,
                "user": plan.user,
                "prompt_sha256": _sha256(plan.prompt),
            },
        )
        result = self.provider_for(plan.model.provider).generate(plan, deadline)
        if plan.response_format == "b64_json" and max_response_bytes is not None:
            _check_response_size(plan, result, max_response_bytes)
        objects = [_stored(request_id, index, image.data, now) for index, image in enumerate(result.images)]
        self.store.put_all(objects, _metadata(plan, request_id))
        metrics.add_dimension(name="model", value=plan.model.id)
        metrics.add_metric(name="ImagesGenerated", unit=MetricUnit.Count, value=len(objects))
        metrics.add_metric(name="BytesStored", unit=MetricUnit.Bytes, value=sum(len(obj.data) for obj in objects))
        return ImagesResponse(
            created=int(now.timestamp()),
            data=[self._answer(plan, obj, image.revised_prompt) for obj, image in zip(objects, result.images, strict=True)],
            usage=Usage.model_validate(result.usage) if result.usage else None,
        )

    def _answer(self, plan: GenerationPlan, obj: StoredObject, revised_prompt: str | None) -> Image:
        if plan.response_format == "url":
            return Image(url=self.store.presign(obj.key, self.settings.presign_ttl_seconds), revised_prompt=revised_prompt)
        return Image(b64_json=base64.b64encode(obj.data).decode("ascii"), revised_prompt=revised_prompt)


def _stored(request_id: str, index: int, data: bytes, now: dt.datetime) -> StoredObject:
    extension, content_type = sniff_format(data)
    return StoredObject(image_key(request_id, index, extension, now), data, content_type)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _metadata(plan: GenerationPlan, request_id: str) -> dict[str, str]:
    """Object metadata: enough to trace an image back, never the raw prompt or the user id."""
    return {"request-id": request_id, "model": plan.model.id, "size": plan.size, "prompt-sha256": _sha256(plan.prompt)}


def _check_response_size(plan: GenerationPlan, result: ProviderResult, limit: int) -> None:
    size = b64_response_bytes(result)
    if size > limit:
        advice = "use response_format 'url'" if "url" in plan.model.response_formats else "ask for fewer or smaller images"
        raise PayloadTooLargeError(
            f"The images would make a {size / 2**20:.1f} MB base64 answer, above the {limit / 2**20:.0f} MB limit of a "
            f"synchronous Lambda response; {advice}.",
            param="response_format" if "url" in plan.model.response_formats else "n",
            code="response_too_large",
        )


@lru_cache(maxsize=1)
def get_service() -> ImageService:
    """The service of this container, built from the validated settings on first use."""
    from imagegen.clients import s3_client

    settings = get_settings()
    return ImageService(
        registry=build_registry(openai_enabled=settings.openai_enabled, default_model=settings.default_model),
        provider_for=get_provider,
        store=ImageStore(s3_client(), settings.images_bucket),
        settings=settings,
    )
