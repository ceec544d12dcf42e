"""generate / edit / vary -> response: plan (inputs read and checked) -> inputs to S3 -> provider -> images to S3
-> presigned URL or base64; or streamed (:meth:`ImageService.stream`): the provider's partial images as they come, then
the images once stored. No event or HTTP concerns here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from imagegen.auth import ANONYMOUS_CALLER
from imagegen.deadline import Deadline
from imagegen.errors import ImageGenError, PayloadTooLargeError
from imagegen.inputs import EditSources, InputReader, input_objects
from imagegen.observability import logger, metrics
from imagegen.options import (
    Image,
    ImageEditOptions,
    ImageGenerationRequest,
    ImagesResponse,
    ImageVariationOptions,
    ResponseFormat,
    StoredImage,
    Usage,
)
from imagegen.planning import GenerationPlan, check_input_count, plan_edit, plan_variation
from imagegen.providers import ImageProvider, ProviderResult, get_provider
from imagegen.providers.base import sniff_format
from imagegen.registry import ModelRegistry
from imagegen.routing import fitting, served
from imagegen.service_stream import streamed
from imagegen.settings import LAMBDA_SYNC_RESPONSE_LIMIT, Settings, get_settings
from imagegen.specs import ProviderName
from imagegen.storage import ImageStore, StoredObject, image_key
from imagegen.streaming import StreamEvent
from imagegen.usage.cache import AnswerCache, CachedImages, cache_digest
from imagegen.usage.meter import Charge, Meter, meter_of, produced_size
from imagegen.usage.prices import price_book

# Magic numbers of the formats a provider may answer -> (extension, content type).
# Room for the JSON around the base64 text: field names, revised prompts, the proxy envelope.
_RESPONSE_OVERHEAD_BYTES = 16 * 1024


def b64_answer_bytes(image_sizes: Iterable[int]) -> int:
    """The size of a b64_json answer: base64 adds a third, plus the JSON around it."""
    return sum(4 * -(-size // 3) for size in image_sizes) + _RESPONSE_OVERHEAD_BYTES


def check_b64_plan(plan: GenerationPlan, *, limit: int) -> None:
    """A 413 before the provider is called (nothing billed, nothing written) when the base64 answer of ``plan`` could
    pass ``limit`` for the worst content its model can draw."""
    if plan.response_format != "b64_json":
        return
    worst = b64_answer_bytes([plan.max_image_bytes] * plan.n)
    if worst <= limit:
        return
    images = f"{plan.n} {plan.output_format} image{'s' if plan.n > 1 else ''}"
    size = f"size '{plan.size}'" + (f" ({plan.max_pixels} pixels at most)" if plan.size == "auto" or plan.model.max_output_pixels else "")
    raise PayloadTooLargeError(
        f"A b64_json answer of {images} at {size} from model '{plan.model.id}' can reach {worst / 2**20:.1f} MB "
        f"(at worst {plan.model.bytes_per_pixel[plan.output_format]:g} bytes per pixel, and base64 adds a third), above "
        f"the {limit / 2**20:.0f} MB limit of a synchronous Lambda response. Nothing was generated: use response_format "
        "'url' (the same images, as presigned S3 URLs), or ask for fewer or smaller images.",
        param="response_format",
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
    # Edits and variations: where their input images are stored (images, then mask, then markup).
    input_keys: tuple[str, ...] = ()


@dataclass
class ImageService:
    registry: ModelRegistry
    provider_for: Callable[[ProviderName], ImageProvider]
    store: ImageStore
    settings: Settings
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    # Usage and budgets (imagegen.usage): by default prices only, nothing recorded nor limited.
    meter: Meter = field(default_factory=lambda: Meter(prices=price_book()))
    # The opt-in answer cache (CACHE_TTL_SECONDS); None: off.
    cache: AnswerCache | None = None

    def generate(
        self,
        request: ImageGenerationRequest,
        *,
        request_id: str,
        deadline: Deadline,
        caller: str = ANONYMOUS_CALLER,
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
        use_cache: bool = True,
    ) -> ImagesResponse:
        """Validate ``request`` for its model, generate, store every image, and answer as it asked. With the answer
        cache on (and ``use_cache``: no ``Cache-Control: no-cache``), an identical earlier generation of the same
        caller and end user is answered from its stored images, with no provider call."""
        plan = self.plan(request, max_response_bytes=max_response_bytes)
        if self.cache is None or not use_cache:
            generation = self.run(plan, request_id=request_id, deadline=deadline, caller=caller)
            return self.respond(generation, max_response_bytes=max_response_bytes)
        digest = cache_digest(plan, caller=caller)
        if (hit := self.cache.get(digest)) is not None:
            at = int(self.clock().timestamp())
            maker = next((candidate for candidate in plan.candidates if candidate.model.id == hit.model), plan)
            size = hit.size or plan.size
            self.meter.record_cached(maker, caller=caller, record_id=request_id, images=len(hit.images), size=size, at=at)
            answer = self.answer(
                hit.images, response_format=plan.response_format, created=hit.created, max_response_bytes=max_response_bytes
            )
            return answer.serving(maker.model.id)
        generation = self.run(plan, request_id=request_id, deadline=deadline, caller=caller)
        made = generation.plan
        entry = CachedImages(
            created=generation.created,
            images=generation.images,
            usage=generation.usage,
            size=produced_size(made, [obj.data for obj in generation.objects]),
            model=made.model.id,
        )
        self.cache.put(digest, entry)
        return self.respond(generation, max_response_bytes=max_response_bytes)

    def from_inputs(
        self,
        options: ImageEditOptions | ImageVariationOptions,
        sources: EditSources,
        *,
        request_id: str,
        deadline: Deadline,
        caller: str = ANONYMOUS_CALLER,
        json_form: bool = False,
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
    ) -> ImagesResponse:
        """An edit (``ImageEditOptions``) or variations (``ImageVariationOptions``): read and check the input images,
        store them under inputs/, call the provider, store every image, and answer."""
        plan = self.plan_inputs(options, sources, deadline=deadline, json_form=json_form, max_response_bytes=max_response_bytes)
        generation = self.run(plan, request_id=request_id, deadline=deadline, sources=sources, caller=caller)
        return self.respond(generation, max_response_bytes=max_response_bytes)

    def respond(self, generation: Generation, *, max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT) -> ImagesResponse:
        """The answer of a generation, knowing the model that served it (``ImagesResponse.served_by``)."""
        return self.answer(
            generation.images,
            response_format=generation.plan.response_format,
            created=generation.created,
            usage=generation.usage,
            data={obj.key: obj.data for obj in generation.objects},
            max_response_bytes=max_response_bytes,
        ).serving(generation.plan.model.id)

    def reader(self, *, trusted: bool = False) -> InputReader:
        """How input images are read: uploads, image_url fetched safely, and (``trusted`` only) keys under inputs/."""
        settings = self.settings
        return InputReader(
            self.store, max_bytes=settings.input_image_max_bytes, allow_loopback_urls=settings.allow_loopback_image_urls, trusted=trusted
        )

    def plan_inputs(
        self,
        options: ImageEditOptions | ImageVariationOptions,
        sources: EditSources,
        *,
        deadline: Deadline,
        json_form: bool = False,
        trusted: bool = False,
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
    ) -> GenerationPlan:
        """An edit (``ImageEditOptions``) or a variation planned: its model found, the number of inputs checked before
        any is read, each read (bounded) and checked, then the options, and the b64 bound as for a generation."""
        editing = isinstance(options, ImageEditOptions)
        spec = self.registry.for_inputs(options.model, "edit" if editing else "variation")
        rule = spec.edits if editing else spec.variations
        assert rule is not None  # for_inputs returns models with the rule
        count_param = "images" if json_form else "image"
        check_input_count(spec, rule, len(sources.images), param=count_param, has_mask=sources.mask is not None)
        pictures = self.reader(trusted=trusted).read_all(
            sources, max_bytes=rule.max_image_bytes, mask_max_bytes=rule.mask_max_bytes, deadline=deadline, json_form=json_form
        )
        if isinstance(options, ImageEditOptions):
            plan = plan_edit(spec, options, pictures)
        else:
            plan = plan_variation(spec, options, pictures.images[0])
        if max_response_bytes is not None:
            check_b64_plan(plan, limit=max_response_bytes)
        return plan

    def produce(
        self,
        request: ImageGenerationRequest,
        *,
        request_id: str,
        deadline: Deadline,
        when: dt.datetime | None = None,
        caller: str = ANONYMOUS_CALLER,
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
    ) -> Generation:
        """Plan (against ``max_response_bytes``: None when the answer is never sent synchronously), call the provider,
        and store every image (all or nothing). ``when`` dates the keys, so a retried job writes the same keys again
        instead of new ones. Once the provider has answered, nothing refuses its images."""
        plan = self.plan(request, max_response_bytes=max_response_bytes)
        return self.run(plan, request_id=request_id, deadline=deadline, when=when, caller=caller)

    def run(
        self,
        plan: GenerationPlan,
        *,
        request_id: str,
        deadline: Deadline,
        when: dt.datetime | None = None,
        sources: EditSources | None = None,
        caller: str = ANONYMOUS_CALLER,
    ) -> Generation:
        """A checked plan carried out for ``caller``: its budgets reserved (a 429 before anything is written), its
        inputs stored under inputs/ (``sources`` says which are stored already), the provider called, every image
        stored (all or nothing), and its usage recorded under ``request_id`` (once: a retried job's id is the same)."""
        now = when or self.clock()
        plan = fitting(plan, deadline)
        self.log_start(plan)
        with (
            self.charged(plan, caller=caller, record_id=request_id) as charge,
            self.stored_inputs(plan, request_id=request_id, deadline=deadline, now=now, sources=sources) as input_keys,
        ):
            plan, result = self._call_provider(plan, deadline)
            with self.paid_for(charge, plan, result):
                generation = self.store_images(plan, result, request_id=request_id, deadline=deadline, now=now, input_keys=input_keys)
        self.settle(charge, generation, result)
        return generation

    @contextmanager
    def charged(self, plan: GenerationPlan, *, caller: str, record_id: str) -> Iterator[Charge]:
        """The budgets reserved for what runs inside, and released when it fails (or a stream is left)."""
        charge = self.meter.reserve(plan, caller=caller, record_id=record_id)
        try:
            yield charge
        except BaseException:
            self.meter.release(charge)
            raise

    @contextmanager
    def paid_for(self, charge: Charge, plan: GenerationPlan, result: ProviderResult) -> Iterator[None]:
        """What the provider answered (and was paid for) stored inside: when storing fails, the loss is counted
        (:meth:`Meter.lost`) before the failure goes on."""
        try:
            yield
        except BaseException:
            self.meter.lost(replace(charge, plan=plan), images=[image.data for image in result.images], usage=result.usage)
            raise

    def settle(self, charge: Charge, generation: Generation, result: ProviderResult) -> None:
        """The generation recorded as the model that served it (a route's fallback is priced as itself)."""
        served = replace(charge, plan=generation.plan)
        self.meter.settle(served, images=[obj.data for obj in generation.objects], usage=result.usage, at=generation.created)

    def stream(
        self,
        request: ImageGenerationRequest | ImageEditOptions,
        *,
        sources: EditSources | None = None,
        request_id: str,
        deadline: Deadline,
        caller: str = ANONYMOUS_CALLER,
        json_form: bool = False,
    ) -> Iterator[StreamEvent]:
        """A generation (``ImageGenerationRequest``) or an edit (``ImageEditOptions`` and its ``sources``) streamed:
        the provider's partial images as they come (``*.partial_image`` events), then, once every image is stored,
        one ``*.completed`` event per image with its base64 and its presigned ``url``. A provider that does not stream
        gives the completed events only.

        Everything up to the first event happens in this call, so a failure before it raises (and is answered as
        any error); after it, a failure is the stream's last event (an :class:`ErrorEvent`), and storage is all or
        nothing. No answer size limit applies: a stream is not a synchronous Lambda response."""
        if isinstance(request, ImageEditOptions):
            assert sources is not None  # an edit's images
            plan = self.plan_inputs(request, sources, deadline=deadline, json_form=json_form, max_response_bytes=None)
        else:
            plan = self.plan(request, max_response_bytes=None)
        return streamed(self, plan, request_id=request_id, deadline=deadline, sources=sources, caller=caller)

    def log_start(self, plan: GenerationPlan) -> None:
        logger.info(
            "generating images",
            extra={
                "operation": plan.operation,
                "model": plan.model.id,
                "n": plan.n,
                "size": plan.size,
                **({"stream": True, "partial_images": plan.partial_images} if plan.stream else {}),
                # The end user as a hash only (safety_identifier, else user): never the raw value in logs.
                **({"safety_identifier_sha256": _sha256(plan.safety_identifier)} if plan.safety_identifier else {}),
                "prompt_sha256": _sha256(plan.prompt),
                **({"prompt": plan.prompt} if self.settings.log_prompts else {}),
            },
        )

    @contextmanager
    def stored_inputs(
        self, plan: GenerationPlan, *, request_id: str, deadline: Deadline, now: dt.datetime, sources: EditSources | None
    ) -> Iterator[tuple[str, ...]]:
        """An edit's or a variation's inputs stored under inputs/ for what runs inside (``sources`` says which are
        stored already), as every input's key in order (images, mask, markup). When what runs inside fails, the
        inputs this call wrote are deleted again: nothing of a failed request stays in S3 (a job's next run, which
        could read them, stores its own again; those stored before, by a job's submission or a producer, are kept)."""
        if plan.inputs is None or sources is None:
            yield ()
            return
        inputs, input_keys = input_objects(sources, plan.inputs, request_id, now)
        self.store.put_all(inputs, {"request-id": request_id, "model": plan.model.id}, deadline=deadline)
        try:
            yield input_keys
        except BaseException:
            self.store.delete([obj.key for obj in inputs])
            raise

    def store_images(
        self,
        plan: GenerationPlan,
        result: ProviderResult,
        *,
        request_id: str,
        deadline: Deadline,
        now: dt.datetime,
        input_keys: tuple[str, ...],
    ) -> Generation:
        """The provider's images stored (all or nothing) and counted."""
        _check_worst_case(plan, result)
        objects = tuple(_stored(request_id, index, image.data, now, plan.output_format) for index, image in enumerate(result.images))
        self.store.put_all(objects, _metadata(plan, request_id), deadline=deadline)
        # Per model on its own EMF record: one worker batch may hold several models.
        with single_metric(name="ImagesGenerated", unit=MetricUnit.Count, value=len(objects), namespace=metrics.namespace) as metric:
            metric.add_dimension(name="model", value=plan.model.id)
        metrics.add_metric(name="BytesStored", unit=MetricUnit.Bytes, value=sum(len(obj.data) for obj in objects))
        images = tuple(
            StoredImage(key=obj.key, content_type=obj.content_type, bytes=len(obj.data), revised_prompt=image.revised_prompt)
            for obj, image in zip(objects, result.images, strict=True)
        )
        usage = Usage.model_validate(result.usage) if result.usage else None
        return Generation(plan=plan, created=int(now.timestamp()), objects=objects, images=images, usage=usage, input_keys=input_keys)

    def plan(self, request: ImageGenerationRequest, *, max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT) -> GenerationPlan:
        """``request`` checked against its model's rules, and against every limit known before a provider is called
        (nothing is billed for an answer that could not be delivered): a b64_json answer must fit in
        ``max_response_bytes`` for the worst content the model can draw. None: no answer size limit (the results go
        to S3 only)."""
        plan = self.registry.plan(request)
        if max_response_bytes is not None:
            for candidate in plan.candidates:  # a route's every model: the fallback's answer must fit too
                check_b64_plan(candidate, limit=max_response_bytes)
        return plan

    def _call_provider(self, plan: GenerationPlan, deadline: Deadline) -> tuple[GenerationPlan, ProviderResult]:
        """The provider call, measured (latency always, failures counted by provider and error code); a route's
        models in turn until one serves it (:func:`imagegen.routing.served`). Returns the plan that served it."""
        return served(plan, deadline, lambda candidate: self._generate(candidate, deadline))

    def _generate(self, plan: GenerationPlan, deadline: Deadline) -> ProviderResult:
        with self.measured(plan):
            return self.provider_for(plan.model.provider).generate(plan, deadline)

    @contextmanager
    def measured(self, plan: GenerationPlan) -> Iterator[None]:
        """ProviderLatency of what runs inside (a stream's: until its last image), ProviderErrors by provider and code."""
        started = time.perf_counter()
        try:
            yield
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
        max_response_bytes: int | None = LAMBDA_SYNC_RESPONSE_LIMIT,
    ) -> ImagesResponse:
        """The OpenAI answer for stored images: URLs presigned now, or base64 of the bytes (read from S3 when
        ``data`` does not have them, e.g. when a finished job is polled or a request replayed).

        Planning refuses a base64 request whose worst case cannot fit, so stored images always fit unless a model's
        bound is wrong. Then the images, billed and stored, are still delivered: as presigned URLs (an error is
        logged and ``B64AnswerAsUrls`` counted), never as a refusal or an answer Lambda would cut."""
        if response_format == "b64_json" and max_response_bytes is not None:
            size = b64_answer_bytes(image.bytes for image in images)
            if size > max_response_bytes:
                logger.error(
                    "bug: a stored generation's base64 answer is above the synchronous limit; answered as URLs",
                    extra={"answer_bytes": size, "limit": max_response_bytes, "images": len(images)},
                )
                metrics.add_metric(name="B64AnswerAsUrls", unit=MetricUnit.Count, value=1)
                response_format = "url"
        if response_format == "url":
            items = [
                Image(url=self.store.presign(image.key, self.settings.presign_ttl_seconds), revised_prompt=image.revised_prompt)
                for image in images
            ]
        else:
            payloads = {image.key: (data or {}).get(image.key) or self.store.get(image.key) for image in images}
            items = [
                Image(b64_json=base64.b64encode(payloads[image.key]).decode("ascii"), revised_prompt=image.revised_prompt)
                for image in images
            ]
        return ImagesResponse(created=created, data=items, usage=usage)


def _check_worst_case(plan: GenerationPlan, result: ProviderResult) -> None:
    """An image above its model's worst-case bound means the bound is wrong (a bug here, not the caller's fault): it
    is logged and counted (``WorstCaseBoundExceeded``), and the billed images are kept and answered all the same."""
    bound = plan.max_image_bytes
    over = [len(image.data) for image in result.images if len(image.data) > bound]
    if not over:
        return
    logger.error(
        "bug: the provider answered an image above the model's worst-case bound",
        extra={"model": plan.model.id, "size": plan.size, "output_format": plan.output_format, "bound": bound, "largest": max(over)},
    )
    with single_metric(name="WorstCaseBoundExceeded", unit=MetricUnit.Count, value=len(over), namespace=metrics.namespace) as metric:
        metric.add_dimension(name="model", value=plan.model.id)


def _stored(request_id: str, index: int, data: bytes, now: dt.datetime, output_format: str) -> StoredObject:
    extension, content_type = sniff_format(data, output_format)
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
        store=ImageStore(s3_client(), settings.images_bucket, margin_seconds=settings.response_margin_seconds),
        settings=settings,
        meter=meter_of(settings),
        cache=answer_cache(settings),
    )


def answer_cache(settings: Settings) -> AnswerCache | None:
    """The answer cache of this deployment: on with CACHE_TTL_SECONDS (settings require the usage table then)."""
    if not settings.cache_ttl_seconds or settings.usage_table is None:
        return None
    from imagegen.clients import dynamodb_client

    return AnswerCache(dynamodb_client(), settings.usage_table, ttl_seconds=settings.cache_ttl_seconds)
