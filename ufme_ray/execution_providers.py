"""onnxruntime execution providers as the settings name them, and the choice among what a machine has.

A provider is what onnxruntime's `InferenceSession(providers=...)` takes: a name, or a
(name, options) pair such as `("CUDAExecutionProvider", {"device_id": 0})`. A list names them most
preferred first. Which of them a machine has is known only when a model loads (the `onnxruntime`
wheel has CPU; `onnxruntime-gpu`, the `[gpu]` extra, adds CUDA and TensorRT), so the settings
check names and order, and `choose` drops the unavailable ones at load time. No onnxruntime import
here: `ufme_ray.config` validates with this module.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator

StageName = Literal["detector", "quality", "liveness", "morph", "embedder"]

CPU = "CPUExecutionProvider"
# onnxruntime's names (`onnxruntime.get_all_providers()`, a unit test checks) of the providers
# worth asking for on a server; anything else is refused as a typo.
KNOWN = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "MIGraphXExecutionProvider",
    "OpenVINOExecutionProvider",
    "DnnlExecutionProvider",
    CPU,
)
# Providers that run on an NVIDIA GPU: Ray hides the GPUs from an actor that reserves none.
NVIDIA = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})

OptionValue = str | int | float | bool  # onnxruntime turns each value into its str()
Provider = str | tuple[str, dict[str, OptionValue]]


def name_of(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def names(providers: list[Provider]) -> list[str]:
    return [name_of(provider) for provider in providers]


def _valid(providers: list[Provider]) -> list[Provider]:
    asked = names(providers)
    unknown = [name for name in asked if name not in KNOWN]
    if unknown:
        raise ValueError(f"unknown execution provider {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    if not asked or len(set(asked)) != len(asked):
        raise ValueError(f"{asked}: name each execution provider once, most preferred first")
    if CPU in asked[:-1]:
        # onnxruntime gives the CPU provider every node it can run, which is all of them.
        raise ValueError(f"{asked}: providers after {CPU} would never run; put it last")
    return providers


ProviderList = Annotated[list[Provider], AfterValidator(_valid)]


def choose(asked: list[Provider], available: list[str]) -> list[Provider]:
    """The asked providers that are `available`, in the asked order, with CPU always last (the asked
    CPU entry, options included, or the plain name)."""
    chosen = [p for p in asked if name_of(p) in available and name_of(p) != CPU]
    return chosen + [next((p for p in asked if name_of(p) == CPU), CPU)]
