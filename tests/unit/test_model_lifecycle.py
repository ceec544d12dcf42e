"""A model's lifecycle as data (Legacy, extended access, announced end of life, retirement), shown in README's table
and in GET /v1/models; a retired model without a named successor is allowed."""

from __future__ import annotations

import datetime as dt

from devtools import model_table
from imagegen.model_list import list_models
from imagegen.registry import ModelRegistry
from imagegen.specs import catalog

NOVA, CORE, TITAN = "amazon.nova-canvas-v1:0", "stability.stable-image-core-v1:1", "amazon.titan-image-generator-v2:0"
TODAY = dt.date(2026, 12, 3)


def _legacy_core():
    return catalog()[CORE].model_copy(
        update={"legacy_on": dt.date(2026, 10, 1), "extended_access_on": dt.date(2027, 1, 1), "end_of_life_on": dt.date(2027, 4, 1)}
    )


def test_the_table_shows_current_legacy_and_retired_models_with_their_dates() -> None:
    assert model_table._lifecycle(catalog()[CORE]) == "current"
    assert model_table._lifecycle(catalog()[NOVA]) == (
        "Legacy since 2026-07-09, end of life 2026-09-30 (announced, not enforced) (unverified: third-party dates)"
    )
    assert model_table._lifecycle(catalog()[TITAN]) == "retired_on 2026-06-30 (404 `model_retired`)"
    legacy = _legacy_core().model_copy(update={"successor": NOVA})
    assert model_table._lifecycle(legacy) == (
        f"Legacy since 2026-10-01, extended access from 2027-01-01, end of life 2027-04-01 (announced, not enforced) → `{NOVA}`"
    )
    retired = catalog()["dall-e-3"]
    assert model_table._lifecycle(retired).endswith(f"→ `{retired.successor}`")


def test_get_models_marks_legacy_models_and_leaves_out_retired_ones() -> None:
    registry = ModelRegistry([catalog()["local"], catalog()[NOVA], _legacy_core(), catalog()[TITAN]], "local", today=lambda: TODAY)
    cards = {card.id: card for card in list_models(registry, today=TODAY).data}
    assert TITAN not in cards
    assert cards["local"].lifecycle is not None and cards["local"].lifecycle.status == "active"
    nova = cards[NOVA].lifecycle
    assert nova is not None
    assert (nova.status, nova.legacy_on, nova.end_of_life_on, nova.verified) == ("legacy", dt.date(2026, 7, 9), dt.date(2026, 9, 30), False)
    core = cards[CORE].lifecycle
    assert core is not None and (core.status, core.extended_access_on, core.verified) == ("legacy", dt.date(2027, 1, 1), True)
    # Before its Legacy day a model is active, its dates already shown.
    before = list_models(registry, today=dt.date(2026, 9, 1)).data
    early = next(card for card in before if card.id == CORE).lifecycle
    assert early is not None and (early.status, early.legacy_on) == ("active", dt.date(2026, 10, 1))
    dumped = cards[NOVA].model_dump(mode="json")["lifecycle"]
    assert dumped["end_of_life_on"] == "2026-09-30" and dumped["status"] == "legacy"


def test_get_models_says_which_models_only_edit_and_the_table_says_edits_only() -> None:
    inpaint = catalog()["stability.stable-image-inpaint-v1:0"]
    registry = ModelRegistry([catalog()["local"], catalog()[NOVA], inpaint], "local", today=lambda: TODAY)
    cards = {card.id: card.capabilities for card in list_models(registry, today=TODAY).data}
    assert (cards["local"].generations, cards[NOVA].generations, cards[inpaint.id].generations) == (True, True, False)
    assert cards[inpaint.id].edits is not None
    assert model_table._inputs(inpaint) == "edits only: 1–1 images, mask"
    assert model_table._inputs(catalog()[NOVA]).startswith("edits: ")
