"""The opt-in answer cache (``CACHE_TTL_SECONDS``): a generation identical to an earlier one, for the same caller and
end user within the TTL, is answered from the images already stored, with no provider call.

Identical means the same resolved plan (prompt, model and every option the provider receives; not the answer's
format, which does not change the images) for the same caller and end user. The key is a SHA-256 of those: no
prompt is stored in clear. The caller is part of it, so no tenant is answered another's images. Only synchronous
generations are cached (not edits, variations, streams or jobs)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.observability import logger
from imagegen.options import StoredImage, Usage
from imagegen.planning import GenerationPlan
from imagegen.usage import table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# What of a plan makes its images: everything the provider receives; the answer's format and the stream are not.
_NOT_OF_THE_IMAGES = frozenset({"model", "response_format", "stream", "partial_images", "inputs"})


def cache_digest(plan: GenerationPlan, *, caller: str) -> str:
    """The cache key of ``plan`` for ``caller`` (its end user is in the plan)."""
    fields = plan.model_dump(mode="json", exclude=set(_NOT_OF_THE_IMAGES))
    document = json.dumps({"caller": caller, "model": plan.model.id, "plan": fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedImages:
    """A stored generation the cache can answer again: its images (keys in S3), when they were made, their size as
    produced (an ``auto`` request's hit is recorded at the size it was billed at, not as ``auto``) and the model that
    made them (a hit of a route is recorded and answered as that member)."""

    created: int
    images: tuple[StoredImage, ...]
    usage: Usage | None
    size: str | None = None  # None: an entry written before sizes were kept
    model: str | None = None  # the model that made them (a route's member); None: an entry written before models were kept


class AnswerCache:
    """Cache entries in the usage table (``cache#<digest>``), expiring with the TTL (also checked on read: DynamoDB
    deletes expired items only eventually). A failing table is a miss, never a failed request."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        ttl_seconds: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self._table = table_name
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def get(self, digest: str) -> CachedImages | None:
        try:
            item = self._client.get_item(TableName=self._table, Key=self._key(digest), ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            logger.warning("answer cache unreadable: generating", extra={"error": str(exc)})
            return None
        if item is None or int(item[table.TTL_ATTRIBUTE]["N"]) <= self._clock().timestamp():
            return None
        entry: dict[str, Any] = json.loads(item["doc"]["S"])
        usage = Usage.model_validate(entry["usage"]) if entry.get("usage") else None
        images = tuple(StoredImage.model_validate(image) for image in entry["images"])
        return CachedImages(created=int(entry["created"]), images=images, usage=usage, size=entry.get("size"), model=entry.get("model"))

    def put(self, digest: str, entry: CachedImages) -> None:
        """Remember ``entry`` for the TTL from its creation. Best effort: a failure is logged."""
        doc = {
            "created": entry.created,
            # not the revised prompts: no prompt is stored in clear (a hit is answered without them)
            "images": [image.model_dump(mode="json", exclude={"revised_prompt"}) for image in entry.images],
            "usage": entry.usage.model_dump(mode="json") if entry.usage else None,
            "size": entry.size,
            "model": entry.model,
        }
        item = {
            **self._key(digest),
            "doc": {"S": json.dumps(doc, separators=(",", ":"))},
            table.TTL_ATTRIBUTE: {"N": str(entry.created + self.ttl_seconds)},
        }
        try:
            self._client.put_item(TableName=self._table, Item=item)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("answer cache not written", extra={"error": str(exc)})

    @staticmethod
    def _key(digest: str) -> dict[str, Any]:
        return {name: {"S": value} for name, value in table.cache_key(digest).items()}
