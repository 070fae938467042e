"""What each model can do, what it needs, what is on disk; and which model suits a request.

`model_info` describes one manifest model through its family's spec (capabilities, inputs, defaults,
limits, estimated VRAM per resolution and memory profile) and the store (state of each variant); a LoRA
entry of the manifest (``kind = "lora"``) is described with its base models and no engine part.
`recommend` picks a model, variant and memory profile for a task, inputs, VRAM and a preference, and
says why: the denoiser's parameter count stands for quality, its inverse for speed. `what_fits` plans
each model on the probed hardware (`wan doctor`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from wanstudio.engine.family import IMAGE_NONE, IMAGE_REQUIRED, ModelSpec
from wanstudio.engine.hardware import HardwareInfo
from wanstudio.engine.memory import (
    DESCRIPTIONS,
    DTYPE_BYTES,
    PROFILES,
    STREAMING_PROFILES,
    available_profiles,
    TECHNIQUES,
    Footprint,
    MemoryPlan,
    Workload,
    choose_profile,
    dtype_for,
    estimate_vram_bytes,
    plan_memory,
    vram_table,
)
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.errors import InvalidParamsError, ModelNotFoundError, WanError
from wanstudio.orchestrator.manifest import Model
from wanstudio.orchestrator.orchestrator import Orchestrator

Preference = Literal["speed", "balanced", "quality"]
PREFERENCES = ("speed", "balanced", "quality")


def spec_json(spec: ModelSpec) -> dict[str, Any]:
    """The engine part of a model's description (`wan models list --json`, `GET /v1/models`)."""
    return {
        "capabilities": list(spec.capabilities),
        "inputs": {"prompt": "required", "image": spec.image},
        "experts": spec.experts,
        "defaults": asdict(spec.defaults),
        "limits": asdict(spec.limits),
        "trained_sizes": [f"{w}x{h}" for w, h in spec.trained_sizes],
        "vram_estimates": [e.to_json() for e in vram_table(spec, spec.trained_sizes or ((spec.defaults.width, spec.defaults.height),))],
        "memory_profiles": [  # the ones this installation can run (int8 needs the optional torchao)
            {"name": name, "techniques": list(TECHNIQUES[name]), "description": DESCRIPTIONS[name]}
            for name in available_profiles()
        ],
        "summary": spec.description,
    }


def model_info(orchestrator: Orchestrator, model: Model, *, with_status: bool = True) -> dict[str, Any]:
    """Capabilities, limits, defaults, VRAM estimates and local status of one model, as a JSON object.

    `kind` is ``model`` or ``lora``; a LoRA has `base_models` and `engine` None (it generates nothing)."""
    info: dict[str, Any] = {
        "id": model.id,
        "name": model.name,
        "version": model.version,
        "kind": model.kind,
        "family": model.family,
        "task": model.task or None,
        "description": model.description,
        "default_variant": model.default_variant,
        "optional_components": list(model.optional_components),
        "hf": {"repo": model.hf.repo, "revision": model.hf.revision} if model.hf else None,
        "variants": [
            {
                "name": v.name,
                "dtype": v.dtype,
                "file_list": "manifest" if v.lists_files else "hub",
                "files": len(v.files) if v.lists_files else None,
                "bytes": v.total_bytes if v.lists_files else None,
                "components": list(v.components),
                "state": orchestrator.status(model.id, v.name).state if with_status else None,
            }
            for v in model.variants.values()
        ],
    }
    if model.is_lora:
        info["base_models"] = list(model.base_models)
        info["engine"] = None
        return info
    try:
        info["engine"] = spec_json(spec_of(family_for(model), model))
    except WanError as error:  # a model whose family is not installed is still listed, with the reason
        info["engine"] = {"error": error.to_dict()}
    return info


@dataclass(frozen=True)
class Recommendation:
    model: str
    variant: str
    memory_profile: str
    width: int
    height: int
    estimated_vram_bytes: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recommend(
    orchestrator: Orchestrator,
    *,
    task: str = "t2v",
    has_image: bool = False,
    vram_bytes: int | None = None,
    preference: Preference = "balanced",
) -> Recommendation:
    """The model, variant and memory profile to use; `vram_bytes` None means no GPU (CPU only)."""
    if preference not in PREFERENCES:
        raise InvalidParamsError(f"preference {preference!r} is unknown; choose {', '.join(PREFERENCES)}", param="preference")
    wants_image = has_image or task == "i2v"
    candidates = []
    for model in orchestrator.manifest.models.values():
        try:
            spec = spec_of(family_for(model), model)  # a LoRA entry has no family to run it: skipped
        except WanError:
            continue
        if (wants_image and spec.image == IMAGE_NONE) or (not wants_image and spec.image == IMAGE_REQUIRED):
            continue
        candidates.append((model, spec))
    if not candidates:
        kind = "image-to-video" if wants_image else "text-to-video"
        raise ModelNotFoundError(f"no model in the manifest does {kind}", suggestions=["wan models list"])
    # Bigger denoisers first for quality, smaller first for speed; balanced starts big but refuses a
    # profile that streams weights every step for a big model when a smaller model fits without.
    candidates.sort(key=lambda item: item[1].parameters, reverse=preference != "speed")

    if vram_bytes is None:
        model, spec = candidates[0]
        variant = "dev" if "dev" in model.variants else model.default_variant
        defaults = spec.defaults_for(variant)
        return Recommendation(
            model.id, variant, "resident", defaults.width, defaults.height, None,
            f"no CUDA GPU: only the tiny {variant} variants run in reasonable time on a CPU"
            if variant == "dev" else "no CUDA GPU: expect hours per video on a CPU",
        )
    for index, (model, spec) in enumerate(candidates):
        width, height = spec.defaults.width, spec.defaults.height
        variant = model.variant().name
        dtype_bytes = DTYPE_BYTES.get(model.variant().dtype or "bfloat16", 2)
        profile = choose_profile(spec, width, height, spec.defaults.num_frames, vram_bytes, dtype_bytes)
        needed = estimate_vram_bytes(spec, width, height, spec.defaults.num_frames, profile, dtype_bytes)
        last = index == len(candidates) - 1
        too_slow = preference == "balanced" and profile in STREAMING_PROFILES and not last
        if needed <= vram_bytes and not too_slow:
            why = {
                "quality": "the largest model that fits",
                "speed": "the fastest model",
                "balanced": "the largest model that fits without streaming its weights every step",
            }[preference]
            return Recommendation(
                model.id, variant, profile, width, height, needed,
                f"{why}: about {needed / 2**30:.1f} GiB of {vram_bytes / 2**30:.1f} GiB at {width}x{height} with {profile}",
            )
    model, spec = candidates[-1]
    width, height = min(spec.trained_sizes or ((spec.defaults.width, spec.defaults.height),), key=lambda s: s[0] * s[1])
    needed = estimate_vram_bytes(spec, width, height, spec.defaults.num_frames, PROFILES[-1])
    return Recommendation(
        model.id, model.variant().name, PROFILES[-1], width, height, needed,
        f"nothing fits {vram_bytes / 2**30:.1f} GiB comfortably; the leanest plan needs about {needed / 2**30:.1f} GiB",
    )


@dataclass(frozen=True)
class Fit:
    """Whether one model, variant and size fits this machine, with the plan that makes it fit (`wan doctor`)."""

    model: str
    variant: str
    width: int
    height: int
    num_frames: int
    plan: MemoryPlan

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "resolution": f"{self.width}x{self.height}",
            "num_frames": self.num_frames,
            "memory_profile": self.plan.profile,
            "device": self.plan.device,
            "fits": self.plan.fits,
            "estimated_vram_bytes": self.plan.vram_bytes,
            "estimated_ram_bytes": self.plan.ram_bytes,
            "reason": self.plan.reason,
        }


def what_fits(orchestrator: Orchestrator, hardware: HardwareInfo, device: str) -> list[Fit]:
    """For each model's default variant at each trained size (one per orientation), and on a machine
    without a GPU its dev variant too, the plan the engine would choose on `device` with this hardware."""
    gpu = hardware.gpu(device)
    vram = gpu.free_vram_bytes if gpu is not None else None
    fits = []
    for model in orchestrator.manifest.models.values():
        try:
            spec = spec_of(family_for(model), model)  # a LoRA entry has no family to run it: skipped
        except WanError:
            continue
        names = [model.default_variant]
        if gpu is None and "dev" in model.variants and model.default_variant != "dev":
            names.append("dev")
        for name in names:
            variant = model.variants[name]
            defaults = spec.defaults_for(name)
            sizes = [(defaults.width, defaults.height)]
            if name != "dev" and spec.trained_sizes:
                sizes = list(spec.trained_sizes)
            seen: set[int] = set()
            for width, height in sizes:
                if width * height in seen:  # 1280x720 and 720x1280 need the same
                    continue
                seen.add(width * height)
                dtype = dtype_for(variant.dtype, device)
                work = Workload.of(spec, width, height, defaults.num_frames)
                plan = plan_memory(spec, Footprint.of(spec, variant, dtype), work, device=device, dtype=dtype,
                                   vram_budget=vram, ram_budget=hardware.ram_budget)
                fits.append(Fit(model.id, name, width, height, defaults.num_frames, plan))
    return fits
