"""``Idempotency-Key``: a retried request gets the first answer's images (URLs signed again) without a second
provider call or bill. Powertools idempotency keeps the record in DynamoDB, keyed by the client's key *and* the
caller (its API key or IAM principal, imagegen.auth.caller_scope: two callers never share an entry); the request
body is validated, so the same key with another body is refused instead of answered with someone else's images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagegen.deadline import Deadline
from imagegen.errors import ConflictError, InvalidRequestError, QueueError
from imagegen.http import IDEMPOTENCY_HEADER, check_idempotency_key, idempotency_key_reused
from imagegen.models import Model
from imagegen.observability import logger
from imagegen.options import ImageGenerationRequest, ImagesResponse, ResponseFormat, StoredImage, Usage
from imagegen.service import ImageService, get_service
from imagegen.settings import get_settings

HEADER = IDEMPOTENCY_HEADER
# Records outlive any client retry loop; the images they point at live ImageRetentionDays.
RECORD_TTL_SECONDS = 24 * 3600


class StoredGeneration(Model):
    """What the record keeps: where the images are, never URLs (they expire) nor base64 (too big)."""

    created: int
    response_format: ResponseFormat
    images: list[StoredImage]
    usage: Usage | None = None
    model: str | None = None  # the model that made them (a route's member); None in records written before it was kept
    replayed: bool = False


@dataclass(frozen=True)
class IdempotentGenerator:
    produce: Callable[..., dict[str, Any]]
    config: IdempotencyConfig
    images: ImageService

    def generate(
        self, request: ImageGenerationRequest, *, key: str, client: str, request_id: str, deadline: Deadline, context: LambdaContext
    ) -> tuple[ImagesResponse, bool]:
        """The answer, and whether it is a replay of an earlier request with the same key."""
        check_idempotency_key(key)
        self.config.register_lambda_context(context)
        call = {"key": key, "client": client, "request": request.model_dump(mode="json", exclude_none=True)}
        produced: list[dict[str, Any]] = []  # what this call generated, even if the record of it could not be saved
        try:
            stored = StoredGeneration.model_validate(
                self.produce(call=call, request=request, request_id=request_id, deadline=deadline, produced=produced, caller=client)
            )
        except IdempotencyValidationError as exc:
            raise idempotency_key_reused() from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise ConflictError(
                f"A request with this {HEADER} is still in progress; retry after it finishes.",
                param=HEADER,
                code="idempotency_key_in_progress",
            ) from exc
        except IdempotencyPersistenceLayerError as exc:
            if not produced:  # the table failed before the provider was called, or while the failure was released
                raise QueueError("The idempotency table is unavailable; nothing was generated. Try again.") from exc
            # Generated, stored and billed; only recording it failed. Answer it: an error would make the client
            # retry, and the retry would wait out the in-progress record (409) and then be generated and billed again.
            logger.warning("idempotency record not saved; answering the generation anyway", extra={"error": str(exc)})
            stored = StoredGeneration.model_validate(produced[0])
        answer = self.images.answer(stored.images, response_format=stored.response_format, created=stored.created, usage=stored.usage)
        return (answer if stored.model is None else answer.serving(stored.model)), stored.replayed


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "replayed": True}


def generate_idempotently(
    request: ImageGenerationRequest,
    *,
    key: str,
    client: str,
    request_id: str,
    deadline: Deadline,
    context: LambdaContext,
) -> tuple[ImagesResponse, bool]:
    """The answer for ``request`` under ``key``, scoped to ``client`` (the caller); and whether it was a replay."""
    generator = get_idempotent_generator()
    if generator is None:
        raise InvalidRequestError(f"{HEADER} is not supported by this deployment (it has no idempotency table).", param=HEADER)
    return generator.generate(request, key=key, client=client, request_id=request_id, deadline=deadline, context=context)


@lru_cache(maxsize=1)
def get_idempotent_generator() -> IdempotentGenerator | None:
    """None when this deployment has no idempotency table (the header is then refused, never silently ignored)."""
    from imagegen.clients import dynamodb_client

    settings = get_settings()
    if settings.idempotency_table is None:
        return None
    images = get_service()
    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb_client())
    config = IdempotencyConfig(
        event_key_jmespath="[key, client]",
        payload_validation_jmespath="request",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=RECORD_TTL_SECONDS,
        hash_function="sha256",
        response_hook=_mark_replayed,
    )

    @idempotent_function(data_keyword_argument="call", persistence_store=persistence, config=config)  # type: ignore[untyped-decorator]
    def produce(
        *,
        call: dict[str, Any],
        request: ImageGenerationRequest,
        request_id: str,
        deadline: Deadline,
        produced: list[dict[str, Any]],
        caller: str,
    ) -> dict[str, Any]:
        generation = images.produce(request, request_id=request_id, deadline=deadline, caller=caller)
        stored = StoredGeneration(
            created=generation.created,
            response_format=generation.plan.response_format,
            images=list(generation.images),
            usage=generation.usage,
            model=generation.plan.model.id,
        )
        produced.append(stored.model_dump(mode="json"))
        return produced[-1]

    return IdempotentGenerator(produce=produce, config=config, images=images)
