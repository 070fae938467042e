"""`wan doctor`: what this machine has for generation (GPUs, VRAM, RAM, CPUs) and what fits on it."""

from __future__ import annotations

import typer

from wanstudio._units import format_bytes
from wanstudio.cli._output import emit_json, reporting

SCHEMA = "wan.doctor/1"


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Probe the GPUs (VRAM total and free, compute capability, bf16/fp8), RAM and CPUs, and show for each
    model the memory profile it would run with here, and whether it fits."""
    with reporting(SCHEMA, as_json):
        from wanstudio.config import Settings
        from wanstudio.engine.hardware import probe
        from wanstudio.engine.info import what_fits
        from wanstudio.engine.memory import detect_device
        from wanstudio.orchestrator.orchestrator import Orchestrator

        settings = Settings.from_env()
        hardware = probe()
        device = detect_device(settings.device)
        fits = what_fits(Orchestrator(settings), hardware, device)
        if as_json:
            emit_json(SCHEMA, {**hardware.to_json(), "device": device, "ram_budget_bytes": hardware.ram_budget,
                               "fits": [f.to_json() for f in fits]})
            return
        lines = []
        if hardware.gpus:
            for gpu in hardware.gpus:
                kinds = ", ".join(k for k, ok in (("bf16", gpu.bf16), ("fp8", gpu.fp8)) if ok) or "no bf16"
                lines.append(f"GPU {gpu.device}: {gpu.name}, {format_bytes(gpu.total_vram_bytes)} "
                             f"({format_bytes(gpu.free_vram_bytes)} free), "
                             f"compute capability {gpu.compute_capability} ({kinds})")
        else:
            lines.append("GPU: none usable" + (" (Apple MPS is available)" if hardware.mps else ""))
        lines.append(f"RAM: {format_bytes(hardware.ram_bytes)} ({format_bytes(hardware.available_ram_bytes)} available; "
                     f"plans use up to {format_bytes(hardware.ram_budget)})")
        lines.append(f"CPUs: {hardware.cpu_count}")
        lines.append(f"torch: {hardware.torch_version or 'not installed'}"
                     + (f", CUDA {hardware.cuda_version}" if hardware.cuda_version else ""))
        lines.extend(f"note: {note}" for note in hardware.notes)
        lines.append(f"generation runs on: {device} (WAN_DEVICE={settings.device})")
        lines.append("")
        lines.append("what fits (estimates at each model's default frame count):")
        for fit in fits:
            plan = fit.plan
            vram = f"{format_bytes(plan.vram_bytes)} VRAM, " if plan.vram_bytes is not None else ""
            verdict = "fits" if plan.fits else "does not fit"
            lines.append(f"  {fit.model} [{fit.variant}] {fit.width}x{fit.height}, {fit.num_frames} frames: "
                         f"{verdict} with {plan.profile} (about {vram}{format_bytes(plan.ram_bytes)} RAM)")
            if not plan.fits:
                lines.append(f"      {plan.reason}")
        print("\n".join(lines))
