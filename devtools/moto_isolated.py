"""moto's server with DynamoDB's transaction isolation and number normalization:
``python devtools/moto_isolated.py -H 127.0.0.1 -p <port>``.

moto's ``transact_write_items`` is not isolated: it snapshots the table and, when a condition fails, restores that
snapshot, losing what a concurrent request wrote meanwhile (measured: 20 threads reserving 1 image each against a
budget of 10 were granted 11-13 in 7 of 120 runs). DynamoDB serialises a transaction against every other write to
its items, so each condition is evaluated atomically with its update. Here every DynamoDB write, and a transaction as
a whole, runs under one lock (re-entrant: a transaction's updates call the backend's update_item); requests are still
served by a thread each, and reads are not held.

Numbers: DynamoDB stores a number normalized (``0.00082000`` reads back ``0.00082``, a zero as ``0``). moto keeps
the text, and its ``ADD`` writes Python's ``Decimal`` text, so 0.00082000 + -0.00082000 is stored as ``0E-8``,
which its next ``ADD`` or comparison fails on (an int() of it: a 500, or a transaction cancelled with ValueError).
Here every number is normalized as DynamoDB does."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
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


def canonical_number(text: str) -> str:
    """A DynamoDB number as DynamoDB returns it: no exponent, no trailing zeros, zero as ``0``."""
    value = Decimal(text)
    return "0" if value == 0 else format(value.normalize(), "f")


def normalize_numbers() -> None:
    original = DynamoType.__init__

    def init(self: DynamoType, type_as_dict: Any) -> None:
        original(self, type_as_dict)
        if self.type == "N" and isinstance(self.value, str):
            self.value = canonical_number(self.value)

    DynamoType.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    isolate()
    normalize_numbers()
    main(sys.argv[1:])
