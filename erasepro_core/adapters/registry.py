"""Model families by pipeline class: ``adapter_for(pipe)`` walks the pipeline's class hierarchy (by name, so
registering a family imports nothing) and calls the first registered builder.

Adding a family: a module with ``x_adapter(pipe) -> Adapter`` and one :func:`register` call below.
"""

from __future__ import annotations

from collections.abc import Callable

from erasepro_core.adapters.base import Adapter, UnsupportedModelError
from erasepro_core.adapters.flux import flux_adapter
from erasepro_core.adapters.sd import sd_adapter
from erasepro_core.adapters.sd3 import sd3_adapter
from erasepro_core.adapters.sdxl import sdxl_adapter

Builder = Callable[[object], Adapter]
ADAPTERS: dict[str, Builder] = {}


def register(builder: Builder, *pipeline_classes: str) -> None:
    for name in pipeline_classes:
        ADAPTERS[name] = builder


register(sd_adapter, "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")
register(sdxl_adapter, "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
         "StableDiffusionXLInpaintPipeline")
register(flux_adapter, "FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")
register(sd3_adapter, "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
         "StableDiffusion3InpaintPipeline")


def adapter_for(pipe: object) -> Adapter:
    """Describe a diffusers pipeline's editable parts, or raise :class:`UnsupportedModelError`."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__](pipe)
    raise UnsupportedModelError(
        f"{type(pipe).__name__} is not a supported pipeline; ErasePro edits {', '.join(sorted(ADAPTERS))}"
    )
