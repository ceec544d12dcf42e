"""README's per-model table is generated from the catalog: it must be what the generator writes today."""

from __future__ import annotations

from devtools import model_table
from imagegen.specs import Catalog, catalog


def test_readme_model_table_is_the_catalogs() -> None:
    readme = model_table.README.read_text(encoding="utf-8")
    assert model_table.replace(readme, model_table.render(catalog())) == readme, "run: python -m devtools.model_table"
    assert model_table.main(["--check"]) == 0


def test_the_check_fails_when_the_catalog_moves_on() -> None:
    readme = model_table.README.read_text(encoding="utf-8")
    changed = [spec.model_copy(update={"max_n": 4}) if spec.id == "gpt-image-2.6-flare" else spec for spec in catalog().specs]
    assert model_table.replace(readme, model_table.render(Catalog(tuple(changed), catalog().defaults))) != readme
    for spec in catalog().specs:
        assert f"`{spec.id}`" in readme
