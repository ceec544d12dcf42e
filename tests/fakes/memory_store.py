"""An in-memory stand-in for imagegen.storage.ImageStore, for unit tests of the service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from imagegen.errors import StorageError
from imagegen.storage import StoredObject


class InMemoryStore:
    def __init__(self, fail_on_index: int | None = None) -> None:
        self.objects: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.fail_on_index = fail_on_index

    def put_all(self, objects: Sequence[StoredObject], metadata: Mapping[str, str]) -> None:
        if self.fail_on_index is not None and self.fail_on_index < len(objects):
            raise StorageError("injected failure")
        for obj in objects:
            self.objects[obj.key] = (obj.data, obj.content_type, dict(metadata))

    def presign(self, key: str, ttl_seconds: int) -> str:
        return f"https://bucket.example/{key}?ttl={ttl_seconds}"

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)
