"""Wire models: the options of a generation, an edit and a variation (seed camelCase and OpenAI snake_case), the
references to input images, and the OpenAI response.

Field names and literal sets follow openai-python ``types/image_generate_params.py``, ``image_edit_params.py``,
``image_create_variation_params.py`` and ``images_response.py``. The per-model rules live in :mod:`imagegen.planning`;
this module only checks what holds for every model.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictInt,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from imagegen.models import Model

Quality = Literal["standard", "hd", "low", "medium", "high", "xhigh", "max", "auto"]
ResponseFormat = Literal["url", "b64_json"]
Style = Literal["vivid", "natural"]
OutputFormat = Literal["png", "jpeg", "webp", "gif", "svg"]
Background = Literal["transparent", "opaque", "auto"]
Moderation = Literal["low", "auto"]
Complexity = Literal["low", "medium", "high"]
SvgEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]

# The widest prompt any model takes (gpt-image: 32,000 characters); per-model limits are checked later.
PROMPT_MAX_CHARS = 32_000
# Sizes are "auto" or WIDTHxHEIGHT; which ones a model takes is the registry's decision.
SIZE_PATTERN = re.compile(r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SvgReasoning(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    effort: SvgEffort | None = None


class SvgOptions(Model):
    """``svg``: the model (and reasoning effort) that authors SVG output; needs output_format 'svg'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reasoning: SvgReasoning | None = None


class ImageOptions(Model):
    """What a generation and an edit share. Unknown fields are refused, so a typo never turns into a default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    prompt: Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=PROMPT_MAX_CHARS)] = Field(
        description="What to draw. Non-blank; the maximum length depends on the model."
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Model id from GET /v1/models; default: the deployment's DEFAULT_MODEL."
    )
    n: Annotated[StrictInt, Field(ge=1, le=10)] | None = Field(default=None, description="How many images (1-10, per model). Default 1.")
    quality: Quality | None = Field(
        default=None,
        description="low|medium|high|auto (xhigh|max on 2.5 models); standard|hd map to medium|high on GPT image models.",
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        validation_alias=AliasChoices("response_format", "responseFormat"),
        description="url (presigned S3 GET) or b64_json (the default of GPT image models).",
    )
    size: str | None = Field(default=None, description="WIDTHxHEIGHT or auto; the sizes depend on the model.")
    user: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="Deprecated for safety_identifier, used when that is omitted or empty; never used for auth."
    )
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None,
        validation_alias=AliasChoices("safety_identifier", "safetyIdentifier"),
        description="A stable (hashed) end-user id for the provider's abuse monitoring; logged as its SHA-256 only.",
    )
    complexity: Complexity | None = Field(default=None, description="Planning effort, independent of quality (models that take it).")
    frame_count: Annotated[StrictInt, Field(ge=2, le=16)] | None = Field(
        default=None, validation_alias=AliasChoices("frame_count", "frameCount"), description="GIF frames, 2-16 (output_format gif)."
    )
    frame_duration_ms: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None,
        validation_alias=AliasChoices("frame_duration_ms", "frameDurationMs"),
        description="Delay per GIF frame in ms (output_format gif; the provider rounds to 10 ms and caps at 655,350).",
    )
    svg: SvgOptions | None = Field(default=None, description="The SVG author model (output_format svg, with SVG model selection).")
    # Served where the API function runs its streaming runtime (ResponseStreaming=true, make local); elsewhere a
    # stream: true is refused by name (functions/api/app.py), and jobs refuse it (JobFields).
    stream: bool | None = Field(
        default=None,
        description="Answer with server-sent events (text/event-stream): partial images, then one completed event per image."
        " Where the deployment streams (ResponseStreaming=true); elsewhere a 400 naming stream.",
    )
    partial_images: Annotated[StrictInt, Field(ge=0, le=3)] | None = Field(
        default=None,
        validation_alias=AliasChoices("partial_images", "partialImages"),
        description="With stream: how many partial images (0-3) before each final one; providers that cannot draw"
        " partials send the completed events only.",
    )
    output_format: OutputFormat | None = Field(
        default=None, validation_alias=AliasChoices("output_format", "outputFormat"), description="GPT image models."
    )
    output_compression: Annotated[StrictInt, Field(ge=0, le=100)] | None = Field(
        default=None,
        validation_alias=AliasChoices("output_compression", "outputCompression"),
        description="0-100, jpeg/webp output of GPT image models.",
    )
    background: Background | None = Field(default=None, description="GPT image models; transparent needs png/webp.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt must not be blank")
        return prompt

    @field_validator("size")
    @classmethod
    def _size_shape(cls, size: str | None) -> str | None:
        return check_size_shape(size)


def check_size_shape(size: str | None) -> str | None:
    if size is not None and not SIZE_PATTERN.match(size):
        raise ValueError("expected 'auto' or WIDTHxHEIGHT, for example '1024x1024'")
    return size


class ImageGenerationRequest(ImageOptions):
    """``POST /v1/images/generations``."""

    style: Style | None = Field(default=None, description="vivid|natural (models that take it).")
    moderation: Moderation | None = Field(default=None, description="GPT image models.")


# Up to 16 input images (openai-python image_edit_params.py); how many a model takes is the catalog's.
MAX_INPUT_IMAGES = 16
INPUTS_PREFIX = "inputs/"


class ImageReference(Model):
    """An input image in a JSON request: ``{"image_url": "https://..." | "data:image/png;base64,..."}``, or OpenAI's
    ``{"file_id": ...}`` (refused: this deployment has no Files API), or ``{"key": "inputs/..."}``, an object of this
    deployment's bucket (queue messages, request objects and jobs only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_url: Annotated[str, StringConstraints(min_length=1, max_length=70_000_000)] | None = None
    file_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

    @field_validator("key")
    @classmethod
    def _under_inputs(cls, key: str | None) -> str | None:
        if key is not None and (not key.startswith(INPUTS_PREFIX) or ".." in key.split("/") or _CONTROL.search(key)):
            raise ValueError(f"a 'key' must name an object under '{INPUTS_PREFIX}' (no '..' segment, no control character)")
        return key

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageReference:
        given = [name for name in ("image_url", "file_id", "key") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'image_url' or 'file_id'")
        return self


class ImageEditOptions(ImageOptions):
    """The options of ``POST /v1/images/edits`` (the text fields of its multipart form)."""

    input_fidelity: Literal["high", "low"] | None = Field(
        default=None,
        validation_alias=AliasChoices("input_fidelity", "inputFidelity"),
        description="How closely to keep the input's features (models that take it).",
    )


class ImageEditRequest(ImageEditOptions):
    """``POST /v1/images/edits`` as JSON: the images by reference."""

    images: Annotated[list[ImageReference], Field(min_length=1, max_length=MAX_INPUT_IMAGES)] = Field(
        description="The images to edit (1-16, per model): image_url (https or data:), or file_id (not supported here)."
    )
    mask: ImageReference | None = Field(
        default=None, description="A PNG whose fully transparent pixels mark where the first image is edited; its size."
    )
    markup: ImageReference | None = Field(
        default=None, description="A transparent PNG overlaid on the first image to guide the edit (models that take it; not with mask)."
    )


class ImageVariationOptions(Model):
    """The options of ``POST /v1/images/variations`` (the text fields of its multipart form)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="A model that makes variations (GET /v1/models); default: the deployment's first that does."
    )
    n: Annotated[StrictInt, Field(ge=1, le=10)] | None = Field(default=None, description="How many variations (1-10, per model).")
    response_format: ResponseFormat | None = Field(
        default=None, validation_alias=AliasChoices("response_format", "responseFormat"), description="url (default) or b64_json."
    )
    size: str | None = Field(default=None, description="WIDTHxHEIGHT or auto; the sizes depend on the model.")
    user: Annotated[str, StringConstraints(max_length=256)] | None = Field(default=None, description="The end user, for abuse monitoring.")

    @field_validator("size")
    @classmethod
    def _size_shape(cls, size: str | None) -> str | None:
        return check_size_shape(size)


class ImageVariationRequest(ImageVariationOptions):
    """``POST /v1/images/variations`` as JSON: the image by reference."""

    image: ImageReference = Field(description="The image to vary: image_url (https or data:).")


class Usage(Model):
    """Token usage reported by GPT image models, passed through as the provider gave it."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


class _OmitNone(Model):
    """OpenAI omits absent optional fields instead of sending null."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class Image(_OmitNone):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(_OmitNone):
    created: int
    data: list[Image]
    background: Literal["transparent", "opaque"] | None = None
    output_format: OutputFormat | None = None
    quality: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    size: str | None = None
    usage: Usage | None = None
    # The model that made the images (a route's member): the API sends it as a header, never in OpenAI's body.
    _served_by: str | None = PrivateAttr(default=None)

    @property
    def served_by(self) -> str | None:
        return self._served_by

    def serving(self, model_id: str) -> ImagesResponse:
        """This answer, knowing which model served it."""
        self._served_by = model_id
        return self


class StoredImage(Model):
    """An image as written to S3; answers are made from it (URLs presigned when asked for, never stored)."""

    key: str
    content_type: str
    bytes: int
    revised_prompt: str | None = None


class ErrorDetail(Model):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Model):
    error: ErrorDetail


JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RESULTS_PREFIX = "results/"


def validate_result_key(key: str) -> str:
    """``results/<path>.json``, at most 1024 bytes (S3's limit), no control character and no ".." segment (a tool
    mirroring results/ to disk must not be led out of it)."""
    if (
        not key.startswith(RESULTS_PREFIX)
        or not key.endswith(".json")
        or len(key.encode()) > 1024
        or _CONTROL.search(key)
        or ".." in key.split("/")
    ):
        raise ValueError("must be an S3 key 'results/<path>.json' (no '..' segment, no control character, at most 1024 bytes)")
    return key


class JobFields(Model):
    """What every job message adds to its operation's options: an optional caller-chosen ``id`` and ``result_key``."""

    id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)] | None = Field(
        default=None, description="Caller-chosen job id (letters, digits, '-', '_'; at most 64); default: generated."
    )
    result_key: Annotated[str, AfterValidator(validate_result_key)] | None = Field(
        default=None,
        validation_alias=AliasChoices("result_key", "resultKey"),
        description="Where the job's manifest goes, 'results/<path>.json'; default: 'results/<id>.json'. "
        "A request object's is 'results/<its key under requests/>'.",
    )

    @field_validator("stream", check_fields=False)
    @classmethod
    def _not_streamed(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("a job cannot stream: its images go to S3 and its manifest; omit stream")
        return stream


class ImageJobRequest(ImageGenerationRequest, JobFields):
    """An asynchronous generation: the same options plus an optional caller-chosen ``id`` (the schema of an SQS message
    body and of an S3 request object). Re-sending an id that already finished does not generate again."""

    operation: Literal["generation"] = Field(
        default="generation", description="What the job does: 'generation' (the default), 'edit' or 'variation'."
    )


class ImageEditJobRequest(ImageEditRequest, JobFields):
    """An asynchronous edit: ``"operation": "edit"``, the options of an edit, and its images (mask, markup) as
    references: ``{"key": "inputs/..."}`` (an object of this deployment's bucket) or ``{"image_url": ...}``."""

    operation: Literal["edit"]


class ImageVariationJobRequest(ImageVariationRequest, JobFields):
    """An asynchronous variation: ``"operation": "variation"``, the options of a variation and its image by reference."""

    operation: Literal["variation"]


JobRequest = ImageJobRequest | ImageEditJobRequest | ImageVariationJobRequest
JobOperation = Literal["generation", "edit", "variation"]
_JOB_MODELS: dict[str, type[ImageJobRequest] | type[ImageEditJobRequest] | type[ImageVariationJobRequest]] = {
    "generation": ImageJobRequest,
    "edit": ImageEditJobRequest,
    "variation": ImageVariationJobRequest,
}


class _Operation(Model):
    """Only to refuse an unknown ``operation`` with pydantic's own error (it lists the allowed ones)."""

    operation: JobOperation


def parse_job_request(body: str | bytes) -> JobRequest:
    """A job message (SQS body, S3 request object) validated by the model of its ``operation`` (absent: a
    generation, so every message written before edits existed stays valid). The model is chosen before validation
    rather than by a tagged union, so that errors name the field as sent (``images[0].key``, not ``edit.images...``).
    Raises pydantic's ValidationError."""
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None  # ImageJobRequest reports the invalid JSON as pydantic does
    operation = fields.get("operation", "generation") if isinstance(fields, dict) else "generation"
    model = _JOB_MODELS.get(operation) if isinstance(operation, str) else None
    if model is None:
        _Operation.model_validate({"operation": operation})
        raise AssertionError("unreachable: an operation outside _JOB_MODELS is refused above")
    return model.model_validate_json(body)


JobStatus = Literal["queued", "running", "succeeded", "failed"]


class Job(Model):
    """An asynchronous generation as recorded in the jobs table (and in its ``results/`` manifest)."""

    id: str
    status: JobStatus
    created: int
    updated: int
    model: str | None = None
    response_format: ResponseFormat = "url"
    images: list[StoredImage] = Field(default_factory=list)
    usage: Usage | None = None
    error: ErrorDetail | None = None
    attempts: int = 0
    # A failure that another delivery could cure (provider 429/5xx, timeouts): a redrive from the DLQ runs it again.
    retryable: bool = False
    # Who may read it through the API (imagegen.auth.caller_scope of the request that created it, a fingerprint);
    # None for jobs from the queue or request objects: those are read from results/, not through the API.
    owner: str | None = None
    # Until when (unix seconds) whoever holds the job may still be at work on it: the worker that began it (its
    # begin time plus the worker's timeout, JOB_RUN_SECONDS) or, for an Idempotency-Key submit not yet queued, the
    # API invocation that created it. A job still ``running`` past it was abandoned (the worker crashed or timed out).
    lease_until: int | None = None
    # An Idempotency-Key submit: the SHA-256 of the request it was created for (the same key with another body is
    # refused), and whether its message has been sent (a retry then queues nothing).
    request_hash: str | None = None
    enqueued: bool = False


class JobAccepted(_OmitNone):
    """``202 Accepted`` for ``Prefer: respond-async``."""

    id: str
    object: Literal["image.generation.job"] = "image.generation.job"
    status: JobStatus
    created: int
    location: str


class JobView(_OmitNone):
    """``GET /v1/images/jobs/{id}``: the status, and once succeeded the same ``data`` as a synchronous answer."""

    id: str
    object: Literal["image.generation.job"] = "image.generation.job"
    status: JobStatus
    created: int
    updated: int
    model: str | None = None
    data: list[Image] | None = None
    usage: Usage | None = None
    error: ErrorDetail | None = None
