"""The WAN 2.2 family: T2V-A14B, I2V-A14B and TI2V-5B, run by diffusers' own Wan pipelines.

Defaults are those of the official configurations (Wan-Video/Wan2.2 ``wan/configs``): sizes, 81 frames at
16 fps for the A14B models and 121 at 24 fps for TI2V-5B, 40/40/50 steps, flow shift 12/5/5, and for the
two-expert A14B models one guidance scale per expert. diffusers' ``guidance_scale`` drives the high-noise
expert (``transformer``) and ``guidance_scale_2`` the low-noise one (``transformer_2``); the official
``sample_guide_scale`` pairs are (low, high) = (3.0, 4.0) for T2V and (3.5, 3.5) for I2V.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from wanstudio.engine.family import (
    IMAGE_NONE,
    IMAGE_OPTIONAL,
    IMAGE_REQUIRED,
    Defaults,
    GenerationParams,
    Limits,
    ModelSpec,
    Placement,
    StepCallback,
)
from wanstudio.engine._recovery import is_out_of_memory
from wanstudio.engine.memory import (
    FP8_STORAGE,
    GROUP_OFFLOAD,
    INT8_WEIGHTS,
    MODEL_OFFLOAD,
    QUANT_INSTALL,
    SEQUENTIAL_OFFLOAD,
    STREAM_PREFETCH,
    TECHNIQUES,
    VAE_TILING,
    techniques_for,
)
from wanstudio.errors import GenerationFailedError, InvalidParamsError, ModelNotFoundError

if TYPE_CHECKING:
    import numpy as np

    from wanstudio.orchestrator.manifest import Model, Variant

# The official negative prompt (Wan2.2 shared_config.sample_neg_prompt): the artefacts to steer away from.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# The two A14B models share their architecture: two 14B experts, the umT5-XXL text encoder, the Wan 2.1 VAE.
_T2V_A14B = ModelSpec(
    task="t2v",
    image=IMAGE_NONE,
    defaults=Defaults(1280, 720, 81, 16, 40, guidance_scale=4.0, guidance_scale_2=3.0, flow_shift=12.0,
                      negative_prompt=NEGATIVE_PROMPT),
    limits=Limits(size_multiple=16, min_side=16, max_side=1280, max_pixels=1280 * 720, min_frames=5, max_frames=81),
    trained_sizes=((1280, 720), (720, 1280), (832, 480), (480, 832)),
    parameters=2 * 14_000_000_000,
    other_parameters=5_700_000_000 + 130_000_000,
    experts=2,
    hidden_size=5120,
    tokens_per_latent=(16, 16),
    text_encoder_parameters=5_700_000_000,  # umT5-XXL's encoder
    blocks=40,
    description="Highest quality text-to-video: two 14B experts (high noise, then low noise), 480p or 720p at 16 fps.",
)

SPECS: dict[str, ModelSpec] = {
    "t2v-A14B": _T2V_A14B,
    "i2v-A14B": replace(
        _T2V_A14B,
        task="i2v",
        image=IMAGE_REQUIRED,
        defaults=replace(_T2V_A14B.defaults, guidance_scale=3.5, guidance_scale_2=3.5, flow_shift=5.0),
        description="Animates an input image with a text prompt: two 14B experts, 480p or 720p at 16 fps.",
    ),
    "ti2v-5B": ModelSpec(
        task="ti2v",
        image=IMAGE_OPTIONAL,
        defaults=Defaults(1280, 704, 121, 24, 50, guidance_scale=5.0, flow_shift=5.0, negative_prompt=NEGATIVE_PROMPT),
        limits=Limits(size_multiple=32, min_side=32, max_side=1280, max_pixels=1280 * 704, min_frames=5, max_frames=121),
        trained_sizes=((1280, 704), (704, 1280)),
        parameters=5_000_000_000,
        other_parameters=5_700_000_000 + 700_000_000,  # the text encoder and the Wan 2.2 high-compression VAE
        experts=1,
        hidden_size=3072,
        tokens_per_latent=(32, 32),
        text_encoder_parameters=5_700_000_000,
        blocks=30,
        description="Fast text-to-video and image-to-video in one 5B model, 720p at 24 fps; fits consumer GPUs.",
    ),
}


@dataclass
class LoadedWan:
    """A loaded Wan pipeline, with the image-to-video view of the same modules for TI2V-5B (made once)."""

    pipeline: Any
    placement: Placement
    image_pipeline: Any = None


class WanFamily:
    """The ``wan22`` family plugin (registered under the ``wanstudio.families`` entry point group)."""

    name = "wan22"

    def spec(self, model: "Model") -> ModelSpec:
        spec = SPECS.get(model.name)
        if spec is None:
            raise ModelNotFoundError(
                f"the wan22 family has no architecture for model {model.id}; it runs {', '.join(SPECS)}",
                suggestions=["check the model's name in models.toml"],
            )
        return spec

    def load(self, folder: Path, model: "Model", variant: "Variant", placement: Placement) -> LoadedWan:
        # With torchao installed, diffusers and transformers import it while the pipeline classes load (for
        # any profile): its load-time noise is dropped there.
        with _quiet_torchao():
            pipeline = self._load(folder, model, variant, placement)
        pipeline.set_progress_bar_config(disable=True)
        _place(pipeline, placement)
        return LoadedWan(pipeline, placement)

    def _load(self, folder: Path, model: "Model", variant: "Variant", placement: Placement) -> Any:
        import diffusers
        import torch
        import transformers

        # Our own progress reports replace the libraries' loading bars.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        dtype = getattr(torch, placement.dtype)
        try:
            # fp8 storage and int8 weights: each denoiser is loaded alone and made one byte a weight before
            # the next one loads, so that RAM never holds two experts in the compute dtype.
            techniques = placement.techniques or _legacy_techniques(placement)
            denoisers = {}
            if FP8_STORAGE in techniques:
                denoisers = _load_fp8_denoisers(folder, dtype)
            elif INT8_WEIGHTS in techniques:
                denoisers = _load_int8_denoisers(folder, dtype)
            pipeline = _pipeline_class(folder, denoisers).from_pretrained(folder, dtype=dtype, **denoisers)
        except Exception as exc:
            if is_out_of_memory(exc) or isinstance(exc, InvalidParamsError):
                raise
            raise _load_error(exc, folder, model, variant) from exc
        return pipeline

    def run(self, loaded: LoadedWan, params: GenerationParams, on_step: StepCallback) -> "np.ndarray":
        import torch

        pipeline = loaded.pipeline
        kwargs: dict[str, Any] = {}
        if params.image is not None:
            pipeline = _image_pipeline(loaded)
            kwargs["image"] = params.image
        if params.flow_shift is not None:
            _set_flow_shift(pipeline, params.flow_shift)
        if params.guidance_scale_2 is not None and getattr(pipeline.config, "boundary_ratio", None):
            kwargs["guidance_scale_2"] = params.guidance_scale_2

        def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(index + 1, params.steps)
            return tensors

        # The seed drives a CPU generator so that a seed gives the same video on any device.
        generator = torch.Generator(device="cpu").manual_seed(params.seed)
        with torch.inference_mode():
            output = pipeline(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt or None,
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=generator,
                output_type="np",
                callback_on_step_end=step_end,
                **kwargs,
            )
        return output.frames[0]


def _denoiser_names(folder: Path) -> list[str]:
    """The pipeline's transformer components (``transformer``, and ``transformer_2`` for two experts)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    return [name for name, value in index.items()
            if name.startswith("transformer") and isinstance(value, list) and value[0] == "diffusers"]


def _pipeline_class(folder: Path, components: dict[str, Any]) -> Any:
    """The pipeline class to load with: the concrete one when components are passed in, since
    DiffusionPipeline.from_pretrained treats the Wan pipelines' optional transformers as plain keyword
    arguments and loads its own copies over the ones given."""
    import diffusers

    if not components:
        return diffusers.DiffusionPipeline
    name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    return getattr(diffusers, name, diffusers.DiffusionPipeline)


def _load_fp8_denoisers(folder: Path, dtype: Any) -> dict[str, Any]:
    """Each denoiser in the compute dtype, then stored in float8 (e4m3) and cast up layer by layer when it
    runs (diffusers' layerwise casting; its own skip list keeps embeddings and norms in the compute dtype)."""
    import diffusers
    import torch

    index = json.loads((folder / "model_index.json").read_text())
    loaded = {}
    for name in _denoiser_names(folder):
        cls = getattr(diffusers, index[name][1])
        module = cls.from_pretrained(folder / name, torch_dtype=dtype)
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        loaded[name] = module
    return loaded


def _load_int8_denoisers(folder: Path, dtype: Any) -> dict[str, Any]:
    """Each denoiser quantised to int8 weight-only as it loads (diffusers' torchao integration: every linear
    layer's weight becomes an int8 tensor with one scale per output channel, cast up to the compute dtype in
    each matmul). diffusers asks for bfloat16 with integer quantisation; float32 (the dev variants on a CPU)
    works as well, so its warning about it is dropped with torchao's own load-time noise."""
    import diffusers

    try:
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError as exc:
        raise InvalidParamsError(
            f"memory_profile int8_model_offload needs torchao, which cannot be imported ({exc})",
            param="memory_profile",
            suggestions=[QUANT_INSTALL, "--memory-profile model_offload"],
        ) from exc
    index = json.loads((folder / "model_index.json").read_text())
    loaded = {}
    for name in _denoiser_names(folder):
        cls = getattr(diffusers, index[name][1])
        config = diffusers.TorchAoConfig(Int8WeightOnlyConfig())
        loaded[name] = cls.from_pretrained(folder / name, torch_dtype=dtype, quantization_config=config)
    return loaded


# What torchao and diffusers' torchao quantizer log on import and load that says nothing about this use: the
# CUDA-only kernels a CPU build cannot load, torch's deprecation of torchao's pytree registrations, a probe for
# older torchao tensor classes (pre-quantised checkpoints only), and the bfloat16 advice (float32 works).
_TORCHAO_NOISE = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",
                                                       "only bfloat16 is supported right now"),
}


class _DropLines(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextmanager
def _quiet_torchao() -> Iterator[None]:
    """Drop those lines (and only those) from those loggers while a pipeline loads (torchao imports then)."""
    filters = [(logging.getLogger(name), _DropLines(fragments)) for name, fragments in _TORCHAO_NOISE.items()]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def _place(pipeline: Any, placement: Placement) -> None:
    """Apply the memory plan's techniques (engine.memory) to a freshly loaded pipeline.

    Group offloading goes after layerwise casting, so that the pinned copies it makes are the fp8 weights:
    blocks then travel in fp8 and are cast up on the GPU. The denoisers stream block by block (one block
    per group, the next one prefetched on a CUDA stream), the text encoder layer by layer (its blocks are
    not a top-level list), and the VAE stays on the device, tiled.
    """
    import torch

    techniques = placement.techniques or _legacy_techniques(placement)
    vae = getattr(pipeline, "vae", None)
    if VAE_TILING in techniques and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if MODEL_OFFLOAD in techniques:
        pipeline.enable_model_cpu_offload(device=placement.device)
    elif SEQUENTIAL_OFFLOAD in techniques:
        pipeline.enable_sequential_cpu_offload(device=placement.device)
    elif GROUP_OFFLOAD in techniques:
        from diffusers.hooks import apply_group_offloading

        onload = torch.device(placement.device)
        stream = STREAM_PREFETCH in techniques
        options = {"onload_device": onload, "offload_device": torch.device("cpu"), "use_stream": stream,
                   "record_stream": stream, "non_blocking": stream}
        for name, component in pipeline.components.items():
            if not isinstance(component, torch.nn.Module):
                continue
            if name.startswith("transformer"):
                apply_group_offloading(component, offload_type="block_level", num_blocks_per_group=1, **options)
            elif name.startswith(("text_encoder", "image_encoder")):
                apply_group_offloading(component, offload_type="leaf_level", **options)
            else:
                component.to(onload)
    else:
        pipeline.to(placement.device)


def _legacy_techniques(placement: Placement) -> tuple[str, ...]:
    """A placement made without techniques (by a caller that only names the profile): the profile's own."""
    if placement.memory_profile not in TECHNIQUES:
        return ()
    return techniques_for(placement.memory_profile, placement.device)


def _image_pipeline(loaded: LoadedWan) -> Any:
    """TI2V-5B takes an image through WanImageToVideoPipeline over the very same modules (no second copy).

    Made by hand rather than with ``from_pipe``, which casts every module to its ``dtype`` argument
    (float32 when none is given): that would double a bf16 model on the GPU and undo fp8 storage.
    """
    import inspect

    from diffusers import WanImageToVideoPipeline

    if isinstance(loaded.pipeline, WanImageToVideoPipeline):
        return loaded.pipeline
    if loaded.image_pipeline is None:
        source = loaded.pipeline
        accepted = inspect.signature(WanImageToVideoPipeline.__init__).parameters
        kwargs = {name: module for name, module in source.components.items() if name in accepted}
        kwargs.update({name: source.config[name] for name in accepted if name not in kwargs and name in source.config})
        view = WanImageToVideoPipeline(**kwargs)
        for name in ("_all_hooks", "_offload_device", "_offload_gpu_id"):  # model CPU offload's own state
            if hasattr(source, name):
                setattr(view, name, getattr(source, name))
        view.set_progress_bar_config(disable=True)
        loaded.image_pipeline = view
    return loaded.image_pipeline


def _set_flow_shift(pipeline: Any, flow_shift: float) -> None:
    """Give the scheduler the job's flow shift (schedulers keep it in their config, so swap in a copy)."""
    scheduler = pipeline.scheduler
    if "flow_shift" not in scheduler.config or scheduler.config.flow_shift == flow_shift:
        return
    pipeline.scheduler = type(scheduler).from_config(scheduler.config, flow_shift=flow_shift)


def _load_error(exc: Exception, folder: Path, model: "Model", variant: "Variant") -> GenerationFailedError:
    """Name the component that failed to load, and the `wan models` commands that repair it."""
    components = _components(folder)
    text = " ".join(str(e) for e in _chain(exc))
    broken = [c for c in components if f"/{c}/" in text or f"'{c}'" in text or f" {c} " in text]
    where = f"component {broken[0]!r}" if broken else f"one of its components ({', '.join(components)})"
    return GenerationFailedError(
        f"{model.id} [{variant.name}] could not be loaded from {folder}: {where} is missing or damaged "
        f"({type(exc).__name__}: {str(exc)[:300]})",
        suggestions=[
            f"wan models check {model.id} --variant {variant.name} --deep   # find the damaged files",
            f"wan models ensure --only {model.id} --variant {variant.name} --force   # fetch them again",
        ],
    )


def _components(folder: Path) -> list[str]:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return ["model_index.json"]
    return [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


FAMILY = WanFamily()
