"""The ``BUDGETS`` setting: monthly limits (UTC calendar months) per API key and per end user, as one JSON document.

``per_key`` and ``per_user`` are the defaults of every caller and every end user; ``keys`` (by caller id,
``key-<16 hex>`` or ``iam-<16 hex>``: ``imagegen.auth.caller_scope``) and ``users`` (by end user: the request's
``safety_identifier``, else ``user``) override them. An override replaces the default's fields it names and keeps the
others; ``null`` names a field unlimited. End users are counted per caller, so a ``users`` entry sets the limit of
that end user under each key, counted apart. Pydantic only: settings.py imports it at cold start.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from imagegen.models import Model

CALLER_ID = re.compile(r"(key|iam)-[0-9a-f]{16}")
# As long as the requests' safety_identifier and user may be (imagegen.options).
MAX_END_USER_LENGTH = 256


def _caller_id(value: str) -> str:
    if not CALLER_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a caller id: an API key is named 'key-<16 hex>' (python -m devtools.key_id <key> prints it), "
            "an IAM principal 'iam-<16 hex>'"
        )
    return value


CallerId = Annotated[str, AfterValidator(_caller_id)]
EndUser = Annotated[str, StringConstraints(min_length=1, max_length=MAX_END_USER_LENGTH)]


class BudgetLimits(Model):
    """The limits of one budget for a month; a field left None is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: a JSON integer, not 10.0, "10" or true.
    images_per_month: int | None = Field(default=None, ge=0, strict=True)
    # Exact (a JSON number is read as written, never through a float); bounded to stay a DynamoDB number.
    usd_per_month: Decimal | None = Field(default=None, ge=0, le=Decimal(10**12), decimal_places=10)

    @property
    def limited(self) -> bool:
        """Whether any limit applies (else nothing is reserved for this budget)."""
        return self.images_per_month is not None or self.usd_per_month is not None

    def over(self, default: BudgetLimits) -> BudgetLimits:
        """This override over ``default``: the fields set here (an explicit null too) replace the default's."""
        return default.model_copy(update={name: getattr(self, name) for name in self.model_fields_set})


class BudgetsDocument(Model):
    """The whole ``BUDGETS`` document; every part optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_key: BudgetLimits = BudgetLimits()
    per_user: BudgetLimits = BudgetLimits()
    keys: dict[CallerId, BudgetLimits] = Field(default_factory=dict)
    users: dict[EndUser, BudgetLimits] = Field(default_factory=dict)

    def for_key(self, caller: str) -> BudgetLimits:
        """The limits of the caller's own budget (``per_key``, with its ``keys`` entry over it)."""
        override = self.keys.get(caller)
        return self.per_key if override is None else override.over(self.per_key)

    def for_user(self, end_user: str) -> BudgetLimits:
        """The limits of an end user's budget, under any one caller (``per_user``, with its ``users`` entry over it)."""
        override = self.users.get(end_user)
        return self.per_user if override is None else override.over(self.per_user)
