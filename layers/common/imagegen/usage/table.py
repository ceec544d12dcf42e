"""The keys of the usage table, one DynamoDB table (template.yaml's UsageTable) for everything this package keeps:
string partition key ``pk``, string sort key ``sk``, TTL attribute ``expires_at``.

======================  ===============================================  ===========================================
item                    pk                                               sk
======================  ===============================================  ===========================================
usage record            ``record#<record id>``                           ``record``
usage counter           ``usage#<scope>#<width>`` (scope: a caller, or   ``<bucket start, 10 digits>#<group digest>``
                        ``*`` for every caller; width ``1m|1h|1d``)
budget counter          ``budget#key#<caller>`` or                       ``<YYYY-MM>`` (UTC month)
                        ``budget#user#<caller>#<end user>``
cache entry             ``cache#<request digest>``                       ``cache``
======================  ===============================================  ===========================================
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"
ALL_CALLERS = "*"

Width = Literal["1m", "1h", "1d"]
WIDTH_SECONDS: dict[Width, int] = {"1m": 60, "1h": 3600, "1d": 86400}


def record_key(record_id: str) -> dict[str, str]:
    return {PK: f"record#{record_id}", SK: "record"}


def counter_pk(scope: str, width: Width) -> str:
    return f"usage#{scope}#{width}"


def counter_sk(bucket_start: int, group_digest: str) -> str:
    return f"{bucket_start:010d}#{group_digest}"


def budget_key(kind: Literal["key", "user"], caller: str, month: str, end_user: str | None = None) -> dict[str, str]:
    subject = caller if kind == "key" else f"{caller}#{end_user}"
    return {PK: f"budget#{kind}#{subject}", SK: month}


def cache_key(digest: str) -> dict[str, str]:
    return {PK: f"cache#{digest}", SK: "cache"}


def number(value: Decimal | int) -> dict[str, str]:
    """A DynamoDB number, written out in full (no exponent) and never ``-0``."""
    return {"N": "0" if value == 0 else str(value) if isinstance(value, int) else format(value, "f")}
