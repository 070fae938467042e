"""Memory profiles: the planner's choices for real GPUs (pure functions), and every profile run on the CPU.

The planner table is the issue's "run on 16 GB GPUs": the reference RTX 4080 (16 GB, 15.5 GiB free),
a 24 GB card and an 80 GB one, each with the RAM such machines usually have, for the three WAN 2.2
models at 480p and 720p, with torchao installed and without it (the int8 profile is then never chosen).
The dev variants then run through every profile on the CPU with the real diffusers pipelines and hooks
(fp8 storage, torchao int8 weights, group offloading, VAE tiling).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import UNREACHABLE_ENDPOINT

from wanstudio import Engine, GenerationRequest, Settings
from wanstudio.engine.family import GenerationParams
from wanstudio.engine.memory import (
    FP8_STORAGE,
    GROUP_OFFLOAD,
    INT8_WEIGHTS,
    MODEL_OFFLOAD,
    PROFILES,
    QUANT_INSTALL,
    STREAM_PREFETCH,
    VAE_TILING,
    Footprint,
    Workload,
    available_profiles,
    check_profile,
    estimate,
    leaner_profile,
    plan_memory,
    techniques_for,
)
from wanstudio.engine.wan import FAMILY, SPECS
from wanstudio.errors import InvalidParamsError

GiB = 2**30
SIZES = {"480p": {"ti2v-5B": (832, 480), "t2v-A14B": (832, 480), "i2v-A14B": (832, 480)},
         "720p": {"ti2v-5B": (1280, 704), "t2v-A14B": (1280, 720), "i2v-A14B": (1280, 720)}}
# (name, free VRAM, usable RAM): what the planner is given on such a machine
MACHINES = {
    "16GB": (15.5 * GiB, 57 * GiB),  # RTX 4080 with 64 GB of RAM
    "24GB": (23.5 * GiB, 57 * GiB),  # RTX 4090 with 64 GB of RAM
    "24GB+128GB": (23.5 * GiB, 115 * GiB),
    "80GB": (79.5 * GiB, 230 * GiB),  # H100 in a server
}


WITHOUT_TORCHAO = available_profiles(lambda package: package != "torchao")


def plan(model: str, resolution: str, machine: str, profile: str | None = None, available=PROFILES):
    spec = SPECS[model]
    width, height = SIZES[resolution][model]
    vram, ram = MACHINES[machine]
    return plan_memory(spec, Footprint.from_spec(spec), Workload.of(spec, width, height, spec.defaults.num_frames),
                       device="cuda", dtype="bfloat16", vram_budget=int(vram), ram_budget=int(ram), profile=profile,
                       available=available)


@pytest.mark.parametrize(
    ("machine", "model", "resolution", "expected", "without_torchao"),
    [
        ("16GB", "ti2v-5B", "480p", "model_offload", None),
        ("16GB", "ti2v-5B", "720p", "model_offload", None),
        ("16GB", "t2v-A14B", "480p", "fp8_group_offload", None),  # an int8 14B expert alone needs ~17 GiB
        ("16GB", "t2v-A14B", "720p", "fp8_group_offload", None),
        ("16GB", "i2v-A14B", "480p", "fp8_group_offload", None),
        ("16GB", "i2v-A14B", "720p", "fp8_group_offload", None),
        ("24GB", "ti2v-5B", "720p", "model_offload", None),
        ("24GB", "t2v-A14B", "480p", "int8_model_offload", "fp8_group_offload"),  # 64 GB of RAM cannot pin two bf16 experts
        ("24GB", "t2v-A14B", "720p", "int8_model_offload", "fp8_group_offload"),
        ("24GB+128GB", "t2v-A14B", "720p", "int8_model_offload", "group_offload"),  # without torchao: full precision
        ("24GB+128GB", "i2v-A14B", "480p", "int8_model_offload", "group_offload"),
        ("80GB", "ti2v-5B", "480p", "resident", None),
        ("80GB", "ti2v-5B", "720p", "resident", None),
        ("80GB", "t2v-A14B", "480p", "resident", None),
        ("80GB", "t2v-A14B", "720p", "resident", None),
        ("80GB", "i2v-A14B", "720p", "resident", None),
    ],
)
@pytest.mark.parametrize("torchao", [True, False], ids=["torchao", "no-torchao"])
def test_the_planner_picks_the_fastest_profile_that_fits(
    machine: str, model: str, resolution: str, expected: str, without_torchao: str | None, torchao: bool
) -> None:
    available = PROFILES if torchao else WITHOUT_TORCHAO
    if not torchao:
        expected = without_torchao or expected
    chosen = plan(model, resolution, machine, available=available)
    vram, ram = MACHINES[machine]
    assert chosen.profile == expected, chosen.reason
    assert chosen.fits and chosen.vram_bytes <= vram and chosen.ram_bytes <= ram
    assert chosen.techniques == techniques_for(expected, "cuda") and chosen.placement.techniques == chosen.techniques
    assert "the fastest profile that fits" in chosen.reason and "GiB of VRAM" in chosen.reason
    faster = [name for name in PROFILES[: PROFILES.index(expected)] if name in available]
    for name in faster:  # every faster profile is ruled out by its own estimate
        rejected = plan(model, resolution, machine, profile=name)
        assert not rejected.fits and "more than there is" in rejected.reason
    if faster:
        assert f"{faster[-1]} would need about" in chosen.reason


@pytest.mark.parametrize("model", list(SPECS))
@pytest.mark.parametrize("resolution", ["480p", "720p"])
def test_every_model_fits_a_16_gb_gpu_on_its_leanest_plan(model: str, resolution: str) -> None:
    spec = SPECS[model]
    width, height = SIZES[resolution][model]
    footprint, work = Footprint.from_spec(spec), Workload.of(spec, width, height, spec.defaults.num_frames)
    vram = [estimate(name, footprint, work).vram_bytes for name in PROFILES]
    assert vram == sorted(vram, reverse=True), "profiles are ordered from the most VRAM to the least"
    assert min(vram) <= 15.5 * GiB and vram[PROFILES.index("fp8_group_offload")] <= 15.5 * GiB
    ram = {name: estimate(name, footprint, work).ram_bytes for name in PROFILES}
    assert ram["fp8_group_offload"] < ram["group_offload"]  # what fp8 storage is for
    assert ram["int8_model_offload"] < ram["model_offload"] < ram["group_offload"]  # int8: one byte a weight
    if model != "ti2v-5B":  # an int8 expert is half a bf16 one (ti2v-5B's peak is its text encoder either way)
        assert vram[PROFILES.index("int8_model_offload")] < vram[PROFILES.index("model_offload")]
    if model != "ti2v-5B":  # only one 14B expert at a time with model offload
        assert estimate("model_offload", footprint, work).vram_bytes < footprint.denoisers[0] * 1.5


def test_nothing_fits_short_ram_or_an_unknown_gpu_are_said_plainly() -> None:
    spec = SPECS["t2v-A14B"]
    footprint, work = Footprint.from_spec(spec), Workload.of(spec, 1280, 720, 81)

    def choose(vram, ram):
        return plan_memory(spec, footprint, work, device="cuda", dtype="bfloat16", vram_budget=vram, ram_budget=ram)

    short_ram = choose(int(15.5 * GiB), 28 * GiB)  # a 16 GB GPU in a 32 GB machine
    assert (short_ram.profile, short_ram.fits) == ("fp8_group_offload", False)
    assert "RAM is short" in short_ram.reason and "smaller model" in short_ram.reason
    tiny_gpu = choose(4 * GiB, 256 * GiB)
    assert (tiny_gpu.profile, tiny_gpu.fits) == ("sequential_offload", False)
    assert "nothing fits" in tiny_gpu.reason and "lower the resolution" in tiny_gpu.reason
    unknown = choose(None, None)
    assert unknown.profile == "model_offload" and "free VRAM unknown" in unknown.reason
    with pytest.raises(InvalidParamsError) as caught:
        plan_memory(spec, footprint, work, device="cuda", dtype="bfloat16", vram_budget=None, ram_budget=None, profile="tiny")
    assert caught.value.param == "memory_profile" and "fp8_group_offload" in caught.value.message


def test_without_torchao_the_int8_profile_is_never_chosen_and_asking_for_it_is_invalid_params() -> None:
    """Pure functions given what is installed; then a real interpreter in which ``import torchao`` fails."""
    assert "int8_model_offload" not in WITHOUT_TORCHAO and len(WITHOUT_TORCHAO) == len(PROFILES) - 1
    assert available_profiles(lambda package: True) == PROFILES
    assert leaner_profile("model_offload", WITHOUT_TORCHAO) == "group_offload"
    assert leaner_profile("model_offload", PROFILES) == "int8_model_offload"
    with pytest.raises(InvalidParamsError) as caught:
        check_profile("int8_model_offload", WITHOUT_TORCHAO)
    assert caught.value.param == "memory_profile" and "torchao" in caught.value.message
    assert caught.value.suggestions[0] == QUANT_INSTALL == "pip install 'wanstudio[quant]'"
    spec = SPECS["t2v-A14B"]
    footprint, work = Footprint.from_spec(spec), Workload.of(spec, 1280, 720, 81)
    for vram in (4, 15.5, 23.5, 40, 79.5):  # whatever the GPU, never the int8 profile
        for ram in (28, 57, 115):
            chosen = plan_memory(spec, footprint, work, device="cuda", dtype="bfloat16", vram_budget=int(vram * GiB),
                                 ram_budget=ram * GiB, available=WITHOUT_TORCHAO)
            assert chosen.profile != "int8_model_offload", (vram, ram)
    script = (
        "import sys; sys.modules['torchao'] = None\n"
        "from wanstudio.engine.memory import available_profiles, check_profile, leaner_profile\n"
        "from wanstudio.errors import InvalidParamsError\n"
        "assert 'int8_model_offload' not in available_profiles(), available_profiles()\n"
        "assert leaner_profile('model_offload') == 'group_offload'\n"
        "try:\n    check_profile('int8_model_offload')\nexcept InvalidParamsError as e:\n"
        "    print(e.code, e.param, e.suggestions[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "INVALID_PARAMS memory_profile pip install 'wanstudio[quant]'"


def test_on_a_cpu_profiles_keep_the_techniques_that_work_there() -> None:
    assert techniques_for("fp8_group_offload", "cpu") == (FP8_STORAGE, GROUP_OFFLOAD, VAE_TILING)
    assert techniques_for("int8_model_offload", "cpu") == (INT8_WEIGHTS, VAE_TILING)
    assert techniques_for("model_offload", "cpu") == (VAE_TILING,)
    assert STREAM_PREFETCH in techniques_for("group_offload", "cuda")
    assert MODEL_OFFLOAD in techniques_for("model_offload", "cuda:1")
    spec = SPECS["ti2v-5B"]
    footprint, work = Footprint.from_spec(spec), Workload.of(spec, 1280, 704, 121)
    roomy = plan_memory(spec, footprint, work, device="cpu", dtype="bfloat16", vram_budget=None, ram_budget=64 * GiB)
    assert (roomy.profile, roomy.fits, roomy.vram_bytes) == ("resident", True, None)
    tight = plan_memory(spec, footprint, work, device="cpu", dtype="bfloat16", vram_budget=None, ram_budget=24 * GiB)
    assert tight.profile == "fp8_group_offload" and "fp8" in tight.reason
    asked = plan_memory(spec, footprint, work, device="cpu", dtype="bfloat16", vram_budget=None, ram_budget=64 * GiB,
                        profile="sequential_offload")
    assert asked.techniques == (VAE_TILING,) and "nothing to offload to" in asked.reason


def test_the_footprint_of_a_listed_variant_comes_from_its_files(engine: Engine) -> None:
    model, variant = engine.orchestrator.resolve("t2v-A14B", "dev")
    footprint = Footprint.of(SPECS["t2v-A14B"], variant, "float32")
    assert len(footprint.denoisers) == 2 and 0 < footprint.total < 10 * 2**20  # megabytes, not 14B parameters
    assert footprint.text_encoder > 0 and footprint.vae > 0
    assert Footprint.of(SPECS["t2v-A14B"], model.variant("bf16"), "bfloat16") == Footprint.from_spec(SPECS["t2v-A14B"])


# -- the dev variants through every profile, on the CPU -----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine (one store) for the module, so that each dev model is fetched once; its settings name
    everything, like the autouse fixture's environment, since module fixtures come before it."""
    root = tmp_path_factory.mktemp("profiles")
    return Engine(Settings.from_env({"MODELS_ROOT": str(root / "models"), "HF_ENDPOINT": UNREACHABLE_ENDPOINT,
                                     "HF_HUB_CACHE": str(root / "hf-cache")}))


def _params(model: str, image=None) -> GenerationParams:
    width = 48 if model != "ti2v-5B" else 64
    return GenerationParams(prompt="a red fox in the snow", negative_prompt="", width=width, height=32, num_frames=5,
                            fps=16, steps=2, guidance_scale=4.0, guidance_scale_2=3.0 if model != "ti2v-5B" else None,
                            flow_shift=5.0, seed=5, image=image)


@pytest.mark.parametrize("name", ["t2v-A14B", "ti2v-5B"])
def test_every_profile_runs_on_the_cpu_with_the_same_video_shape(engine: Engine, name: str) -> None:
    """resident, model_offload, group_offload and sequential_offload give the very same frames on a CPU (the
    moves are no-ops there); fp8 storage and int8 weights give the same shape, close values, and really
    store fp8 and torchao int8 tensors."""
    model, variant = engine.orchestrator.resolve(name, "dev")
    folder = engine.orchestrator.ensure(model.id, "dev").path
    params = _params(name)
    frames = {}
    for profile in available_profiles():  # the test extra installs torchao: all of them
        job = engine.prepare(GenerationRequest(model=name, variant="dev", prompt="x", memory_profile=profile))
        placement = engine.plan(job).placement
        assert placement.device == "cpu" and placement.memory_profile == profile
        loaded = FAMILY.load(folder, model, variant, placement)
        pipeline = loaded.pipeline
        assert bool(getattr(pipeline.vae, "use_tiling", False)) == (VAE_TILING in placement.techniques)
        for component in ("transformer", "transformer_2"):
            module = getattr(pipeline, component, None)
            if module is None:
                continue
            dtypes = Counter(str(p.dtype) for p in module.parameters())
            assert ("torch.float8_e4m3fn" in dtypes) == (profile == "fp8_group_offload"), (profile, component, dtypes)
            kinds = Counter(type(p.data).__name__ for p in module.parameters())
            assert ("Int8Tensor" in kinds) == (profile == "int8_model_offload"), (profile, component, kinds)
            if profile == "int8_model_offload":  # every linear layer of the blocks, int8 with its scales
                weight = module.blocks[0].attn1.to_q.weight.data
                assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8
            hooks = getattr(module.blocks[0], "_diffusers_hook", None)
            offloaded = hooks is not None and hooks.get_hook("group_offloading") is not None
            assert offloaded == (GROUP_OFFLOAD in placement.techniques), (profile, component)
        steps = []
        frames[profile] = FAMILY.run(loaded, params, lambda step, total: steps.append(step))
        assert steps == [1, 2]
    reference = frames["resident"]
    assert reference.shape == (5, 32, params.width, 3) and np.isfinite(reference).all()
    for profile, video in frames.items():
        assert video.shape == reference.shape, profile
        if profile in ("fp8_group_offload", "int8_model_offload"):
            assert 0 < np.abs(video - reference).max() < 0.1, profile
        else:
            assert np.array_equal(video, reference), profile


def test_image_to_video_on_ti2v_keeps_fp8_storage_and_the_vae_tiles(engine: Engine) -> None:
    from PIL import Image

    model, variant = engine.orchestrator.resolve("ti2v-5B", "dev")
    folder = engine.orchestrator.ensure(model.id, "dev").path
    placement = engine.plan(engine.prepare(GenerationRequest(model="ti2v-5B", variant="dev", prompt="x",
                                                             memory_profile="fp8_group_offload"))).placement
    loaded = FAMILY.load(folder, model, variant, placement)
    loaded.pipeline.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32,
                                      tile_sample_stride_height=16, tile_sample_stride_width=16)  # tiles even at 64x32
    video = FAMILY.run(loaded, _params("ti2v-5B", Image.new("RGB", (64, 32), (200, 120, 40))), lambda s, t: None)
    assert video.shape == (5, 32, 64, 3) and np.isfinite(video).all()
    stored = Counter(str(p.dtype) for p in loaded.pipeline.transformer.parameters())
    assert stored["torch.float8_e4m3fn"] > 0  # the image view shares the modules and did not cast them up
    assert loaded.image_pipeline.transformer is loaded.pipeline.transformer


def test_the_result_and_sidecar_carry_the_memory_plan(engine: Engine, tmp_path: Path) -> None:
    result = engine.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", width=48, height=32,
                                               num_frames=5, steps=2, seed=1, memory_profile="fp8_group_offload",
                                               output=tmp_path / "fp8.mp4"))
    document = json.loads(result.sidecar.read_text())
    assert document["memory_profile"] == "fp8_group_offload"
    plan = document["memory_plan"]
    assert plan["profile"] == "fp8_group_offload" and plan["device"] == "cpu"
    assert plan["techniques"] == [FP8_STORAGE, GROUP_OFFLOAD, VAE_TILING]
    assert plan["estimated_vram_bytes"] is None and plan["estimated_ram_bytes"] > 0 and plan["fits"] is True
    assert plan["reason"].startswith("asked for fp8_group_offload")
    assert (document["fallback"], document["mock"]) == (None, False)
    auto = engine.plan(engine.prepare(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox")))
    assert auto.profile == "resident" and auto.fits and auto.reason.startswith("no GPU: everything in RAM")


def test_models_list_shows_the_profiles_in_order_with_vram_and_ram(wan) -> None:
    result = wan("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    engine_info = next(m for m in result.json["models"] if m["id"] == "t2v-A14B@2.2.0")["engine"]
    assert [p["name"] for p in engine_info["memory_profiles"]] == list(PROFILES)
    by_name = {p["name"]: p for p in engine_info["memory_profiles"]}
    assert by_name["fp8_group_offload"]["techniques"] == [FP8_STORAGE, GROUP_OFFLOAD, STREAM_PREFETCH, VAE_TILING]
    assert by_name["int8_model_offload"]["techniques"] == [INT8_WEIGHTS, MODEL_OFFLOAD, VAE_TILING]
    rows = {(e["resolution"], e["memory_profile"]): e for e in engine_info["vram_estimates"]}
    assert set(rows) == {(size, p) for size in ("1280x720", "720x1280", "832x480", "480x832") for p in PROFILES}
    at_720p = [rows[("1280x720", p)]["vram_bytes"] for p in PROFILES]
    assert at_720p == sorted(at_720p, reverse=True) and at_720p[-1] <= 16 * GiB
    assert rows[("1280x720", "fp8_group_offload")]["ram_bytes"] < rows[("1280x720", "group_offload")]["ram_bytes"]
    assert rows[("1280x720", "int8_model_offload")]["ram_bytes"] < rows[("1280x720", "model_offload")]["ram_bytes"]

