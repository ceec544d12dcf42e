"""moto's server with DynamoDB's transaction isolation: ``python -m devtools.moto_isolated -H 127.0.0.1 -p <port>``.

moto's ``transact_write_items`` is not isolated: it snapshots the table and, when a condition fails, restores that
snapshot, losing what a concurrent request wrote meanwhile (measured: 20 threads reserving 1 image each against a
budget of 10 were granted 11-13 in 7 of 120 runs). DynamoDB serialises a transaction against every other write to
its items, so each condition is evaluated atomically with its update. Here every DynamoDB write, and a transaction as
a whole, runs under one lock (re-entrant: a transaction's updates call the backend's update_item); requests are still
served by a thread each, and reads are not held."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_LOCK = threading.RLock()
_WRITES = ("transact_write_items", "update_item", "put_item", "delete_item", "batch_write_item")


def _isolated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    return call


def isolate() -> None:
    for name in _WRITES:
        if hasattr(DynamoDBBackend, name):
            setattr(DynamoDBBackend, name, _isolated(getattr(DynamoDBBackend, name)))


if __name__ == "__main__":
    isolate()
    main(sys.argv[1:])
