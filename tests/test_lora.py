"""LoRA on the dev variants, on the CPU: tiny LoRA files made here with peft, applied through diffusers.

The pipelines are the real ones (random tiny weights), loaded once per module by the wan family's own code;
each test makes its LoRA files in its own MODELS_ROOT catalogue. Frames are compared bit for bit: a LoRA
must change them, and unloading must give back exactly the frames of a pipeline that never had one.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import WanPipeline
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors import safe_open
from safetensors.torch import save_file

from wanstudio.config import Settings
from wanstudio.engine.family import GenerationParams, Placement
from wanstudio.engine.lora import (
    LoraIncompatibleError,
    LoraRequest,
    apply_loras,
    check_compatible,
    check_lora_name,
    check_lora_requests,
    find_lora,
    inspect_lora,
    install_lora,
    list_loras,
    lora_dir,
    lora_requests_from_json,
    loras_applied,
    parse_lora_arg,
    unload_loras,
)
from wanstudio.engine.wan import FAMILY, LoadedWan
from wanstudio.errors import InvalidParamsError
from wanstudio.orchestrator.orchestrator import Orchestrator

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


# -- pipelines, loaded once ---------------------------------------------------------------------------------


class Pipelines:
    """The dev pipelines of this module, each loaded on first use, with its frames before any LoRA."""

    def __init__(self, root: Path) -> None:
        self.orchestrator = Orchestrator(Settings(models_root=root))
        self.loaded: dict[str, LoadedWan] = {}
        self.baseline: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> LoadedWan:
        if name not in self.loaded:
            model, variant = self.orchestrator.resolve(name, "dev")
            folder = self.orchestrator.ensure(model.id, variant.name).path
            self.loaded[name] = FAMILY.load(folder, model, variant, Placement("cpu", "float32"))
            self.baseline[name] = frames(self.loaded[name])
        return self.loaded[name]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> Pipelines:
    return Pipelines(tmp_path_factory.mktemp("store"))


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()  # the test's own MODELS_ROOT (conftest): its own, empty catalogue


def frames(loaded: LoadedWan, seed: int = 5, image: Image.Image | None = None) -> np.ndarray:
    two_experts = loaded.pipeline.transformer_2 is not None
    params = GenerationParams(
        prompt="a red fox in fresh snow", negative_prompt="", width=32, height=32, num_frames=5, fps=16, steps=2,
        guidance_scale=4.0, guidance_scale_2=3.0 if two_experts else None, flow_shift=None, seed=seed, image=image,
    )
    return FAMILY.run(loaded, params, lambda _step, _total: None)


# -- LoRA files, made with peft -----------------------------------------------------------------------------


def lora_layers(transformer: torch.nn.Module, *, targets: Iterable[str] = ATTENTION, rank: int = 4, seed: int = 0,
                alpha: int | None = None) -> tuple[dict[str, torch.Tensor], LoraConfig]:
    """peft's LoRA layers for a copy of `transformer`, with random non-zero lora_B (peft starts it at 0)."""
    model = copy.deepcopy(transformer)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), init_lora_weights=True)
    inject_adapter_in_model(config, model, adapter_name="default")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    layers = get_peft_model_state_dict(model, adapter_name="default")
    return {key: value.contiguous() for key, value in layers.items()}, config


def save_diffusers_lora(path: Path, layers: dict[str, torch.Tensor], config: LoraConfig | None = None) -> Path:
    """A LoRA as diffusers writes it: ``transformer.`` keys, and the LoraConfig in the metadata."""
    metadata = None
    if config is not None:
        metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}
    path.parent.mkdir(parents=True, exist_ok=True)
    WanPipeline.save_lora_weights(path.parent, transformer_lora_layers=layers, weight_name=path.name,
                                  transformer_lora_adapter_metadata=metadata)
    return path


def one_layer(module: str = "transformer.blocks.0.attn1.to_q", rank: int = 4, fan_in: int = 24, fan_out: int = 24,
              fill: float = 0.0) -> dict[str, torch.Tensor]:
    """A hand-made LoRA of one layer, in diffusers' keys."""
    return {f"{module}.lora_A.weight": torch.full((rank, fan_in), fill),
            f"{module}.lora_B.weight": torch.full((fan_out, rank), fill)}


def save_expert_lora(path: Path, parts: dict[str, dict[str, torch.Tensor]]) -> Path:
    """A two-expert LoRA: keys under ``transformer.`` (high noise) and/or ``transformer_2.`` (low noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{expert}.{key}": value for expert, layers in parts.items() for key, value in layers.items()}, path)
    return path


@pytest.fixture
def catalogue(settings: Settings) -> Path:
    folder = lora_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def make(pipelines: Pipelines, catalogue: Path) -> Callable[..., Path]:
    """make(name, model, **lora_layers options) -> a diffusers-format LoRA for that model, in the catalogue."""

    def make(name: str, model: str = "ti2v-5B", *, expert: str = "transformer", **options: Any) -> Path:
        layers, config = lora_layers(getattr(pipelines[model].pipeline, expert), **options)
        return save_diffusers_lora(catalogue / f"{name}.safetensors", layers, config)

    return make


def adapters(loaded: LoadedWan) -> dict[str, list[str]]:
    return loaded.pipeline.get_list_adapters()


def scaling(transformer: torch.nn.Module, adapter_of: str = "wanstudio_lora_") -> dict[str, float]:
    """The scale peft applies for each adapter on the first query layer (weight x alpha / rank)."""
    layer = transformer.blocks[0].attn1.to_q
    return {name: value for name, value in getattr(layer, "scaling", {}).items() if name.startswith(adapter_of)}


def has_peft_layers(loaded: LoadedWan) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    transformers = [t for t in (loaded.pipeline.transformer, loaded.pipeline.transformer_2) if t is not None]
    return any(isinstance(module, BaseTunerLayer) for t in transformers for module in t.modules())


# -- a LoRA changes the video, and leaves no trace ----------------------------------------------------------


def test_a_lora_changes_the_frames_and_unloading_gives_back_the_same_frames_bit_for_bit(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    loaded = pipelines["ti2v-5B"]
    make("style")
    before = frames(loaded)
    assert np.array_equal(before, pipelines.baseline["ti2v-5B"])

    with loras_applied(loaded, [LoraRequest("style")], settings) as outcome:
        assert outcome.warnings == []
        [applied] = outcome.applied
        assert (applied.name, applied.weights, applied.rank, applied.style) == ("style", {"transformer": 1.0}, 4, "diffusers")
        assert adapters(loaded) == {"transformer": ["wanstudio_lora_0"]}
        with_lora = frames(loaded)
    assert not np.array_equal(with_lora, before)

    assert adapters(loaded) == {} and not has_peft_layers(loaded)
    assert np.array_equal(frames(loaded), before)  # the next job: exactly as if no LoRA had ever been there


def test_a_lora_on_ti2v_5b_also_drives_its_image_to_video_path(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    loaded = pipelines["ti2v-5B"]  # the image path is another diffusers pipeline over the very same modules
    make("style")
    picture = Image.new("RGB", (32, 32), (200, 110, 30))
    before = frames(loaded, image=picture)
    with loras_applied(loaded, [LoraRequest("style")], settings):
        with_lora = frames(loaded, image=picture)
    assert not np.array_equal(with_lora, before)
    assert np.array_equal(frames(loaded, image=picture), before)


def test_loras_are_unloaded_even_when_the_job_fails(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    loaded = pipelines["ti2v-5B"]
    make("style")
    with pytest.raises(RuntimeError, match="cancelled mid-job"):
        with loras_applied(loaded, [LoraRequest("style")], settings):
            assert has_peft_layers(loaded)
            raise RuntimeError("cancelled mid-job")
    assert not has_peft_layers(loaded)
    assert np.array_equal(frames(loaded), pipelines.baseline["ti2v-5B"])


def test_several_loras_take_their_own_weights_and_zero_weights_equal_no_lora(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    loaded = pipelines["ti2v-5B"]
    make("a", seed=1)
    make("b", seed=2, targets=("to_q", "net.0.proj"), rank=8, alpha=16)

    def run(*requests: LoraRequest) -> np.ndarray:
        with loras_applied(loaded, requests, settings) as outcome:
            assert outcome.warnings == []
            result = frames(loaded)
            scales = scaling(loaded.pipeline.transformer)
        return result, scales

    only_a, _ = run(LoraRequest("a", 0.5))
    both, scales = run(LoraRequest("a", 0.5), LoraRequest("b", -0.3))
    assert scales == {"wanstudio_lora_0": 0.5, "wanstudio_lora_1": pytest.approx(-0.3 * 16 / 8)}  # weight x alpha/rank
    stronger, _ = run(LoraRequest("a", 1.0), LoraRequest("b", -0.3))
    assert len({arr.tobytes() for arr in (only_a, both, stronger, pipelines.baseline["ti2v-5B"])}) == 4

    zero, _ = run(LoraRequest("a", 0.0), LoraRequest("b", 0.0))
    assert np.array_equal(zero, pipelines.baseline["ti2v-5B"])


def test_a_loras_stored_alpha_is_honoured(pipelines: Pipelines, catalogue: Path, settings: Settings) -> None:
    """diffusers keeps lora_alpha in the file's metadata: alpha = 2 x rank must equal doubling lora_B."""
    loaded = pipelines["ti2v-5B"]
    layers, config = lora_layers(loaded.pipeline.transformer, rank=4, alpha=8, seed=3)
    save_diffusers_lora(catalogue / "alpha.safetensors", layers, config)
    doubled = {k: v * 2 if "lora_B" in k else v for k, v in layers.items()}
    save_diffusers_lora(catalogue / "doubled.safetensors", doubled)  # no metadata: alpha = rank

    def run(name: str) -> np.ndarray:
        with loras_applied(loaded, [LoraRequest(name)], settings):
            return frames(loaded)

    np.testing.assert_allclose(run("alpha"), run("doubled"), atol=1e-5)


def test_loras_work_on_float8_stored_and_group_offloaded_transformers(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    """The lean memory profiles store the denoisers in float8 (diffusers' layerwise casting) and stream their
    blocks (group offloading); peft would store the LoRA in float8 too, which no matmul takes."""
    path = make("style")
    with loras_applied(pipelines["ti2v-5B"], [LoraRequest("style")], settings):
        full_precision = frames(pipelines["ti2v-5B"])

    model, variant = pipelines.orchestrator.resolve("ti2v-5B", "dev")
    folder = pipelines.orchestrator.ensure(model.id, variant.name).path
    loaded = FAMILY.load(folder, model, variant, Placement("cpu", "float32"))  # its own copy: casting stays
    transformer = loaded.pipeline.transformer
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    before = frames(loaded)

    with loras_applied(loaded, [LoraRequest("style")], settings) as outcome:
        assert outcome.warnings == []
        layer = transformer.blocks[0].attn1.to_q
        assert layer.base_layer.weight.dtype == torch.float8_e4m3fn
        lora_a = layer.lora_A["wanstudio_lora_0"].weight
        with safe_open(path, framework="pt") as handle:
            assert torch.equal(lora_a, handle.get_tensor("transformer.blocks.0.attn1.to_q.lora_A.weight"))
        with_lora = frames(loaded)
    assert np.isfinite(with_lora).all() and not np.array_equal(with_lora, before)
    np.testing.assert_allclose(with_lora, full_precision, atol=0.05)  # a float8 base: near, not equal
    assert np.array_equal(frames(loaded), before)


def test_loras_work_on_int8_quantised_transformers(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    """The int8_model_offload profile quantises the denoisers' linear layers to torchao int8 weight-only;
    peft wraps them with its torchao LoRA layer, the LoRA keeps the compute dtype, and unloading gives
    back the int8 layers and their frames."""
    pytest.importorskip("torchao")
    path = make("style")
    with loras_applied(pipelines["ti2v-5B"], [LoraRequest("style")], settings):
        full_precision = frames(pipelines["ti2v-5B"])

    model, variant = pipelines.orchestrator.resolve("ti2v-5B", "dev")
    folder = pipelines.orchestrator.ensure(model.id, variant.name).path
    loaded = FAMILY.load(folder, model, variant, Placement("cpu", "float32", "int8_model_offload"))
    before = frames(loaded)

    with loras_applied(loaded, [LoraRequest("style")], settings) as outcome:
        assert outcome.warnings == [] and [lora.name for lora in outcome.applied] == ["style"]
        layer = loaded.pipeline.transformer.blocks[0].attn1.to_q
        assert type(layer.base_layer.weight.data).__name__ == "Int8Tensor"
        lora_a = layer.lora_A["wanstudio_lora_0"].weight
        with safe_open(path, framework="pt") as handle:
            assert torch.equal(lora_a, handle.get_tensor("transformer.blocks.0.attn1.to_q.lora_A.weight"))
        with_lora = frames(loaded)
    assert np.isfinite(with_lora).all() and not np.array_equal(with_lora, before)
    np.testing.assert_allclose(with_lora, full_precision, atol=0.05)  # an int8 base: near, not equal
    assert np.array_equal(frames(loaded), before)
    assert type(loaded.pipeline.transformer.blocks[0].attn1.to_q.weight.data).__name__ == "Int8Tensor"


# -- what does not fit is skipped, and the job goes on ------------------------------------------------------


def test_incompatible_missing_and_broken_loras_are_skipped_with_a_warning_and_the_rest_applies(
    pipelines: Pipelines, make: Callable[..., Path], catalogue: Path, settings: Settings
) -> None:
    loaded = pipelines["t2v-A14B"]
    make("good", "t2v-A14B", seed=4)
    make("for_5b", "ti2v-5B", targets=("proj_out",))  # TI2V-5B's head outputs 192 features, A14B's 64
    save_file(one_layer("transformer.blocks.7.attn1.to_q", fill=1.0), catalogue / "deeper.safetensors")  # dev: 2 blocks
    (catalogue / "pickled.safetensors").write_bytes(pickle.dumps({"a": 1}))
    bad_config = {"transformer.r": 4, "transformer.no_such_option": 1}  # peft's LoraConfig refuses it while loading
    save_file(one_layer(fill=1.0), catalogue / "broken.safetensors",
              metadata={"lora_adapter_metadata": json.dumps(bad_config)})

    with loras_applied(loaded, [LoraRequest("good")], settings):
        good_alone = frames(loaded)

    requests = [LoraRequest(n) for n in ("for_5b", "deeper", "absent", "pickled", "broken", "good")]
    with loras_applied(loaded, requests, settings, model="t2v-A14B@2.2.0 [dev]") as outcome:
        mixed = frames(loaded)
        assert adapters(loaded) == {"transformer": ["wanstudio_lora_5"], "transformer_2": ["wanstudio_lora_5"]}


    assert [lora.name for lora in outcome.applied] == ["good"]
    warnings = dict(zip(("for_5b", "deeper", "absent", "pickled", "broken"), outcome.warnings))
    assert len(outcome.warnings) == 5 and all(w.startswith(f"LoRA {n!r} skipped: ") for n, w in warnings.items())
    assert "does not fit t2v-A14B@2.2.0 [dev]" in warnings["for_5b"]
    assert "proj_out maps 24 -> 64 features here" in warnings["for_5b"]
    assert "1 of its 1 layers do not exist" in warnings["deeper"] and "blocks.7.attn1.to_q" in warnings["deeper"]
    assert "there is no LoRA named 'absent'" in warnings["absent"] and "good" in warnings["absent"]
    assert "a Python pickle" in warnings["pickled"]
    assert "failed to load into t2v-A14B@2.2.0 [dev]" in warnings["broken"]
    assert np.array_equal(mixed, good_alone)  # the skipped ones left nothing behind
    assert np.array_equal(frames(loaded), pipelines.baseline["t2v-A14B"])


def test_check_compatible_names_the_layer_the_shapes_and_the_model_the_lora_was_made_for(
    pipelines: Pipelines, make: Callable[..., Path], catalogue: Path
) -> None:
    info = inspect_lora(make("head", "ti2v-5B", targets=("proj_out",)), label="head")
    check_compatible(pipelines["ti2v-5B"], info)  # made for it: fits
    with pytest.raises(LoraIncompatibleError) as caught:
        check_compatible(pipelines["t2v-A14B"], info, model="t2v-A14B")
    error = caught.value
    assert error.code == "INVALID_PARAMS" and error.param == "lora" and error.lora == "head"
    assert "proj_out maps 24 -> 64 features here, the LoRA 24 -> 192" in error.message

    save_file(one_layer(fan_in=5120, fan_out=5120), catalogue / "wide.safetensors")
    with pytest.raises(LoraIncompatibleError, match=r"5120 -> 5120 \(it looks made for a 14B Wan model"):
        check_compatible(pipelines["ti2v-5B"], inspect_lora(catalogue / "wide.safetensors"))


# -- the two experts of the A14B models ---------------------------------------------------------------------


def test_a_low_noise_lora_goes_into_transformer_2_only_with_its_weight(
    pipelines: Pipelines, catalogue: Path, settings: Settings
) -> None:
    loaded = pipelines["t2v-A14B"]
    layers, _ = lora_layers(loaded.pipeline.transformer_2, seed=6)
    save_expert_lora(catalogue / "low.safetensors", {"transformer_2": layers})

    info = inspect_lora(catalogue / "low.safetensors", label="low")
    assert info.experts == ("transformer_2",) and info.low_noise_only and info.rank == 4
    assert info.describe_experts() == "the low-noise expert only (transformer_2)"
    assert set(info.layers["transformer_2"]) == {f"blocks.{b}.attn{a}.{t}" for b in (0, 1) for a in (1, 2) for t in ATTENTION}

    with loras_applied(loaded, [LoraRequest("low", weight=1.0, weight_2=0.7)], settings) as outcome:
        assert outcome.warnings == [] and outcome.applied[0].weights == {"transformer_2": 0.7}
        assert adapters(loaded) == {"transformer_2": ["wanstudio_lora_0"]}
        assert scaling(loaded.pipeline.transformer) == {}
        assert scaling(loaded.pipeline.transformer_2) == {"wanstudio_lora_0": 0.7}
        low = frames(loaded)
    assert not np.array_equal(low, pipelines.baseline["t2v-A14B"])

    # TI2V-5B has one transformer: a low-noise-only LoRA has nowhere to go
    with loras_applied(pipelines["ti2v-5B"], [LoraRequest("low")], settings, model="ti2v-5B") as outcome:
        assert outcome.applied == [] and adapters(pipelines["ti2v-5B"]) == {}
    assert "only has layers for the low-noise expert (transformer_2)" in outcome.warnings[0]


def test_a_plain_lora_goes_into_both_experts_with_one_weight_each(
    pipelines: Pipelines, make: Callable[..., Path], settings: Settings
) -> None:
    loaded = pipelines["t2v-A14B"]
    make("plain", "t2v-A14B", seed=7)
    results = {}
    for weights in ((1.0, None), (1.0, 0.5), (1.0, 0.0), (0.0, 1.0)):
        with loras_applied(loaded, [LoraRequest("plain", *weights)], settings) as outcome:
            results[weights] = frames(loaded)
            high, low = scaling(loaded.pipeline.transformer), scaling(loaded.pipeline.transformer_2)
        expected_low = weights[0] if weights[1] is None else weights[1]
        assert high == ({"wanstudio_lora_0": weights[0]} if weights[0] else {})  # weight 0: not loaded at all
        assert low == ({"wanstudio_lora_0": expected_low} if expected_low else {})
        expected = {"transformer": weights[0], "transformer_2": expected_low}
        assert outcome.applied[0].weights == {expert: w for expert, w in expected.items() if w}
    assert len({r.tobytes() for r in (*results.values(), pipelines.baseline["t2v-A14B"])}) == 5


def test_a_lora_with_layers_for_each_expert_gives_each_its_own(
    pipelines: Pipelines, catalogue: Path, settings: Settings
) -> None:
    loaded = pipelines["t2v-A14B"]
    high, _ = lora_layers(loaded.pipeline.transformer, seed=8)
    low, _ = lora_layers(loaded.pipeline.transformer_2, seed=9, targets=("net.0.proj",))
    save_expert_lora(catalogue / "pair.safetensors", {"transformer": high, "transformer_2": low})
    info = inspect_lora(catalogue / "pair.safetensors")
    assert info.experts == ("transformer", "transformer_2")
    assert len(info.layers["transformer"]) == 16 and len(info.layers["transformer_2"]) == 2

    with loras_applied(loaded, [LoraRequest("pair")], settings):
        ffn = loaded.pipeline.transformer_2.blocks[0].ffn.net[0].proj
        assert "wanstudio_lora_0" in ffn.lora_A and not hasattr(loaded.pipeline.transformer.blocks[0].ffn.net[0].proj, "lora_A")
        assert not hasattr(loaded.pipeline.transformer_2.blocks[0].attn1.to_q, "lora_A")
    with loras_applied(pipelines["ti2v-5B"], [LoraRequest("pair", weight_2=0.3)], settings, model="ti2v-5B") as outcome:
        assert outcome.applied[0].weights == {"transformer": 1.0}
    assert any("low-noise expert (transformer_2) layers are not used" in w for w in outcome.warnings)
    assert any("weight_2 is ignored" in w for w in outcome.warnings)


# -- other key styles, through diffusers' converters --------------------------------------------------------


def original_wan_lora(rank: int = 4, alpha: float = 4.0, seed: int = 10) -> dict[str, torch.Tensor]:
    """The original Wan / ComfyUI naming: diffusion_model.blocks.N.self_attn.q.lora_down/lora_up + alpha."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for block in (0, 1):
        for attention in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                stem = f"diffusion_model.blocks.{block}.{attention}.{proj}"
                state[f"{stem}.lora_down.weight"] = torch.randn(rank, 24, generator=generator)
                state[f"{stem}.lora_up.weight"] = torch.randn(24, rank, generator=generator) * 0.5
                state[f"{stem}.alpha"] = torch.tensor(alpha)
    return state


def test_original_wan_keys_are_converted_by_diffusers_and_apply_like_the_same_lora_in_diffusers_keys(
    pipelines: Pipelines, catalogue: Path, settings: Settings
) -> None:
    state = original_wan_lora()
    save_file(state, catalogue / "comfy.safetensors")
    info = inspect_lora(catalogue / "comfy.safetensors", label="comfy")
    assert (info.style, info.experts, info.rank) == ("wan", ("transformer",), 4)
    assert "blocks.1.attn2.to_out.0" in info.layers["transformer"] and len(info.layers["transformer"]) == 16

    names = {"self_attn": "attn1", "cross_attn": "attn2", "q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
    same = {}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        _, _, block, attention, proj, part, _ = key.split(".")
        ab = "lora_A" if part == "lora_down" else "lora_B"
        same[f"transformer.blocks.{block}.{names[attention]}.{names[proj]}.{ab}.weight"] = value
    save_file(same, catalogue / "same.safetensors")

    loaded = pipelines["ti2v-5B"]
    results = []
    for name in ("comfy", "same"):
        with loras_applied(loaded, [LoraRequest(name)], settings) as outcome:
            assert outcome.warnings == [] and outcome.applied[0].style == ("wan" if name == "comfy" else "diffusers")
            results.append(frames(loaded))
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)
    assert not np.array_equal(results[0], pipelines.baseline["ti2v-5B"])


def test_kohya_musubi_keys_are_read_from_the_header(catalogue: Path) -> None:
    state = {}
    for block in (0, 1):
        for stem, (fan_in, fan_out) in {
            **{f"{a}_{p}": (24, 24) for a in ("self_attn", "cross_attn") for p in "qkvo"}, "ffn_0": (24, 48), "ffn_2": (48, 24),
        }.items():
            key = f"lora_unet_blocks_{block}_{stem}"
            state[f"{key}.lora_down.weight"] = torch.zeros(8, fan_in, dtype=torch.bfloat16)
            state[f"{key}.lora_up.weight"] = torch.zeros(fan_out, 8, dtype=torch.bfloat16)
            state[f"{key}.alpha"] = torch.tensor(4.0)
    save_file(state, catalogue / "musubi.safetensors")
    info = inspect_lora(catalogue / "musubi.safetensors")
    assert (info.style, info.rank, len(info.layers["transformer"])) == ("kohya", 8, 20)
    assert info.layers["transformer"]["blocks.1.ffn.net.0.proj"].out_features == 48


# -- files: safetensors only, by content; size; keys --------------------------------------------------------


def test_pickles_and_other_bytes_are_refused_by_content_whatever_their_name(tmp_path: Path) -> None:
    weights = one_layer()
    cases = {
        "zip.pt": "a ZIP archive",
        "legacy.bin": "a Python pickle",
        "pickle.safetensors": "a Python pickle",
        "noise.safetensors": "not a safetensors file",
        "short.safetensors": "too short",
    }
    torch.save(weights, tmp_path / "zip.pt")
    torch.save(weights, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps(weights))
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "short.safetensors").write_bytes(b"\x05\x00")
    for name, found in cases.items():
        with pytest.raises(InvalidParamsError) as caught:
            inspect_lora(tmp_path / name)
        assert caught.value.param == "lora" and str(tmp_path / name) in caught.value.message
        assert found in caught.value.message and caught.value.suggestions

    save_file(weights, tmp_path / "real.bin")  # a safetensors file under another name is still one
    assert inspect_lora(tmp_path / "real.bin").layers["transformer"]["blocks.0.attn1.to_q"].rank == 4

    damaged = (tmp_path / "real.bin").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(damaged[: len(damaged) - 100])
    with pytest.raises(InvalidParamsError, match="damaged safetensors"):
        inspect_lora(tmp_path / "cut.safetensors")


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    save_file(one_layer(), tmp_path / "x.safetensors")
    size = (tmp_path / "x.safetensors").stat().st_size
    assert inspect_lora(tmp_path / "x.safetensors", max_bytes=size).size_bytes == size
    with pytest.raises(InvalidParamsError, match=f"is {size} bytes, over the limit of {size - 1} bytes"):
        inspect_lora(tmp_path / "x.safetensors", max_bytes=size - 1, label="x")


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"blocks.0.attn1.to_q.weight": torch.zeros(24, 24)}, "is not a LoRA: 1 of its 1 tensors are not LoRA weights"),
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 24)}, "unpaired layer blocks.0.attn1.to_q"),
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 24),
          "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(24, 8)}, "inconsistent shapes"),
        ({"transformer.blocks.0.attn1.to_q.lokr_w1": torch.zeros(4, 4)}, "LyCORIS"),
        (one_layer("unet.down"), "layers for unet and none for a Wan"),
        ({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(4, 24)},
         "kohya-style keys that diffusers cannot convert"),
    ],
)
def test_files_that_are_not_wan_loras_are_refused_with_the_reason(tmp_path: Path, state: dict, message: str) -> None:
    save_file(state, tmp_path / "x.safetensors")
    with pytest.raises(InvalidParamsError, match=message):
        inspect_lora(tmp_path / "x.safetensors")


# -- the catalogue ------------------------------------------------------------------------------------------


def test_names_resolve_in_the_catalogue_and_cannot_leave_it(settings: Settings, catalogue: Path, tmp_path: Path) -> None:
    save_file(one_layer(), catalogue / "anime.v2.safetensors")
    assert catalogue == Path(os.environ["MODELS_ROOT"]) / "loras"
    assert find_lora("anime.v2", settings) == find_lora("anime.v2.safetensors", settings) == catalogue / "anime.v2.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((catalogue / "anime.v2.safetensors").read_bytes())
    assert find_lora(str(outside), settings) == outside  # a path (CLI) is a path

    for bad in ("..", "..x", ".hidden", "a b", "x" * 200, "", "a:b", "a\0b"):
        with pytest.raises(InvalidParamsError, match="is not valid") as caught:
            find_lora(bad, settings)
        assert caught.value.param == "lora"
    for escaping in ("../elsewhere", "../../etc/passwd"):  # a name never has a separator; these are paths (CLI only)
        with pytest.raises(InvalidParamsError, match="is not valid"):
            check_lora_name(escaping)
        with pytest.raises(InvalidParamsError, match="not a path"):
            lora_requests_from_json([{"name": escaping}])
    with pytest.raises(InvalidParamsError, match=r"no LoRA named 'anime' in the catalogue .* \(available: anime.v2\)"):
        find_lora("anime", settings)
    with pytest.raises(InvalidParamsError, match="does not exist"):
        find_lora(str(tmp_path / "nope.safetensors"), settings)

    (catalogue / "link.safetensors").symlink_to(outside)
    with pytest.raises(InvalidParamsError, match="link out of the catalogue"):
        find_lora("link", settings)

    (catalogue / "junk.safetensors").write_bytes(b"not a lora at all")
    (catalogue / "notes.txt").write_text("ignored")
    listed = {entry.name: entry for entry in list_loras(settings, inspect=True)}
    assert sorted(listed) == ["anime.v2", "junk"]
    assert listed["anime.v2"].info.rank == 4 and listed["anime.v2"].problem is None
    assert listed["junk"].info is None and "not a safetensors file" in listed["junk"].problem
    assert listed["anime.v2"].to_json()["experts"] == ["transformer"]


def test_install_checks_the_file_then_publishes_it_by_rename(settings: Settings, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    save_file(one_layer(), upload)
    entry = install_lora(upload, "my_style", settings)
    assert entry.path == lora_dir(settings) / "my_style.safetensors" and entry.info.path == entry.path
    assert find_lora("my_style", settings) == entry.path and upload.exists()
    with pytest.raises(InvalidParamsError, match="already in the catalogue"):
        install_lora(upload, "my_style", settings)
    assert install_lora(upload, "my_style", settings, replace=True, move=True).size_bytes == entry.size_bytes
    assert not upload.exists()

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"x": 1}))
    for name, source in (("evil", evil), ("../escape", entry.path)):
        with pytest.raises(InvalidParamsError):
            install_lora(source, name, settings)
    assert sorted(p.name for p in lora_dir(settings).iterdir()) == ["my_style.safetensors"]  # no temp file left


# -- requests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("style", LoraRequest("style")),
        ("style:0.8", LoraRequest("style", 0.8)),
        ("style.safetensors:-1.5", LoraRequest("style.safetensors", -1.5)),
        ("style:1:0.25", LoraRequest("style", 1.0, 0.25)),
        ("./loras/a:b.safetensors:0.5", LoraRequest("./loras/a:b.safetensors", 0.5)),
        ("/abs/x.safetensors", LoraRequest("/abs/x.safetensors")),
        ("../up.safetensors:0.5", LoraRequest("../up.safetensors", 0.5)),
        ("C:\\loras\\x.safetensors:2", LoraRequest("C:\\loras\\x.safetensors", 2.0)),
    ],
)
def test_the_cli_form_parses_name_or_path_and_weights(text: str, expected: LoraRequest) -> None:
    assert parse_lora_arg(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("style:5", "weight 5 is out of range: allowed -4 to 4; nearest valid value: 4"),
        ("style:1:-9", "weight_2 -9 is out of range"),
        ("style:1.2.3", "'1.2.3' is not a number"),
        ("style:", "'' is not a number"),
        ("a:b", "is not valid"),
        ("", "needs a LoRA name"),
        ("style:nan", "is not valid"),
    ],
)
def test_bad_cli_text_is_invalid_params(text: str, message: str) -> None:
    with pytest.raises(InvalidParamsError, match=message) as caught:
        parse_lora_arg(text)
    assert caught.value.param == "lora"


def test_the_api_form_takes_catalogue_names_only_and_checks_weights_count_and_repeats() -> None:
    assert lora_requests_from_json([{"name": "a", "weight": 0.5, "weight_2": 1}, "b", {"name": "c.safetensors"}]) == (
        LoraRequest("a", 0.5, 1.0), LoraRequest("b"), LoraRequest("c"))
    assert lora_requests_from_json(None) == ()
    bad = [
        ({"name": "a"}, "must be a list"),
        ([{"name": "/etc/passwd"}], "not a path"),
        ([{"name": "../x"}], "not a path"),
        ([{"name": ".."}], "is not valid"),
        ([{"name": "a", "weight": "1"}], "weight must be a number"),
        ([{"name": "a", "weight": True}], "weight must be a number"),
        ([{"name": "a", "weight_2": 7}], "weight_2 7 is out of range"),
        ([{"name": "a", "scale": 1}], "unknown field"),
        ([{"name": "a"}, {"name": "a.safetensors"}], "asked twice"),
        ([{"name": f"l{i}"} for i in range(9)], "at most 8"),
    ]
    for value, message in bad:
        with pytest.raises(InvalidParamsError, match=message) as caught:
            lora_requests_from_json(value)
        assert caught.value.param == "loras"
    assert check_lora_requests([LoraRequest("a", -4.0, 4.0)]) == (LoraRequest("a", -4.0, 4.0),)


def test_without_requests_nothing_is_touched_and_unload_is_safe_on_a_clean_pipeline(
    pipelines: Pipelines, settings: Settings
) -> None:
    loaded = pipelines["t2v-A14B"]
    with loras_applied(loaded, [], settings) as outcome:
        assert outcome.applied == [] and outcome.warnings == []
    assert apply_loras(loaded, [], settings).applied == []
    unload_loras(loaded)
    unload_loras(loaded.pipeline)
    assert adapters(loaded) == {} and not has_peft_layers(loaded)
