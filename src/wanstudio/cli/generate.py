"""`wan generate`: one video from the command line, with a progress bar on a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from wanstudio._units import format_bytes
from wanstudio.cli._output import emit_json, reporting

SCHEMA = "wan.generate/1"


def generate(
    model: str = typer.Option(..., "--model", "-m", help="Model id or name, e.g. ti2v-5B or t2v-A14B@2.2.0."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="What the video shows."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Variant (default: the model's default; dev for a quick CPU run)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Input image for image-to-video (i2v-A14B, ti2v-5B)."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What to avoid (default: the official one)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: the model's)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Number of frames, 4n+1 (default: the model's)."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT, e.g. 1280x720 (default: the model's)."),
    fps: Optional[int] = typer.Option(None, "--fps", help="Frames per second of the MP4 (default: 16, or 24 for ti2v-5B)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Guidance scale (the high-noise expert's on A14B)."),
    guidance_2: Optional[float] = typer.Option(None, "--guidance-2", help="Guidance scale of the low-noise expert (A14B)."),
    flow_shift: Optional[float] = typer.Option(None, "--flow-shift", help="Sampler flow shift (default: the model's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed; the same seed and parameters give the same video."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="MP4 file or folder (default: a new file here)."),
    memory_profile: Optional[str] = typer.Option(
        None, "--memory-profile",
        help="resident, model_offload, int8_model_offload (needs wanstudio[quant]), group_offload, "
             "fp8_group_offload or sequential_offload, fastest to leanest "
             "(default: the fastest that fits this machine; see wan doctor).",
    ),
    allow_fallback: bool = typer.Option(
        False, "--allow-fallback", help="When nothing fits, make the video with a lighter model of the family "
                                        "(e.g. ti2v-5B for an A14B model); the output says so."
    ),
    lora: Optional[list[str]] = typer.Option(
        None, "--lora", help="NAME_OR_PATH[:WEIGHT[:WEIGHT_2]], repeatable: a LoRA of MODELS_ROOT/loras or a "
                             ".safetensors path; WEIGHT_2 is the low-noise expert's on A14B (default: WEIGHT).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (progress goes to stderr)."),
) -> None:
    """Generate a video and write it as MP4, with a JSON sidecar of its parameters next to it."""
    with reporting(SCHEMA, as_json):
        from wanstudio.engine import Engine, GenerationRequest
        from wanstudio.engine.lora import check_lora_requests, parse_lora_arg

        loras = check_lora_requests((parse_lora_arg(text) for text in lora or ()), param="lora")

        request = GenerationRequest(
            model=model,
            variant=variant,
            prompt=prompt,
            image=image,
            negative_prompt=negative_prompt,
            steps=steps,
            num_frames=frames,
            fps=fps,
            guidance_scale=guidance,
            guidance_scale_2=guidance_2,
            flow_shift=flow_shift,
            seed=seed,
            output=output,
            memory_profile=memory_profile,
            allow_fallback=allow_fallback,
            loras=loras,
        ).with_size(size)
        engine = Engine()
        job = engine.prepare(request)  # bad input fails here, before any download or load
        with _progress_bar(enabled=sys.stderr.isatty()) as listener:
            result = engine.generate(job, progress=listener)
        if as_json:
            emit_json(SCHEMA, result.to_json())
            return
        for warning in result.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        metrics = result.metrics
        if result.mock:
            print("MOCK: the file below is a synthetic test pattern, not a generated video (WAN_ALLOW_MOCK=1)")
        elif result.fallback is not None:
            print(f"made with {result.fallback.to_model} instead of {result.fallback.from_model}: {result.fallback.reason}")
        print(
            f"{result.output}  ({result.params.width}x{result.params.height}, {result.params.num_frames} frames at "
            f"{result.params.fps} fps, seed {result.params.seed}; {metrics.elapsed_seconds:.1f} s, "
            f"peak RAM {format_bytes(metrics.peak_rss_bytes)}"
            + (f", peak VRAM {format_bytes(metrics.peak_vram_bytes)}" if metrics.peak_vram_bytes else "")
            + (f"; {result.placement.memory_profile} on {result.placement.device}" if not result.mock else "")
            + ")"
        )


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[object]:
    """A bar on stderr: stage, steps and ETA while denoising, bytes while the model downloads."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from wanstudio.engine import GenerationProgress

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task("ensuring", total=100, detail="")

        def listener(event: GenerationProgress) -> None:
            if event.download is not None:
                d = event.download
                detail = f"{format_bytes(d.bytes_done)}/{format_bytes(d.bytes_total)}"
                bar.update(task_id, description="downloading", completed=100 * d.bytes_done / max(d.bytes_total, 1), detail=detail)
                return
            detail = f"step {event.step}/{event.total_steps}" if event.stage == "denoising" else ""
            if event.eta_seconds is not None:
                detail += f"  ETA {event.eta_seconds:.0f}s"
            bar.update(task_id, description=event.stage, completed=event.percent, detail=detail)

        yield listener
