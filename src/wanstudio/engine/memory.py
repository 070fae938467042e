"""Where a model runs and how much memory it needs: device and dtype choice, memory profiles, estimates.

Three profiles, from fastest to leanest, each a feature of diffusers:

- ``resident``: every component on the GPU for the whole job.
- ``model_offload``: components wait in RAM and move to the GPU one at a time (text encoder, each
  expert, VAE): the peak is the largest component plus the activations.
- ``sequential_offload``: weights stream to the GPU layer by layer: smallest footprint, slowest.

On a CPU there is one profile, ``resident``. The VRAM figures are estimates from the parameter counts
and the token count of the request (weights + transformer activations + VAE decoding), written so a
user can choose before loading anything; they are not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanstudio.engine.family import ModelSpec, Placement
from wanstudio.errors import InvalidParamsError

PROFILES = ("resident", "model_offload", "sequential_offload")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_SEQUENTIAL_WORKING_SET = 2 * 1024**3  # a few layers in flight plus the CUDA context
_ACTIVATION_FACTOR = 12  # live tensors per token and hidden unit at the peak of a transformer block
_VAE_DECODE_BYTES_PER_PIXEL = 4 * 384 * 2 * 3  # 4 frames per causal chunk, 384 channels, 2 bytes, 3 buffers


def detect_device(preference: str = "auto") -> str:
    """``cuda`` when a CUDA GPU is usable (and not refused by `preference`), else ``cpu``."""
    if preference != "auto":
        return preference
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(variant_dtype: str | None, device: str) -> str:
    """The variant's own dtype on a GPU; float32 on a CPU for full-precision-free variants (the dev ones)."""
    if variant_dtype:
        return variant_dtype
    return "float32" if device == "cpu" else "bfloat16"


def placement_for(spec: ModelSpec, variant_dtype: str | None, device: str, profile: str | None,
                  width: int, height: int, frames: int, free_vram: int | None) -> Placement:
    """The placement for one job: the requested profile, or on a GPU the fastest one that fits."""
    check_profile(profile)
    dtype = dtype_for(variant_dtype, device)
    if device == "cpu":
        return Placement(device, dtype, "resident")
    if profile is None:
        profile = choose_profile(spec, width, height, frames, free_vram, DTYPE_BYTES.get(dtype, 2))
    return Placement(device, dtype, profile)


def check_profile(profile: str | None) -> None:
    if profile is not None and profile not in PROFILES:
        raise InvalidParamsError(
            f"memory_profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}",
            param="memory_profile",
            suggestions=[f"--memory-profile {PROFILES[1]}"],
        )


def choose_profile(spec: ModelSpec, width: int, height: int, frames: int, free_vram: int | None, dtype_bytes: int = 2) -> str:
    """The fastest profile whose estimate fits `free_vram` (the leanest when none does or it is unknown)."""
    if free_vram is None:
        return "model_offload"
    for profile in PROFILES:
        if estimate_vram_bytes(spec, width, height, frames, profile, dtype_bytes) <= free_vram:
            return profile
    return PROFILES[-1]


@dataclass(frozen=True)
class VramEstimate:
    width: int
    height: int
    num_frames: int
    profile: str
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"resolution": f"{self.width}x{self.height}", "num_frames": self.num_frames,
                "memory_profile": self.profile, "vram_bytes": self.bytes}


def estimate_vram_bytes(spec: ModelSpec, width: int, height: int, frames: int, profile: str, dtype_bytes: int = 2) -> int:
    """Estimated peak VRAM of one job (see the module docstring for what it counts)."""
    per_h, per_w = spec.tokens_per_latent
    latent_frames = (frames - 1) // spec.limits.frame_multiple + 1
    tokens = latent_frames * (height // per_h) * (width // per_w)
    activations = tokens * spec.hidden_size * dtype_bytes * _ACTIVATION_FACTOR
    vae = width * height * _VAE_DECODE_BYTES_PER_PIXEL
    working = max(activations, vae)
    if profile == "resident":
        weights = (spec.parameters + spec.other_parameters) * dtype_bytes
    elif profile == "model_offload":
        weights = max(spec.parameters // max(spec.experts, 1), spec.other_parameters) * dtype_bytes
    else:
        weights = _SEQUENTIAL_WORKING_SET
    return int(weights + working)


def vram_table(spec: ModelSpec, sizes: tuple[tuple[int, int], ...]) -> list[VramEstimate]:
    """Estimates for each size (at the default frame count) and each GPU profile: the model info's table."""
    frames = spec.defaults.num_frames
    return [
        VramEstimate(w, h, frames, profile, estimate_vram_bytes(spec, w, h, frames, profile))
        for (w, h) in sizes
        for profile in PROFILES
    ]
