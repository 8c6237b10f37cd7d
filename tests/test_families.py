"""The model-family table is the one place the adapters, the base-model registry and the worker cache read."""

from __future__ import annotations

import pytest

from erasepro_core.families import FAMILIES, family_of_label, family_of_pipeline
from erasepro_jobs.registry import BaseModelInfo, parse_registry
from worker.cache import pick_dtype


@pytest.mark.parametrize(("label", "resolution"), [("sd1", 512), ("sd2", 768), ("sdxl", 1024), ("flux", 1024),
                                                   ("someday", 512)])
def test_hub_models_take_their_family_rows_resolution(label: str, resolution: int) -> None:
    models = parse_registry(f'[models.m]\nhub_id = "org/m"\nfamily = "{label}"\n')
    assert models["m"].limits.resolution == resolution


@pytest.mark.parametrize(("family", "dtype", "device", "expected"), [
    ("flux", None, "cuda", "bfloat16"),  # the row's accelerator dtype
    ("sdxl", None, "cuda", None),  # as stored
    ("flux", "float16", "cuda", "float16"),  # the registry's own choice wins
    ("flux", None, "cpu", "float32"),  # CPU: always float32
])
def test_worker_dtype_comes_from_the_family_row(family: str, dtype: str | None, device: str,
                                                expected: str | None) -> None:
    info = BaseModelInfo(name="m", ref="org/m", source="hub", family=family, dtype=dtype)
    assert pick_dtype(info, device) == expected


def test_every_row_builds_its_adapter_and_names_its_pipelines() -> None:
    from erasepro_core.adapters import UnsupportedModelError, adapter_for

    for family in FAMILIES.values():
        assert callable(family.build), family.name
        assert all(family_of_pipeline([p]) is family for p in family.pipelines)
        assert all(family_of_label(label) is family for label in family.labels)
    with pytest.raises(UnsupportedModelError, match="FluxPipeline"):
        adapter_for(object())
