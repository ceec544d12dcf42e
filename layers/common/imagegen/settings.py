"""Configuration from the environment, validated once per cold start (the only module that reads os.environ)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated

from pydantic import BeforeValidator, ConfigDict, Field, HttpUrl, Json, SecretStr, field_validator, model_validator

from imagegen.models import Model
from imagegen.registry_document import RegistryDocument
from imagegen.specs import ProviderName, azure_models
from imagegen.usage.budget_document import BudgetsDocument, CallerId


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _blank_is_false(value: object) -> object:
    return False if value is None or (isinstance(value, str) and not value.strip()) else value


def _comma_list(value: object) -> object:
    return tuple(item.strip() for item in value.split(",") if item.strip()) if isinstance(value, str) else value


Optional = BeforeValidator(_blank_is_none)

# The latest GA data-plane api-version of Azure OpenAI with image generation (DALL-E 3); gpt-image-1 deployments may
# need a newer preview version, set with AZURE_OPENAI_API_VERSION.
AZURE_OPENAI_DEFAULT_API_VERSION = "2024-10-21"

GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"

# Lambda answers a synchronous invoke with at most 6 MB (the API Gateway proxy JSON included).
LAMBDA_SYNC_RESPONSE_LIMIT = 6 * 1024 * 1024


class Settings(Model):
    """Everything the core needs to know about its deployment. Loopback endpoints for local runs come from
    boto3's own ``AWS_ENDPOINT_URL_S3`` etc., not from a setting of ours."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    images_bucket: str = Field(min_length=3, max_length=63, validation_alias="IMAGES_BUCKET")
    default_model: Annotated[str | None, Optional] = Field(default=None, validation_alias="DEFAULT_MODEL")
    presign_ttl_seconds: int = Field(default=3600, ge=60, le=43200, validation_alias="PRESIGN_TTL_SECONDS")
    openai_api_key: Annotated[SecretStr | None, Optional] = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_api_key_secret_arn: Annotated[str | None, Optional] = Field(default=None, validation_alias="OPENAI_API_KEY_SECRET_ARN")
    openai_base_url: HttpUrl = Field(default=HttpUrl("https://api.openai.com/v1"), validation_alias="OPENAI_BASE_URL")
    # Time kept back from the Lambda deadline to write to S3 and answer before API Gateway cuts the request.
    response_margin_seconds: float = Field(default=2.5, ge=0.0, le=20.0, validation_alias="RESPONSE_MARGIN_SECONDS")
    # Request bodies above this are refused before parsing (the longest prompt is 32,000 characters).
    max_request_bytes: int = Field(default=256 * 1024, ge=1024, le=10 * 1024 * 1024, validation_alias="MAX_REQUEST_BYTES")

    # Edits and variations: the largest multipart body (API Gateway hands binary bodies to Lambda base64-encoded, and
    # a Lambda request is at most 6 MB with that: about 4.5 MB of upload), and the most bytes one input image may
    # have, whichever way it arrives (the model's own limit applies when lower).
    max_upload_bytes: int = Field(default=6 * 1024 * 1024, ge=1024, le=10 * 1024 * 1024, validation_alias="MAX_UPLOAD_BYTES")
    input_image_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024, validation_alias="INPUT_IMAGE_MAX_BYTES")
    # image_url over plain http to a loopback address (a test server, `make local`); never set in a deployment.
    allow_loopback_image_urls: bool = Field(default=False, validation_alias="ALLOW_LOOPBACK_IMAGE_URLS")

    # Provider retries within the deadline (429 with Retry-After, 5xx, connection errors); 0 leaves retries to SQS.
    provider_max_retries: int = Field(default=2, ge=0, le=10, validation_alias="PROVIDER_MAX_RETRIES")
    # Amazon Bedrock models (IAM only: the function's role needs bedrock:InvokeModel on each model it serves).
    bedrock_enabled: Annotated[bool, BeforeValidator(_blank_is_false)] = Field(default=False, validation_alias="BEDROCK_ENABLED")
    # Only these Bedrock models (comma-separated catalog ids; implies Bedrock enabled): what the template grants.
    bedrock_models: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = Field(default=(), validation_alias="BEDROCK_MODELS")
    # The models this deployment serves: a registry document as JSON, or the name of an SSM parameter holding one.
    model_registry: Annotated[Json[RegistryDocument] | None, Optional] = Field(default=None, validation_alias="MODEL_REGISTRY")
    model_registry_parameter: Annotated[str | None, Optional] = Field(default=None, validation_alias="MODEL_REGISTRY_PARAMETER")
    # Azure OpenAI: the resource endpoint, the data-plane api-version, the key (env or Secrets Manager) and
    # {"<openai model id>": "<deployment name>"}; each deployment is served as the model "azure/<openai model id>".
    azure_openai_endpoint: Annotated[HttpUrl | None, Optional] = Field(default=None, validation_alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_api_version: str = Field(
        default=AZURE_OPENAI_DEFAULT_API_VERSION, min_length=1, pattern=r"^[0-9A-Za-z.-]+$", validation_alias="AZURE_OPENAI_API_VERSION"
    )
    azure_openai_api_key: Annotated[SecretStr | None, Optional] = Field(default=None, validation_alias="AZURE_OPENAI_API_KEY")
    azure_openai_api_key_secret_arn: Annotated[str | None, Optional] = Field(
        default=None, validation_alias="AZURE_OPENAI_API_KEY_SECRET_ARN"
    )
    azure_openai_deployments: Annotated[Json[dict[str, str]] | None, Optional] = Field(
        default=None, validation_alias="AZURE_OPENAI_DEPLOYMENTS"
    )
    # Google (the Gemini API: Gemini image models and Imagen), Black Forest Labs (FLUX) and Stability AI (its platform
    # API): each is served when its key is configured, in the environment locally or as a Secrets Manager secret
    # deployed; the base URL points tests at a fake server (plain http only on loopback).
    google_api_key: Annotated[SecretStr | None, Optional] = Field(default=None, validation_alias="GOOGLE_API_KEY")
    google_api_key_secret_arn: Annotated[str | None, Optional] = Field(default=None, validation_alias="GOOGLE_API_KEY_SECRET_ARN")
    google_base_url: HttpUrl = Field(default=HttpUrl(GOOGLE_BASE_URL), validation_alias="GOOGLE_BASE_URL")
    bfl_api_key: Annotated[SecretStr | None, Optional] = Field(default=None, validation_alias="BFL_API_KEY")
    bfl_api_key_secret_arn: Annotated[str | None, Optional] = Field(default=None, validation_alias="BFL_API_KEY_SECRET_ARN")
    bfl_base_url: HttpUrl = Field(default=HttpUrl("https://api.bfl.ai/v1"), validation_alias="BFL_BASE_URL")
    stability_api_key: Annotated[SecretStr | None, Optional] = Field(default=None, validation_alias="STABILITY_API_KEY")
    stability_api_key_secret_arn: Annotated[str | None, Optional] = Field(default=None, validation_alias="STABILITY_API_KEY_SECRET_ARN")
    stability_base_url: HttpUrl = Field(default=HttpUrl("https://api.stability.ai"), validation_alias="STABILITY_BASE_URL")
    # Asynchronous jobs (Prefer: respond-async, the SQS worker): both set, or async requests run synchronously.
    jobs_table: Annotated[str | None, Optional] = Field(default=None, validation_alias="JOBS_TABLE")
    jobs_queue_url: Annotated[str | None, Optional] = Field(default=None, validation_alias="JOBS_QUEUE_URL")
    job_ttl_days: int = Field(default=7, ge=1, le=365, validation_alias="JOB_TTL_DAYS")
    # The queue's redrive maxReceiveCount: the attempt that reaches it records a transient failure as final.
    max_receive_count: int = Field(default=3, ge=1, le=1000, validation_alias="MAX_RECEIVE_COUNT")
    # The longest a worker run can last (its function Timeout; Lambda's maximum by default): a job another run
    # began less than this ago is still being run, so a duplicate message for it is acknowledged, not run again.
    job_run_seconds: int = Field(default=900, ge=1, le=900, validation_alias="JOB_RUN_SECONDS")

    # Log the raw prompt (off: logs carry its SHA-256 only).
    log_prompts: bool = Field(default=False, validation_alias="LOG_PROMPTS")
    # Idempotency-Key records (Powertools idempotency); unset: the header is refused with a 400.
    idempotency_table: Annotated[str | None, Optional] = Field(default=None, validation_alias="IDEMPOTENCY_TABLE")

    # Usage (docs/usage.md): one record per billed generation and the Usage API's counters; unset, nothing is
    # recorded (cost is still computed for the metrics). BUDGETS needs it.
    usage_table: Annotated[str | None, Optional] = Field(default=None, validation_alias="USAGE_TABLE")
    # Monthly budgets per API key and per end user, a BUDGETS document as JSON (imagegen.usage.budget_document).
    budgets: Annotated[Json[BudgetsDocument] | None, Optional] = Field(default=None, validation_alias="BUDGETS")
    # The answer cache (imagegen.usage.cache): an identical generation within this many seconds is answered from the
    # stored images; 0 turns it off. At most 7 days, and it must stay shorter than the images' retention.
    cache_ttl_seconds: int = Field(default=0, ge=0, le=7 * 86400, validation_alias="CACHE_TTL_SECONDS")
    # Callers (imagegen.auth.caller_scope ids, comma-separated) whose Usage API reads see every caller's usage.
    usage_admin_keys: Annotated[tuple[CallerId, ...], BeforeValidator(_comma_list)] = Field(default=(), validation_alias="USAGE_ADMIN_KEYS")

    @field_validator("azure_openai_endpoint", "google_base_url", "bfl_base_url", "stability_base_url")
    @classmethod
    def _https_endpoint(cls, value: HttpUrl | None) -> HttpUrl | None:
        # Plain http only on loopback (a fake server in tests): the key must never cross a network in the clear.
        loopback = value is not None and value.scheme == "http" and value.host in ("127.0.0.1", "localhost", "::1")
        if value is not None and value.scheme != "https" and not loopback:
            raise ValueError(f"{value} must be an https URL (plain http is taken on loopback only)")
        return value

    @model_validator(mode="after")
    def _azure_complete(self) -> Settings:
        deployments = self.azure_openai_deployments or {}
        configured = self.azure_openai_endpoint is not None or bool(deployments)
        if not configured:
            return self
        if self.azure_openai_endpoint is None:
            raise ValueError("AZURE_OPENAI_DEPLOYMENTS is set but AZURE_OPENAI_ENDPOINT is not")
        if not deployments:
            raise ValueError('AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_DEPLOYMENTS is empty; e.g. {"dall-e-3": "my-dalle3"}')
        if self.azure_openai_api_key is None and self.azure_openai_api_key_secret_arn is None:
            raise ValueError("Azure OpenAI needs AZURE_OPENAI_API_KEY or AZURE_OPENAI_API_KEY_SECRET_ARN")
        empty = [model_id for model_id, deployment in deployments.items() if not deployment.strip()]
        if empty:
            raise ValueError(f"AZURE_OPENAI_DEPLOYMENTS has empty deployment names for {empty}")
        azure_models(deployments)  # unknown model ids fail here, at cold start
        return self

    @model_validator(mode="after")
    def _budgets_need_the_table(self) -> Settings:
        if self.budgets is not None and self.usage_table is None:
            raise ValueError("BUDGETS is set but USAGE_TABLE is not: budgets are counted in the usage table")
        if self.cache_ttl_seconds and self.usage_table is None:
            raise ValueError("CACHE_TTL_SECONDS is set but USAGE_TABLE is not: the cache's entries are kept in the usage table")
        return self

    @property
    def azure_enabled(self) -> bool:
        return bool(self.azure_openai_deployments)

    @property
    def async_enabled(self) -> bool:
        return self.jobs_table is not None and self.jobs_queue_url is not None

    @property
    def openai_enabled(self) -> bool:
        return self.openai_api_key is not None or self.openai_api_key_secret_arn is not None

    @property
    def keyed_providers(self) -> frozenset[ProviderName]:
        """The providers served over httpx with a key of their own (Google, Black Forest Labs, Stability AI) whose key
        is configured."""
        keys: dict[ProviderName, tuple[SecretStr | None, str | None]] = {
            "google": (self.google_api_key, self.google_api_key_secret_arn),
            "bfl": (self.bfl_api_key, self.bfl_api_key_secret_arn),
            "stability": (self.stability_api_key, self.stability_api_key_secret_arn),
        }
        return frozenset(name for name, (key, arn) in keys.items() if key is not None or arn is not None)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The deployment's settings, read and validated once per container."""
    return Settings.model_validate(dict(os.environ))
