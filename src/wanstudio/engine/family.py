"""What a model family plugin provides: the architecture's spec, and how to load and run it.

A family is one object registered under the entry point group ``wanstudio.families`` (the built-in WAN 2.2
family registers there exactly like a third-party one; see docs/adding-a-model-family.md). The engine
does everything around it: resolving and validating parameters against the spec, ensuring the files,
choosing the device, caching what ``load`` returns, progress, cancellation and writing the MP4.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from wanstudio.orchestrator.manifest import Model, Variant

IMAGE_NONE, IMAGE_OPTIONAL, IMAGE_REQUIRED = "none", "optional", "required"


@dataclass(frozen=True)
class Defaults:
    """The values a request gets for what it leaves out: the architecture's official configuration."""

    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float | None = None  # the low-noise expert's scale, for two-expert models
    flow_shift: float | None = None
    negative_prompt: str = ""


@dataclass(frozen=True)
class Limits:
    """What the architecture accepts. Sizes are multiples of ``size_multiple``; frame counts are
    ``frame_multiple * k + 1`` (a video VAE compresses time by that factor and keeps the first frame)."""

    size_multiple: int
    min_side: int
    max_side: int
    max_pixels: int
    min_frames: int
    max_frames: int
    frame_multiple: int = 4
    max_steps: int = 100
    max_guidance: float = 20.0
    min_fps: int = 1
    max_fps: int = 60
    max_prompt_chars: int = 4000


@dataclass(frozen=True)
class ModelSpec:
    """One architecture as the engine sees it: inputs, defaults, limits and rough memory needs."""

    task: str  # t2v | i2v | ti2v
    image: str  # IMAGE_NONE | IMAGE_OPTIONAL | IMAGE_REQUIRED
    defaults: Defaults
    limits: Limits
    trained_sizes: tuple[tuple[int, int], ...] = ()
    parameters: int = 0  # parameters of the denoiser(s), for memory estimates
    other_parameters: int = 0  # text encoder, VAE and the rest
    experts: int = 1
    hidden_size: int = 0  # width of the denoiser's transformer blocks, for activation estimates
    text_encoder_parameters: int = 0  # the part of other_parameters that is the text encoder (0: unknown)
    blocks: int = 0  # transformer blocks per denoiser, for the streaming profiles' estimates (0: unknown)
    tokens_per_latent: tuple[int, int] = (16, 16)  # pixels per token (height, width)
    description: str = ""

    def defaults_for(self, variant: str) -> Defaults:
        """The defaults for one variant: the tiny ``dev`` variants default to a small, short, quick video
        (what a CPU makes in seconds); every other variant to the official configuration."""
        if variant != "dev":
            return self.defaults
        m = self.limits.size_multiple
        return replace(self.defaults, width=4 * m, height=2 * m, num_frames=9, steps=4)

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, present in (
                ("text-to-video", self.image != IMAGE_REQUIRED),
                ("image-to-video", self.image != IMAGE_NONE),
            )
            if present
        )


@dataclass(frozen=True)
class GenerationParams:
    """A validated request with every value filled in: what a family's ``run`` receives."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float | None
    flow_shift: float | None
    seed: int
    image: "Image | None" = None

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "guidance_scale_2": self.guidance_scale_2,
            "flow_shift": self.flow_shift,
            "seed": self.seed,
            "image": self.image is not None,
        }


@dataclass(frozen=True)
class Placement:
    """Where a loaded model lives: device (``cpu``, ``cuda``), torch dtype name and memory profile.

    ``techniques`` are what the memory plan applies on this device (engine.memory: ``model_cpu_offload``,
    ``group_offload``, ``cuda_stream_prefetch``, ``fp8_layerwise_storage``, ``sequential_cpu_offload``,
    ``vae_tiling``); a family that knows none of them may go by ``memory_profile`` alone.
    """

    device: str
    dtype: str
    memory_profile: str = "resident"
    techniques: tuple[str, ...] = ()


StepCallback = Callable[[int, int], None]
"""Called by ``run`` after each denoising step with (steps done, total steps); it may raise to stop."""


@runtime_checkable
class ModelFamily(Protocol):
    """The plugin interface. ``name`` is the manifest's ``family`` value the plugin serves."""

    name: str

    def spec(self, model: "Model") -> ModelSpec:
        """The architecture of one manifest model (raise ModelNotFoundError when the family lacks it)."""
        ...

    def load(self, folder: Path, model: "Model", variant: "Variant", placement: Placement) -> Any:
        """Load the ensured variant folder onto the placement; the engine caches the result between jobs."""
        ...

    def run(self, loaded: Any, params: GenerationParams, on_step: StepCallback) -> "np.ndarray":
        """Generate: return frames as a float array (frames, height, width, 3) in [0, 1]."""
        ...
