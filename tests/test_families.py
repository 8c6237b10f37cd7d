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


def test_every_label_has_hub_sizes_and_the_door_reads_them() -> None:
    """A hub model's memory estimate comes from its family row's sizes (FLUX and SD-3 too, not SD-1's)."""
    from erasepro_core.families import hub_sizes
    from erasepro_jobs.memory import generation_bytes, model_facts

    for family in FAMILIES.values():
        assert set(family.sizes) == set(family.labels), family.name
    facts = {label: model_facts(BaseModelInfo(name="m", ref="org/m", source="hub", family=label))
             for label in ("sd1", "sdxl", "flux", "sd3", "someday")}
    assert facts["someday"] == facts["sd1"]  # an unknown label: SD-1's sizes, as before
    assert facts["flux"].dims.context_width == 768 + 4096 and facts["flux"].unet_width == 3072
    assert facts["sd3"].dims.context_width == 768 + 1280 + 4096 and facts["sd3"].unet_width == 1536
    assert facts["flux"].weight_bytes == hub_sizes("flux").weight_bytes > facts["sdxl"].weight_bytes
    gen = {label: generation_bytes(BaseModelInfo(name="m", ref="org/m", source="hub", family=label), 1024, 1024, 1)
           for label in ("sdxl", "flux")}
    assert gen["flux"] > gen["sdxl"]  # FLUX's 3072-wide blocks at the same size need more than SDXL's 1280


def test_lora_key_maps_come_from_the_rows() -> None:
    """check_format and the kohya names read the family row: a new row with a map is accepted, one without is
    refused for LoRA formats (and still fine as a delta or a diffusers folder)."""
    from erasepro_core.families import Family, LoraKeys, register
    from erasepro_core.formats import FormatError, check_format, kohya_name

    key = "text_encoder.text_model.encoder.layers.0.mlp.fc2.weight"
    register(Family("toyfam", ("ToyPipeline",), "x:y", {"toy": 256}, lora=LoraKeys({"text_encoder": "lora_toy"})))
    register(Family("nolora", ("NoPipeline",), "x:y", {"nolora": 256}))
    try:
        check_format("toyfam", [key], "kohya")
        assert kohya_name("toyfam", key) == "lora_toy_text_model_encoder_layers_0_mlp_fc2"
        check_format("nolora", [key], "diffusers")
        with pytest.raises(FormatError, match="no lora key map for model family 'nolora'"):
            check_format("nolora", [key], "lora")
    finally:
        del FAMILIES["toyfam"], FAMILIES["nolora"]
    assert kohya_name("sd", key) == "lora_te_text_model_encoder_layers_0_mlp_fc2"  # the rows' own maps, unchanged
    assert kohya_name("sdxl", key) == "lora_te1_text_model_encoder_layers_0_mlp_fc2"
