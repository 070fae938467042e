"""`wan models ...`: list, ensure, status, check and lock the models of the manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from wanstudio._units import format_bytes
from wanstudio.cli._output import EXIT_INCOMPLETE, emit_json, reporting
from wanstudio.cli._progress import download_progress
from wanstudio.config import Settings
from wanstudio.errors import InvalidParamsError
from wanstudio.orchestrator.orchestrator import EnsureResult, Orchestrator
from wanstudio.orchestrator.status import VariantStatus

models_app = typer.Typer(help="Get model files onto disk, verified, and see what is there.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout (progress goes to stderr).")
VariantOption = typer.Option(None, "--variant", help="Variant to use (default: each model's default_variant).")


def _orchestrator() -> Orchestrator:
    return Orchestrator(Settings.from_env())


@models_app.command("list")
def list_models(as_json: bool = JsonOption) -> None:
    """List the models: capabilities, defaults, limits, estimated VRAM and, when MODELS_ROOT is set, what is
    on disk."""
    with reporting("wan.models.list/1", as_json):
        from wanstudio.engine.info import model_info

        orchestrator = _orchestrator()
        has_store = orchestrator.settings.models_root is not None
        models = [model_info(orchestrator, model, with_status=has_store) for model in orchestrator.manifest.models.values()]
        if as_json:
            emit_json("wan.models.list/1", {"models": models})
            return
        for model in models:
            can = ", ".join(model["engine"].get("capabilities", [])) or "not runnable here"
            print(f"{model['id']}  ({can}; {model['family']})  {model['description']}")
            for variant in model["variants"]:
                size = format_bytes(variant["bytes"]) if variant["bytes"] is not None else "size from the Hub"
                default = " (default)" if variant["name"] == model["default_variant"] else ""
                state = f"  [{variant['state']}]" if variant["state"] else ""
                print(f"    {variant['name']}{default}: {size}{state}")


@models_app.command("recommend")
def recommend(
    task: str = typer.Option("t2v", "--task", help="t2v (text to video) or i2v (image to video)."),
    image: bool = typer.Option(False, "--image", help="An input image will be given."),
    vram: Optional[str] = typer.Option(None, "--vram", help="GPU memory to plan for, e.g. 16G (default: this machine's GPU)."),
    prefer: str = typer.Option("balanced", "--prefer", help="speed, balanced or quality."),
    as_json: bool = JsonOption,
) -> None:
    """Which model, variant and memory profile to use for a task on this (or a given) GPU, and why."""
    with reporting("wan.models.recommend/1", as_json):
        from wanstudio._units import parse_size
        from wanstudio.engine.info import recommend as recommend_model

        if task not in ("t2v", "i2v"):
            raise InvalidParamsError(f"--task {task!r} is unknown; use t2v or i2v", param="--task")
        try:
            vram_bytes = parse_size(vram) if vram else _gpu_memory()
        except ValueError as exc:
            raise InvalidParamsError(f"--vram {vram!r}: {exc}", param="--vram", suggestions=["--vram 16G"]) from None
        choice = recommend_model(_orchestrator(), task=task, has_image=image, vram_bytes=vram_bytes, preference=prefer)  # type: ignore[arg-type]
        if as_json:
            emit_json("wan.models.recommend/1", {"recommendation": choice.to_json()})
            return
        print(f"{choice.model} [{choice.variant}] at {choice.width}x{choice.height}, memory profile {choice.memory_profile}")
        print(f"    why: {choice.reason}")


def _gpu_memory() -> int | None:
    import torch

    return int(torch.cuda.mem_get_info()[1]) if torch.cuda.is_available() else None


@models_app.command("ensure")
def ensure(
    all_models: bool = typer.Option(False, "--all", help="Ensure every model of the manifest."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Model id to ensure; repeat for several."),
    variant: Optional[str] = VariantOption,
    without: Optional[List[str]] = typer.Option(None, "--without", help="Optional component to leave out; repeatable."),
    force: bool = typer.Option(False, "--force", help="Re-verify every file's sha256 and fetch again what is damaged."),
    as_json: bool = JsonOption,
) -> None:
    """Download what is missing (verified, atomic, resumable) and print where each model is."""
    schema = "wan.models.ensure/1"
    results: list[EnsureResult] = []
    partial: dict[str, Any] = {"results": []}
    with reporting(schema, as_json, partial):
        if all_models == bool(only):
            raise InvalidParamsError(
                "name the models to ensure with --only ID (repeatable), or pass --all",
                param="--only",
                suggestions=["wan models ensure --only ti2v-5B --variant dev", "wan models ensure --all --variant dev"],
            )
        orchestrator = _orchestrator()
        model_ids = list(orchestrator.manifest.models) if all_models else list(only or [])
        for model_id in dict.fromkeys(model_ids):
            with download_progress(enabled=sys.stderr.isatty()) as listener:
                result = orchestrator.ensure(model_id, variant, without=without or (), force=force, progress=listener)
            results.append(result)
            partial["results"].append(result.to_json())
            if not as_json:
                print(_describe_ensure(result))
        if as_json:
            emit_json(schema, {"results": [r.to_json() for r in results]})


@models_app.command("lock")
def lock(
    model_ids: Optional[List[str]] = typer.Argument(None, help="Models to lock (default: every model with Hub-listed variants)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Where to write the locked manifest (default: WAN_MODELS_MANIFEST, in place)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Record the sizes and sha256 the Hub gives for Hub-listed variants, and their commit, in a manifest."""
    schema = "wan.models.lock/1"
    with reporting(schema, as_json):
        from wanstudio.orchestrator.lock import lock_manifest

        target, locked = lock_manifest(_orchestrator(), model_ids or [], output)
        if as_json:
            emit_json(schema, {"manifest": str(target), "locked": [item.to_json() for item in locked]})
            return
        for item in locked:
            print(f"{item.id} [{item.variant}]: {item.files} files, {format_bytes(item.bytes)} at {item.repo}@{item.revision}")
        print(f"wrote {target}")


def _describe_ensure(result: EnsureResult) -> str:
    if result.bytes_downloaded or result.sources:
        origin = ", ".join(f"{count} files from {name}" for name, count in result.sources.items())
        return f"{result.id} [{result.variant}] ready at {result.path} ({format_bytes(result.bytes_downloaded)}: {origin})"
    return f"{result.id} [{result.variant}] ready at {result.path}"


@models_app.command("status")
def status(
    model_ids: Optional[List[str]] = typer.Argument(None, metavar="[ID]...", help="Models to report (default: all)."),
    variant: Optional[str] = VariantOption,
    as_json: bool = JsonOption,
) -> None:
    """What is on disk: state, missing files and bytes still needed. Exit 3 when something is not complete."""
    _report("wan.models.status/1", model_ids or [], variant, deep=False, as_json=as_json)


@models_app.command("check")
def check(
    model_ids: Optional[List[str]] = typer.Argument(None, metavar="[ID]...", help="Models to verify (default: all)."),
    variant: Optional[str] = VariantOption,
    deep: bool = typer.Option(False, "--deep", help="Also verify every file's sha256 (reads every byte)."),
    as_json: bool = JsonOption,
) -> None:
    """Verify the files on disk (sizes; sha256 with --deep). Never uses the network. Exit 3 on a problem."""
    _report("wan.models.check/1", model_ids or [], variant, deep=deep, as_json=as_json)


def _report(schema: str, model_ids: list[str], variant: str | None, *, deep: bool, as_json: bool) -> None:
    statuses: list[VariantStatus] = []
    with reporting(schema, as_json):
        statuses = _orchestrator().statuses(model_ids, variant, deep=deep)
        if as_json:
            emit_json(schema, {"deep": deep, "models": [s.to_json() for s in statuses]})
        else:
            for item in statuses:
                print(_describe_status(item))
    if any(not s.complete for s in statuses):
        raise typer.Exit(EXIT_INCOMPLETE)


def _describe_status(item: VariantStatus) -> str:
    line = f"{item.id} [{item.variant}]: {item.state}"
    if item.state == "complete":
        line += f" at {item.path} ({format_bytes(item.bytes_present)})"
    elif item.bytes_needed is not None:
        line += f", {format_bytes(item.bytes_needed)} to fetch"
    if item.pinned:
        line += ", pinned"
    details = [f"    missing: {p}" for p in item.missing_files[:10]] + [f"    corrupt: {p}" for p in item.corrupt_files[:10]]
    if len(item.missing_files) > 10:
        details.append(f"    ... and {len(item.missing_files) - 10} more missing")
    if item.state in ("partial", "missing"):
        details.append(f"    fix: wan models ensure --only {item.id} --variant {item.variant}")
    if item.state == "corrupt":
        details.append(f"    fix: wan models ensure --only {item.id} --variant {item.variant} --force")
    return "\n".join([line, *details])

