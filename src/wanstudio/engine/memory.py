"""Where a model runs and how much memory it needs: memory profiles, their estimates, and the planner.

Six profiles, from fastest to leanest in GPU memory, each built from what diffusers offers:

- ``resident``: every component on the GPU for the whole job. Fastest; needs the most VRAM.
- ``model_offload``: components wait in RAM and move to the GPU one at a time when used (text encoder,
  each expert, VAE: an A14B model has one expert on the GPU at a time, the high-noise one hands over to
  the low-noise one at the boundary); VAE tiling. Costs a few seconds of transfers per job.
- ``int8_model_offload``: the same, with the denoisers quantised to int8 weight-only when they load
  (diffusers' torchao integration, per-channel scales): half the VRAM of an expert on the GPU, half the
  RAM and half the transfers; each linear layer casts its int8 weight up to the compute dtype as it runs
  (torchao's weight-only matmul), so precision is close to the full weights. Needs torchao (the
  ``quant`` extra); without it the planner never picks it and asking for it is refused.
- ``group_offload``: the denoisers' transformer blocks stream from pinned RAM one block ahead on a CUDA
  stream, so transfers overlap compute; the text encoder streams layer by layer, the VAE stays (tiled).
  At 480p and 720p a block's compute outlasts its transfer, so it costs little time; it needs the
  weights pinned in RAM.
- ``fp8_group_offload``: the same, with the denoisers' weights stored in float8 (e4m3) and cast to the
  compute dtype layer by layer (layerwise casting): half the RAM and half the transfers, a small loss
  of precision in the weights.
- ``sequential_offload``: accelerate moves every layer to the GPU when it runs, without prefetching:
  the smallest footprint, and the slowest.

The order is by estimated VRAM, falling down the list (ti2v-5B's model offload peaks at its text encoder,
so int8 only ties it there). The planner takes the fastest profile whose estimated peak fits the free VRAM
and whose RAM fits the machine's, among the profiles whose packages are installed; when none fits the RAM,
the one that needs the least RAM among those that fit the VRAM (RAM is why fp8 and int8 are offered); when
nothing fits the VRAM, the leanest, marked as not fitting.

On a CPU there is no device memory to save, and a profile applies those of its techniques that work on
the host: fp8 storage, int8 weights, group offloading (onload device = CPU, no stream: its hooks run,
moving nothing) and VAE tiling. Model and sequential offload have nothing to move between and are left out. So every
profile runs on a CPU; the automatic choice there is ``resident``, or ``fp8_group_offload`` when only
fp8 storage fits the RAM.

The figures are estimates from the weights (file sizes of the variant, or parameter counts), the token
count of the request (transformer activations) and the VAE decode, written so that a user can choose
before loading anything; they are not measurements.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection

from wanstudio._units import format_bytes
from wanstudio.engine.family import ModelSpec, Placement
from wanstudio.errors import InvalidParamsError

if TYPE_CHECKING:
    from wanstudio.orchestrator.manifest import Variant

PROFILES = ("resident", "model_offload", "int8_model_offload", "group_offload", "fp8_group_offload",
            "sequential_offload")
STREAMING_PROFILES = ("group_offload", "fp8_group_offload", "sequential_offload")  # weights move every step
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Techniques, the vocabulary of MemoryPlan.techniques and Placement.techniques.
ON_DEVICE = "all_on_device"
MODEL_OFFLOAD = "model_cpu_offload"
GROUP_OFFLOAD = "group_offload"
STREAM_PREFETCH = "cuda_stream_prefetch"
FP8_STORAGE = "fp8_layerwise_storage"
INT8_WEIGHTS = "int8_weight_only"
SEQUENTIAL_OFFLOAD = "sequential_cpu_offload"
VAE_TILING = "vae_tiling"

TECHNIQUES = {
    "resident": (ON_DEVICE,),
    "model_offload": (MODEL_OFFLOAD, VAE_TILING),
    "int8_model_offload": (INT8_WEIGHTS, MODEL_OFFLOAD, VAE_TILING),
    "group_offload": (GROUP_OFFLOAD, STREAM_PREFETCH, VAE_TILING),
    "fp8_group_offload": (FP8_STORAGE, GROUP_OFFLOAD, STREAM_PREFETCH, VAE_TILING),
    "sequential_offload": (SEQUENTIAL_OFFLOAD, VAE_TILING),
}
_ON_CPU = (FP8_STORAGE, INT8_WEIGHTS, GROUP_OFFLOAD, VAE_TILING)  # the techniques that do something on a CPU

DESCRIPTIONS = {
    "resident": "every component on the GPU for the whole job: fastest",
    "model_offload": "components take turns on the GPU (one A14B expert at a time); VAE tiling",
    "int8_model_offload": "model_offload with the denoisers in int8 weight-only (torchao): half their VRAM and RAM",
    "group_offload": "denoiser blocks stream from pinned RAM one ahead on a CUDA stream; VAE tiling",
    "fp8_group_offload": "group_offload with the denoisers stored in fp8: half the RAM and transfers",
    "sequential_offload": "every layer moves to the GPU when it runs, no prefetch: leanest, slowest",
}

GiB = 2**30
_ACTIVATION_FACTOR = 12  # live tensors per token and hidden unit at the peak of a transformer block
_VAE_DECODE_FACTOR = 4 * 384 * 3  # per pixel, times dtype bytes: 4 frames per causal chunk, 384 channels, 3 buffers
_VAE_TILE_PIXELS = 320 * 320  # a 256-pixel tile with its blending margins
_TEXT_WORK = 256 * 2**20  # a 512-token prompt through the text encoder, twice with a negative prompt
_SEQUENTIAL_WORKING_SET = 1 * GiB  # the largest layer in flight and the transfer buffers
_STREAM_DEPTH = 3  # blocks on the GPU while streaming: computing, prefetched, and one awaiting release
_DEFAULT_BLOCKS = 20
_TEXT_ENCODER_BLOCKS = 24  # umT5-XXL; the text encoder streams leaf by leaf, a block is an upper bound
_OVERHEAD = GiB // 2  # allocator fragmentation and small buffers, plus 10% of the working set
_RAM_BASE = 3 * GiB  # Python, torch and its CUDA host side, the libraries
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Profiles that need an optional package, and how to get it.
REQUIRES = {"int8_model_offload": "torchao"}
QUANT_INSTALL = "pip install 'wanstudio[quant]'"


def _installed(package: str) -> bool:
    """Whether `package` can be imported, without importing it (torchao's import takes seconds)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def available_profiles(installed: Callable[[str], bool] = _installed) -> tuple[str, ...]:
    """The profiles whose packages are installed (`installed` tells, by package name), in PROFILES' order."""
    return tuple(name for name in PROFILES if name not in REQUIRES or installed(REQUIRES[name]))


def detect_device(preference: str = "auto") -> str:
    """``cuda`` when a CUDA GPU is usable (and not refused by `preference`), else ``cpu``."""
    if preference != "auto":
        return preference
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(variant_dtype: str | None, device: str) -> str:
    """The variant's own dtype; float32 on a CPU and bfloat16 on a GPU for variants that name none."""
    if variant_dtype:
        return variant_dtype
    return "float32" if device == "cpu" else "bfloat16"


def check_profile(profile: str | None, available: Collection[str] | None = None) -> None:
    """INVALID_PARAMS for an unknown profile, or one whose package is not installed (`available`: the
    profiles that can run, default ``available_profiles()``)."""
    if profile is not None and profile not in PROFILES:
        raise InvalidParamsError(
            f"memory_profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}",
            param="memory_profile",
            suggestions=[f"--memory-profile {PROFILES[1]}"],
        )
    if profile in REQUIRES and profile not in (available_profiles() if available is None else available):
        raise InvalidParamsError(
            f"memory_profile {profile} needs {REQUIRES[profile]}, which is not installed",
            param="memory_profile",
            suggestions=[QUANT_INSTALL, f"--memory-profile {leaner_profile(profile, available)}"],
        )


def techniques_for(profile: str, device: str) -> tuple[str, ...]:
    """What `profile` applies on `device`: on a CPU, only the techniques that do something there."""
    techniques = TECHNIQUES[profile]
    if device.startswith("cuda"):
        return techniques
    return tuple(t for t in techniques if t in _ON_CPU)


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model's weights as loaded (compute dtype), by role, and what the estimates need."""

    denoisers: tuple[int, ...]  # each expert
    text_encoder: int
    vae: int
    other: int
    dtype_bytes: int
    blocks: int = _DEFAULT_BLOCKS

    @property
    def total(self) -> int:
        return sum(self.denoisers) + self.text_encoder + self.vae + self.other

    @classmethod
    def from_spec(cls, spec: ModelSpec, dtype_bytes: int = 2) -> "Footprint":
        """From the architecture's parameter counts (for variants whose files are not listed)."""
        experts = max(spec.experts, 1)
        vae_and_rest = max(spec.other_parameters - spec.text_encoder_parameters, 0)
        return cls(
            denoisers=(spec.parameters // experts * dtype_bytes,) * experts,
            text_encoder=spec.text_encoder_parameters * dtype_bytes,
            vae=vae_and_rest * dtype_bytes,
            other=0,
            dtype_bytes=dtype_bytes,
            blocks=spec.blocks or _DEFAULT_BLOCKS,
        )

    @classmethod
    def of(cls, spec: ModelSpec, variant: "Variant | None", dtype: str) -> "Footprint":
        """From the variant's weight files when the manifest lists them (scaled from the variant's dtype to
        the one it is loaded in), else from the spec."""
        dtype_bytes = DTYPE_BYTES.get(dtype, 2)
        if variant is None or not variant.lists_files:
            return cls.from_spec(spec, dtype_bytes)
        scale = dtype_bytes / DTYPE_BYTES.get(variant.dtype or dtype, dtype_bytes)
        by_component: dict[str, int] = {}
        for file in variant.files:
            if file.path.endswith(_WEIGHT_SUFFIXES):
                component = file.component or (file.path.split("/")[0] if "/" in file.path else "")
                by_component[component] = by_component.get(component, 0) + int(file.size * scale)
        if not by_component:
            return cls.from_spec(spec, dtype_bytes)
        denoisers = tuple(size for name, size in sorted(by_component.items()) if name.startswith(("transformer", "unet")))
        text = sum(size for name, size in by_component.items() if name.startswith("text_encoder"))
        vae = by_component.get("vae", 0)
        return cls(denoisers or (0,), text, vae, sum(by_component.values()) - sum(denoisers) - text - vae,
                   dtype_bytes, spec.blocks or _DEFAULT_BLOCKS)


@dataclass(frozen=True)
class Workload:
    """One request's size: what the activations and the VAE decode grow with."""

    width: int
    height: int
    frames: int
    tokens: int
    hidden_size: int

    @classmethod
    def of(cls, spec: ModelSpec, width: int, height: int, frames: int) -> "Workload":
        per_h, per_w = spec.tokens_per_latent
        latent_frames = (frames - 1) // spec.limits.frame_multiple + 1
        tokens = latent_frames * max(height // per_h, 1) * max(width // per_w, 1)
        return cls(width, height, frames, tokens, spec.hidden_size)


@dataclass(frozen=True)
class Estimate:
    vram_bytes: int | None  # None on a CPU
    ram_bytes: int


def estimate(profile: str, footprint: Footprint, work: Workload, device: str = "cuda") -> Estimate:
    """Estimated peak VRAM and RAM of one job with `profile` on `device` (see the module docstring)."""
    techniques = techniques_for(profile, device)
    b = footprint.dtype_bytes
    activations = work.tokens * work.hidden_size * b * _ACTIVATION_FACTOR
    vae_full = work.width * work.height * _VAE_DECODE_FACTOR * b
    video = work.width * work.height * work.frames * 3 * b  # the decoded video tensor
    if VAE_TILING in techniques:  # one tile at a time, and the tiles and the video they make up
        vae_work = min(vae_full, _VAE_TILE_PIXELS * _VAE_DECODE_FACTOR * b) + 2 * video
    else:
        vae_work = vae_full + video
    fp8 = FP8_STORAGE in techniques
    one_byte = fp8 or INT8_WEIGHTS in techniques
    denoisers = tuple(d // b if one_byte else d for d in footprint.denoisers)  # fp8, int8: one byte a weight
    stored = sum(denoisers) + footprint.text_encoder + footprint.vae + footprint.other
    host_video = work.width * work.height * work.frames * 3 * 4  # float32 frames handed to the MP4 encoder
    working = max(activations, vae_work)  # the denoiser and the VAE never run at once

    if not device.startswith("cuda"):
        return Estimate(None, _RAM_BASE + stored + working + host_video)

    biggest = max(footprint.denoisers)
    if profile == "resident":
        vram = footprint.total + working
        ram = footprint.total  # from_pretrained loads every component into RAM before they move
    elif profile in ("model_offload", "int8_model_offload"):
        # int8: the expert on the GPU is half the size, plus one layer's weight cast up while it runs.
        expert = max(denoisers) + (biggest / max(footprint.blocks, 1) / 4 if one_byte else 0)
        vram = max(footprint.text_encoder + _TEXT_WORK, expert + activations, footprint.vae + vae_work)
        ram = stored  # int8: each layer is quantised as it loads, so the full-precision weights never all sit in RAM
    elif profile in ("group_offload", "fp8_group_offload"):
        block = max(denoisers) / max(footprint.blocks, 1)
        upcast = biggest / max(footprint.blocks, 1) / 4 if fp8 else 0  # one layer cast up at a time
        streamed = _STREAM_DEPTH * block + upcast + 0.02 * biggest  # + embeddings and heads, onloaded whole
        text = _STREAM_DEPTH * footprint.text_encoder / _TEXT_ENCODER_BLOCKS + _TEXT_WORK
        vram = footprint.vae + max(text, streamed + activations, vae_work)
        # Pinning makes a second copy of each component while its groups are built; the fp8 profile loads
        # each expert in the compute dtype before casting it down.
        ram = stored + max(max(denoisers), footprint.text_encoder, biggest - max(denoisers))
    else:  # sequential_offload
        vram = _SEQUENTIAL_WORKING_SET + working
        ram = footprint.total
    vram += _OVERHEAD + working // 10
    return Estimate(int(vram), int(_RAM_BASE + ram + host_video))


@dataclass(frozen=True)
class MemoryPlan:
    """How one job uses memory: the profile, what it applies on this device, its estimated peaks, and why."""

    profile: str
    device: str
    dtype: str
    techniques: tuple[str, ...]
    vram_bytes: int | None  # estimated peak; None on a CPU
    ram_bytes: int
    fits: bool
    reason: str

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.dtype, self.profile, self.techniques)

    def to_json(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "device": self.device,
            "dtype": self.dtype,
            "techniques": list(self.techniques),
            "estimated_vram_bytes": self.vram_bytes,
            "estimated_ram_bytes": self.ram_bytes,
            "fits": self.fits,
            "reason": self.reason,
        }


def _size(n: int | None) -> str:
    return "unknown" if n is None else format_bytes(n)


def plan_memory(
    spec: ModelSpec,
    footprint: Footprint,
    work: Workload,
    *,
    device: str,
    dtype: str,
    vram_budget: int | None,
    ram_budget: int | None,
    profile: str | None = None,
    available: Collection[str] | None = None,
) -> MemoryPlan:
    """The plan for one job: `profile` when asked for, else the fastest that fits the budgets.

    `vram_budget` is the free VRAM of the GPU (None: unknown), `ram_budget` the RAM the job may use
    (None: unknown, not checked); `available` the profiles whose packages are installed (default:
    ``available_profiles()``), the only ones chosen automatically. A pure function given `available`: the
    engine, `wan doctor` and the model info call it with measured or assumed budgets.
    """
    available = available_profiles() if available is None else available
    check_profile(profile, available)
    candidates = [name for name in PROFILES if name in available]
    gpu = device.startswith("cuda")
    estimates = {name: estimate(name, footprint, work, device) for name in PROFILES}

    def ram_ok(name: str) -> bool:
        return ram_budget is None or estimates[name].ram_bytes <= ram_budget

    def vram_ok(name: str) -> bool:
        vram = estimates[name].vram_bytes
        return not gpu or vram_budget is None or (vram is not None and vram <= vram_budget)

    def make(name: str, fits: bool, reason: str) -> MemoryPlan:
        e = estimates[name]
        return MemoryPlan(name, device, dtype, techniques_for(name, device), e.vram_bytes, e.ram_bytes, fits, reason)

    def amounts(name: str) -> str:
        e = estimates[name]
        ram = f"{_size(e.ram_bytes)} of RAM" + (f" ({_size(ram_budget)} usable)" if ram_budget is not None else "")
        if not gpu:
            return f"about {ram}"
        free = f" ({_size(vram_budget)} free)" if vram_budget is not None else ""
        return f"about {_size(e.vram_bytes)} of VRAM{free} and {ram}"

    if profile is not None:
        fits = vram_ok(profile) and ram_ok(profile)
        reason = f"asked for {profile}: {amounts(profile)}"
        if not gpu and profile in ("model_offload", "int8_model_offload", "sequential_offload"):
            reason += "; on the CPU there is nothing to offload to, so the weights stay in RAM"
        if not fits:
            reason += "; more than there is: it may run out of memory, and is then retried with a leaner profile"
        return make(profile, fits, reason)

    if not gpu:
        if ram_ok("resident"):
            return make("resident", True, f"no GPU: everything in RAM on the CPU, {amounts('resident')}")
        if ram_ok("fp8_group_offload"):
            return make("fp8_group_offload", True, f"no GPU, and resident needs {_size(estimates['resident'].ram_bytes)} "
                        f"of RAM: fp8 storage of the denoisers fits, {amounts('fp8_group_offload')}")
        return make("fp8_group_offload", False, f"no GPU, and even with fp8 storage the model needs "
                    f"{amounts('fp8_group_offload')}: use a smaller model or a machine with more memory")
    if vram_budget is None:
        return make("model_offload", ram_ok("model_offload"),
                    "free VRAM unknown: model_offload keeps one component on the GPU at a time")

    for index, name in enumerate(candidates):
        if vram_ok(name) and ram_ok(name):
            reason = f"the fastest profile that fits: {amounts(name)}"
            if index:
                faster = candidates[index - 1]
                e = estimates[faster]
                short = "VRAM" if not vram_ok(faster) else "RAM"
                needed = e.vram_bytes if short == "VRAM" else e.ram_bytes
                reason += f"; {faster} would need about {_size(needed)} of {short}"
            return make(name, True, reason)
    in_vram = [name for name in candidates if vram_ok(name)]
    if in_vram:
        name = min(in_vram, key=lambda n: estimates[n].ram_bytes)
        return make(name, False, f"RAM is short: {name} needs the least RAM of the profiles that fit the VRAM, "
                    f"{amounts(name)}; expect swapping, or use a smaller model")
    name = min(candidates, key=lambda n: estimates[n].vram_bytes or 0)
    return make(name, False, f"nothing fits: even {name}, the leanest, needs {amounts(name)}; "
                "lower the resolution or the frames, or use a smaller model")


def leaner_profile(profile: str, available: Collection[str] | None = None) -> str | None:
    """The next available profile after `profile` in the order from fastest to leanest, None after the last."""
    available = available_profiles() if available is None else available
    return next((name for name in PROFILES[PROFILES.index(profile) + 1:] if name in available), None)


@dataclass(frozen=True)
class VramEstimate:
    """One row of a model's memory table: a size at the default frame count, a profile, its peaks."""

    width: int
    height: int
    num_frames: int
    profile: str
    bytes: int
    ram_bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {"resolution": f"{self.width}x{self.height}", "num_frames": self.num_frames,
                "memory_profile": self.profile, "vram_bytes": self.bytes, "ram_bytes": self.ram_bytes}


def estimate_vram_bytes(spec: ModelSpec, width: int, height: int, frames: int, profile: str, dtype_bytes: int = 2) -> int:
    """Estimated peak VRAM of one job on a GPU, from the spec's parameter counts."""
    vram = estimate(profile, Footprint.from_spec(spec, dtype_bytes), Workload.of(spec, width, height, frames)).vram_bytes
    assert vram is not None
    return vram


def choose_profile(spec: ModelSpec, width: int, height: int, frames: int, free_vram: int | None,
                   dtype_bytes: int = 2, ram_budget: int | None = None) -> str:
    """The profile the planner picks for `free_vram` (weights from the spec's parameter counts)."""
    dtype = next((name for name, size in DTYPE_BYTES.items() if size == dtype_bytes), "bfloat16")
    return plan_memory(spec, Footprint.from_spec(spec, dtype_bytes), Workload.of(spec, width, height, frames),
                       device="cuda", dtype=dtype, vram_budget=free_vram, ram_budget=ram_budget).profile


def vram_table(spec: ModelSpec, sizes: tuple[tuple[int, int], ...]) -> list[VramEstimate]:
    """Estimates for each size (at the default frame count) and each profile: the model info's table."""
    frames = spec.defaults.num_frames
    footprint = Footprint.from_spec(spec)
    rows = []
    for w, h in sizes:
        work = Workload.of(spec, w, h, frames)
        for profile in PROFILES:
            e = estimate(profile, footprint, work)
            rows.append(VramEstimate(w, h, frames, profile, e.vram_bytes or 0, e.ram_bytes))
    return rows
