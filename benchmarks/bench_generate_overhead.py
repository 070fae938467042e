"""Generation overhead: wanstudio's engine against calling the diffusers pipeline directly, in one run.

On CPU, offline, on the bundled tiny `dev` variants of the three WAN 2.2 models, interleaved so that drift
hits both sides alike: per job, a warm `Engine.generate` against the same folder's diffusers pipeline
called with the very same parameters, seed and scheduler, then `write_mp4`; and the first (cold) job of a
new `Engine` against its second (warm) one. Compare the ratios; absolute numbers move between runs.

    .venv/bin/python benchmarks/bench_generate_overhead.py [--quick] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import wanstudio
from _report import machine_basics, markers, write_section
from wanstudio import Settings
from wanstudio.engine import Engine, GenerationParams, GenerationRequest
from wanstudio.engine.registry import family_for
from wanstudio.engine.video import write_mp4
from wanstudio.engine.wan import NEGATIVE_PROMPT

MODELS = ("t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0")
VARIANT = "dev"
PROMPT = "a red fox runs through fresh snow, morning light"
SEED = 42
LARGE = (256, 128, 17, 8)  # width, height, frames, steps: valid for every model (multiples of 32)
SECTION = "generate-overhead"
BEGIN, END = markers(SECTION)
GOAL_OVERHEAD_PCT = 5.0  # ours at most this much slower than the direct pipeline + MP4
GOAL_WARM_SPEEDUP = 3.0  # a warm job at least this much faster than a cold one


@dataclass(frozen=True)
class Repetitions:
    rounds: int  # interleaved rounds over every case
    round_seconds: float  # per round, each side of a case runs as many jobs as fill about this time
    engines: int  # new engines per model for cold against warm


FULL = Repetitions(rounds=9, round_seconds=0.5, engines=7)
QUICK = Repetitions(rounds=3, round_seconds=0.25, engines=3)


@dataclass
class Case:
    """One model at one size: our request, the parameters it resolves to, the direct pipeline, samples."""

    model_id: str
    size: str
    request: GenerationRequest
    params: GenerationParams
    image: Any  # the PIL image both sides get (i2v-A14B), else None
    pipeline: Any  # the diffusers pipeline, loaded once, of the direct side
    per_round: int = 1  # jobs per side in each round
    ours: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)  # pipeline + write_mp4
    pipeline_only: list[float] = field(default_factory=list)


@dataclass
class ColdWarm:
    model_id: str
    size: str
    cold: list[float] = field(default_factory=list)
    cold_loading: list[float] = field(default_factory=list)  # the job's "loading" stage (its metrics)
    warm: list[float] = field(default_factory=list)
    warm_loading: list[float] = field(default_factory=list)
    process_cold: list[float] = field(default_factory=list)  # first job of a fresh `python` process
    process_warm: list[float] = field(default_factory=list)  # its second job


# The first and second job in a new process that has imported only wanstudio, as `wan generate` or a
# freshly started server would run them: the first pays for loading torch, diffusers and the weights.
FRESH_PROCESS = """
import json, sys, time
from pathlib import Path
from wanstudio import Engine, GenerationRequest, Settings
engine = Engine(Settings.from_env())
fields = json.loads(sys.argv[1])
request = GenerationRequest(**{**fields, "output": Path(fields["output"])})
start = time.perf_counter(); engine.generate(request); middle = time.perf_counter(); engine.generate(request)
print(json.dumps([middle - start, time.perf_counter() - middle]))
"""


def hermetic_environment(work: Path) -> None:
    """A fresh MODELS_ROOT, the CPU, and the Hugging Face libraries cut off from the network and any token."""
    for name in [n for n in os.environ if n.startswith(("HF_", "WAN_")) or n == "TRANSFORMERS_OFFLINE"]:
        del os.environ[name]
    os.environ.update(MODELS_ROOT=str(work / "models"), WAN_DEVICE="cpu", HF_HOME=str(work / "hf-home"),
                      HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")


def test_image(width: int, height: int) -> Any:
    """A deterministic RGB image of exactly the job's size (so that neither side resizes it)."""
    from PIL import Image

    ramp, size = Image.linear_gradient("L"), (width, height)
    return Image.merge("RGB", (ramp.resize(size), ramp.rotate(90).resize(size), Image.new("L", size, 96)))


def load_direct(folder: Path, params: GenerationParams) -> Any:
    """The folder as a direct diffusers user loads it, with the scheduler our engine gives the job."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()  # loading bars on stderr (loading is not timed)
    transformers.utils.logging.disable_progress_bar()
    pipeline = diffusers.DiffusionPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    scheduler = pipeline.scheduler
    if params.flow_shift is not None and "flow_shift" in scheduler.config:
        pipeline.scheduler = type(scheduler).from_config(scheduler.config, flow_shift=params.flow_shift)
    return pipeline


def build_cases(engines: dict[str, Engine], out: Path) -> list[Case]:
    """Two sizes per model; both sides get the parameters our engine resolves (`Engine.prepare`)."""
    cases = []
    for model_id in MODELS:
        engine, folder = engines[model_id], wanstudio.ensure(model_id, VARIANT)
        model, _ = engine.orchestrator.resolve(model_id, VARIANT)
        spec = family_for(model).spec(model)
        dev, pipeline = spec.defaults_for(VARIANT), None
        for label, (w, h, f, s) in (("dev default", (None, None, None, None)), ("large", LARGE)):
            image = test_image(w or dev.width, h or dev.height) if spec.image == "required" else None
            request = GenerationRequest(
                model=model_id, prompt=PROMPT, variant=VARIANT, image=image, width=w, height=h, num_frames=f,
                steps=s, seed=SEED, output=out / f"ours-{model.name}-{label.replace(' ', '-')}.mp4",
            )
            p = engine.prepare(request).params
            if w is None and (p.width, p.height, p.num_frames) != (dev.width, dev.height, dev.num_frames):
                raise SystemExit(f"{model_id}: the engine did not pick the dev default size")
            pipeline = pipeline or load_direct(folder, p)
            size = f"{p.width}x{p.height}, {p.num_frames} frames, {p.steps} steps ({label})"
            cases.append(Case(model_id, size, request, p, image, pipeline))
    return cases


def ours(engine: Engine, case: Case) -> float:
    start = time.perf_counter()
    result = engine.generate(case.request)
    elapsed = time.perf_counter() - start
    if not result.metrics.pipeline_cached:
        raise SystemExit(f"{case.model_id}: the engine loaded its pipeline again; the job was not warm")
    return elapsed


def direct(case: Case, output: Path) -> tuple[float, float, Any]:
    """One job as a direct diffusers user runs it: seconds in the pipeline, seconds with the MP4, frames."""
    import torch

    p, start = case.params, time.perf_counter()
    kwargs: dict[str, Any] = {} if case.image is None else {"image": case.image}
    if p.guidance_scale_2 is not None:
        kwargs["guidance_scale_2"] = p.guidance_scale_2
    generator = torch.Generator("cpu").manual_seed(p.seed)
    with torch.inference_mode():
        frames = case.pipeline(
            prompt=p.prompt, negative_prompt=NEGATIVE_PROMPT, height=p.height, width=p.width,
            num_frames=p.num_frames, num_inference_steps=p.steps, guidance_scale=p.guidance_scale,
            generator=generator, output_type="np", **kwargs,
        ).frames[0]
    piped = time.perf_counter()
    write_mp4(frames, output, p.fps)
    return piped - start, time.perf_counter() - start, frames


def time_overhead(engines: dict[str, Engine], cases: Sequence[Case], reps: Repetitions, out: Path) -> None:
    """Warm both sides up, checking that they make the same frames (not MP4s: once torch has run, x264 does
    not always encode identical tiny frames into identical bytes); then time them in interleaved rounds."""
    from unittest import mock

    import numpy as np

    from wanstudio.engine import engine as engine_module

    for i, case in enumerate(cases):
        engines[case.model_id].generate(case.request)  # loads our pipeline
        with mock.patch.object(engine_module, "write_mp4", wraps=engine_module.write_mp4) as spy:
            ours(engines[case.model_id], case)  # the spy keeps the frames our engine encodes
        _, seconds, frames = direct(case, out / f"direct-{i}.mp4")
        case.per_round = max(1, round(reps.round_seconds / seconds))
        theirs = spy.call_args.args[0]
        if theirs.dtype != frames.dtype or not np.array_equal(theirs, frames):
            raise SystemExit(f"{case.model_id}, {case.size}: the two sides made different frames")
    for round_ in range(reps.rounds):
        for i, case in enumerate(cases):
            for job in range(case.per_round):
                for side in ("ours", "direct") if (round_ + job) % 2 == 0 else ("direct", "ours"):
                    if side == "ours":
                        case.ours.append(ours(engines[case.model_id], case))
                    else:
                        piped, total, _ = direct(case, out / f"direct-{i}.mp4")
                        case.pipeline_only.append(piped)
                        case.direct.append(total)


def time_cold_warm(cases: Sequence[Case], engines: int) -> list[ColdWarm]:
    """First and second job of new engines, at the dev default size, the models interleaved."""
    defaults = [c for c in cases if c.size.endswith("(dev default)")]
    rows = [ColdWarm(c.model_id, c.size) for c in defaults]
    for _ in range(engines):
        for case, row in zip(defaults, rows, strict=True):
            gc.collect()  # the previous engine's pipelines are freed outside the timed jobs
            engine, start = Engine(Settings.from_env()), time.perf_counter()
            first, middle = engine.generate(case.request), time.perf_counter()
            second, end = engine.generate(case.request), time.perf_counter()
            if first.metrics.pipeline_cached or not second.metrics.pipeline_cached:
                raise SystemExit(f"{case.model_id}: the cold job was cached or the warm one was not")
            row.cold.append(middle - start)
            row.warm.append(end - middle)
            row.cold_loading.append(first.metrics.stage_seconds.get("loading", 0.0))
            row.warm_loading.append(second.metrics.stage_seconds.get("loading", 0.0))
            del engine, first, second
    for _ in range(max(2, engines // 2)):
        for case, row in zip(defaults, rows, strict=True):
            work = Path(os.environ["MODELS_ROOT"]).parent
            fields = {"model": case.model_id, "variant": "dev", "prompt": case.params.prompt,
                      "seed": case.params.seed, "output": str(work / "fresh.mp4")}
            if case.image is not None:  # images travel as files
                case.image.save(work / "fresh-input.png")
                fields["image"] = str(work / "fresh-input.png")
            completed = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(fields)], capture_output=True,
                                       text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
            cold, warm = json.loads(completed.stdout.strip().splitlines()[-1])
            row.process_cold.append(cold)
            row.process_warm.append(warm)
    return rows


def machine_description() -> str:
    """CPU, cores, memory, kernel and library versions: what the numbers depend on."""
    import av
    import diffusers
    import torch
    import transformers

    return (
        f"{machine_basics()}; torch {torch.__version__} ({torch.get_num_threads()} threads); diffusers "
        f"{diffusers.__version__}; transformers {transformers.__version__}; PyAV {av.__version__}"
    )


# -- report ------------------------------------------------------------------------------------------------

METHOD = """\
**Method.** CPU only, offline, one process, the bundled tiny `dev` variants (ensured into a fresh
`MODELS_ROOT` first; their files stay in the OS page cache). *Ours:*
`Engine(settings).generate(GenerationRequest(...))` on a warm engine (one per model, loaded by an untimed
first job): validation, warm ensure, pipeline cache, progress, the pipeline call, the MP4 and its sidecar.
*Direct:* the same folder loaded once with `DiffusionPipeline.from_pretrained(path)`,
`set_progress_bar_config(disable=True)` and the job's scheduler (`type(s).from_config(s.config,
flow_shift=...)`, as our engine does); per job a `torch.Generator("cpu").manual_seed(seed)` and one call
under `torch.inference_mode()` with the prompt, our negative prompt, size, frames, steps, `guidance_scale`
(and `guidance_scale_2` for the A14B models) as `Engine.prepare` resolves them, `output_type="np"`, then
`write_mp4` on the frames: a direct user has to write the video too. *Pipeline only*: that call without the
MP4. i2v-A14B gets the same image, of the job's size, on both sides. An untimed job per side and case first
checks that both hand bit-identical frames to `write_mp4`. Then {rounds} rounds over every case, each case
running as many jobs per side as fill about {round_seconds:g} s (*n* in all), the sides alternating job by
job; wall time per job, medians. *Overhead*: (ours - direct) / direct of the medians; *paired*: the median
of ours / direct - 1 over jobs run back to back, less moved by a phase where the machine runs every job
slower (this shared machine has them). *Cold against warm:* a new `Engine` per sample, libraries already
imported (cold = the first ensure of a new orchestrator + the load from disk + the job), its first job
against its second; {engines} engines per model, models interleaved, dev default size."""


def render(machine: str, cases: Sequence[Case], cold_warm: Sequence[ColdWarm], reps: Repetitions) -> str:
    """The Markdown section, markers included: machine, method, goals and both tables."""
    worst, slowest = max(cases, key=_overhead), min(cold_warm, key=_speedup)
    goals = [
        ("per-job overhead of a warm engine against the pipeline + `write_mp4` called directly",
         f"<= {GOAL_OVERHEAD_PCT:g}% on every model and size",
         f"{_overhead(worst):+.1f}% at worst ({worst.model_id}, {worst.size}; paired {_paired(worst):+.1f}%)",
         _met(_overhead(worst), "overhead")),
        ("warm job against the cold first job of a new engine (cold / warm)",
         f">= {GOAL_WARM_SPEEDUP:g}x on every model",
         f"{_speedup(slowest):.2f}x at worst ({slowest.model_id})", _met(_speedup(slowest), "warm")),
    ]
    per_job = [
        (c.model_id, c.size, len(c.ours), *(f"{_ms(x):.1f}" for x in (c.ours, c.direct, c.pipeline_only)),
         f"{_ms(c.ours) - _ms(c.direct):+.1f}", f"{_overhead(c):+.1f}%", f"{_paired(c):+.1f}%",
         _met(_overhead(c), "overhead"))
        for c in cases
    ]
    cold = [
        (r.model_id, r.size, f"{_ms(r.cold):.1f}", f"{_ms(r.cold_loading):.1f}", f"{_ms(r.warm):.1f}",
         f"{_ms(r.warm_loading):.2f}", f"{_speedup(r):.2f}x", _met(_speedup(r), "warm"))
        for r in cold_warm
    ]
    fresh = [
        (r.model_id, r.size, len(r.process_cold), f"{_ms(r.process_cold):.0f}", f"{_ms(r.process_warm):.1f}",
         f"{_ms(r.process_cold) / _ms(r.process_warm):.1f}x", _met(_ms(r.process_cold) / _ms(r.process_warm), "warm"))
        for r in cold_warm
    ]
    lines = [
        BEGIN,
        "## Generation overhead: wanstudio's engine against the diffusers pipeline called directly",
        "",
        f"Generated by `benchmarks/bench_generate_overhead.py` on {time.strftime('%Y-%m-%d')}. Absolute "
        "numbers move between runs and machines; compare the ratios, which come from one run with the sides "
        "interleaved.",
        "",
        f"**Machine:** {machine}.",
        "",
        METHOD.replace("\n", " ").format(**vars(reps)),
        "",
        "**Goals**",
        "",
        *_table("goal | target | measured | met", "llll", goals),
        "",
        "### Per job, warm engine (ms, medians)",
        "",
        *_table("model | job | n | ours | direct: pipeline + MP4 | pipeline only | ours - direct | overhead "
                f"| paired | <= {GOAL_OVERHEAD_PCT:g}%", "llrrrrrrrl", per_job),
        "",
        f"### Cold against warm (ms, medians of {reps.engines} new engines)",
        "",
        "*loading*: the job's `loading` stage from its own metrics: the load from disk in the cold job, "
        "the cache hit in the warm one.",
        "",
        *_table("model | job | cold (first job) | cold: loading | warm (second job) | warm: loading "
                f"| cold / warm | >= {GOAL_WARM_SPEEDUP:g}x", "llrrrrrl", cold),
        "",
        "The dev weights are about 1 MB, so loading them costs only ~50 ms and the cache cannot save more than "
        "that within a process whose libraries are already imported; with real weights (tens of GB) loading "
        "takes minutes and dominates. The cold job as users meet it, the first in a new process (`wan "
        "generate`, or a server's first job), also imports torch, diffusers and the model classes:",
        "",
        "### First and second job in a fresh process (ms, medians)",
        "",
        *_table(f"model | job | processes | first job | second job | first / second | >= {GOAL_WARM_SPEEDUP:g}x",
                "llrrrrl", fresh),
        END,
    ]
    return "\n".join(lines) + "\n"


def _table(header: str, aligns: str, rows: Sequence[Sequence[object]]) -> list[str]:
    rule = "|".join("---" if a == "l" else "--:" for a in aligns)
    return [f"| {header} |", f"|{rule}|", *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def _ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def _overhead(case: Case) -> float:
    return (_ms(case.ours) - _ms(case.direct)) / _ms(case.direct) * 100


def _paired(case: Case) -> float:
    return statistics.median(o / d for o, d in zip(case.ours, case.direct, strict=True)) * 100 - 100


def _speedup(row: ColdWarm) -> float:
    return _ms(row.cold) / _ms(row.warm)


def _met(value: float, goal: str) -> str:
    ok = value <= GOAL_OVERHEAD_PCT if goal == "overhead" else value >= GOAL_WARM_SPEEDUP
    return "**met**" if ok else "**not met**"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: faster, noisier")
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    args = parser.parse_args(argv)
    reps = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="wan-bench-") as tmp:
        work = Path(tmp)
        hermetic_environment(work)
        engines = {model_id: Engine(Settings.from_env()) for model_id in MODELS}
        cases = build_cases(engines, work / "out")
        time_overhead(engines, cases, reps, work / "out")
        engines.clear()
        for case in cases:
            case.pipeline = None  # free both sides' pipelines before the cold loads
        cold_warm = time_cold_warm(cases, reps.engines)
        section = render(machine_description(), cases, cold_warm, reps)
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
