"""register_variants: a family's table of ``name -> constructor defaults`` plus its metadata."""

from __future__ import annotations

import pytest

from kerasdl import registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.ensure_registered()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def builder(num_classes: int = 10, input_shape: tuple = (8, 8, 1), depth: int = 1) -> None: ...


def test_rows_share_the_family_metadata_and_meta_overrides_it(scratch_registry) -> None:
    registry.register_variants(
        builder,
        {
            "zz_a": dict(depth=1),
            "zz_b": dict(depth=2, input_shape=[16, 16, 3]),
            "zz_c": dict(depth=3),
        },
        family="zz",
        paper="Someone 2020",
        year=2020,
        default_input=(8, 8, 1),
        min_input=4,
        meta={"zz_c": dict(paper="Other 2021", year=2021, min_input=2)},
    )
    a, b, c = (registry.get_entry(n) for n in ("zz_a", "zz_b", "zz_c"))
    assert (a.family, a.paper, a.year, a.default_input, a.min_input) == (
        "zz",
        "Someone 2020",
        2020,
        (8, 8, 1),
        4,
    )
    assert a.defaults == {"depth": 1} and a.builder is builder
    assert b.default_input == (16, 16, 3)  # a row with an input shape is its own reference input
    assert (c.paper, c.year, c.min_input, c.family) == ("Other 2021", 2021, 2, "zz")
    assert registry.list_models("zz_*") == ["zz_a", "zz_b", "zz_c"]


def test_meta_for_a_missing_row_is_an_error(scratch_registry) -> None:
    with pytest.raises(ValueError, match="zz_typo"):
        registry.register_variants(builder, {"zz_a": {}}, family="zz", meta={"zz_typo": {}})


def test_registry_imports_the_zoo_package_not_module_names() -> None:
    assert not hasattr(registry, "MODEL_MODULES")
    registry.ensure_registered()
    families = {registry.get_entry(n).family for n in registry.list_models()}
    assert {"resnet", "vit", "darts", "efficientnet", "foundations"} <= families
