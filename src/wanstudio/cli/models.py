"""`wan models ...`: list, ensure, status, check and lock the models of the manifest; gc, pin and unpin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, TypeVar

import typer

from wanstudio._units import format_bytes
from wanstudio.cli._output import EXIT_INCOMPLETE, emit_json, reporting
from wanstudio.cli._progress import download_progress
from wanstudio.config import Settings
from wanstudio.errors import InvalidParamsError, ModelNotFoundError
from wanstudio.orchestrator.orchestrator import EnsureResult, Orchestrator
from wanstudio.orchestrator.status import VariantStatus

if TYPE_CHECKING:
    from wanstudio.orchestrator.gc import GcReport

T = TypeVar("T")

models_app = typer.Typer(help="Get model files onto disk, verified, and see what is there.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout (progress goes to stderr).")
VariantOption = typer.Option(None, "--variant", help="Variant to use (default: each model's default_variant).")


def _orchestrator() -> Orchestrator:
    return Orchestrator(Settings.from_env())


@models_app.command("list")
def list_models(as_json: bool = JsonOption) -> None:
    """List the models: capabilities, defaults, limits, estimated VRAM and, when MODELS_ROOT is set, what is
    on disk. LoRA entries of the manifest are listed too, marked as LoRAs."""
    with reporting("wan.models.list/1", as_json):
        from wanstudio.engine.info import model_info

        orchestrator = _orchestrator()
        has_store = orchestrator.settings.models_root is not None
        models = [model_info(orchestrator, model, with_status=has_store) for model in orchestrator.manifest.models.values()]
        if as_json:
            emit_json("wan.models.list/1", {"models": models})
            return
        for model in models:
            if model["kind"] == "lora":  # an overlay: ensured like a model, applied with --lora
                can = f"LoRA for {', '.join(model['base_models'])}"
            else:
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
        model_ids = list(only or [])
        if all_models:  # every model that has the variant asked for (a LoRA entry or a model may not)
            models = orchestrator.manifest.models.values()
            model_ids = [m.id for m in models if variant is None or variant in m.variants]
            if not model_ids:
                raise ModelNotFoundError(f"no model of the manifest has a variant {variant!r}",
                                         param="variant", suggestions=["wan models list   # the variants there are"])
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


@models_app.command("gc")
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be removed."),
    max_bytes: Optional[str] = typer.Option(
        None, "--max-bytes", help="Bring the store under this size, e.g. 500G (default: WAN_QUOTA_BYTES)."
    ),
    ttl: Optional[str] = typer.Option(
        None, "--ttl", help="Remove variants unused for longer than this, e.g. 30d."
    ),
    variant: Optional[str] = typer.Option(None, "--variant", help="Consider only variants of this name."),
    as_json: bool = JsonOption,
) -> None:
    """Remove least recently used variants (past --ttl, then down to --max-bytes and the family quotas),
    unused blobs and stale leftovers. Pinned variants stay; variants in use are skipped."""
    schema = "wan.models.gc/1"
    with reporting(schema, as_json):
        from wanstudio._units import parse_duration, parse_size

        size = _parsed(parse_size, max_bytes, "--max-bytes", "--max-bytes 500G")
        seconds = _parsed(parse_duration, ttl, "--ttl", "--ttl 30d")
        report = _orchestrator().gc(dry_run=dry_run, max_bytes=size, ttl=seconds, variant=variant)
        if as_json:
            emit_json(schema, report.to_json())
        else:
            print(_describe_gc(report, no_limit=size is None and seconds is None))


def _parsed(parse: Callable[[str], T], text: str | None, param: str, example: str) -> T | None:
    """`text` parsed (None when not given), or INVALID_PARAMS naming the option."""
    try:
        return parse(text) if text is not None else None
    except ValueError as exc:
        raise InvalidParamsError(f"{param} {text!r}: {exc}", param=param, suggestions=[example]) from None


def _describe_gc(report: "GcReport", *, no_limit: bool) -> str:
    import time

    would = "would remove" if report.dry_run else "removed"
    lines = [f"{'dry run: ' if report.dry_run else ''}{would} {len(report.removed)} variant(s)"]
    for item in report.removed:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.last_used))
        size = format_bytes(item.bytes)
        lines.append(f"    {item.id} [{item.variant}]  {size}  last used {used}  ({item.reason})")
    for kept in report.kept_pinned:
        note = f", would go for {kept.would_remove_for}" if kept.would_remove_for else ""
        lines.append(f"    kept {kept.id} [{kept.variant}]: pinned{note}")
    for skipped in report.skipped:
        lines.append(f"    skipped {skipped.id} [{skipped.variant}]: {skipped.reason}")
    if report.orphan_blobs or report.leftovers:
        leftover_bytes = format_bytes(sum(x.bytes for x in report.leftovers))
        lines.append(
            f"unused blobs: {report.orphan_blobs} ({format_bytes(report.orphan_bytes)}); "
            f"stale leftovers: {len(report.leftovers)} ({leftover_bytes})"
        )
    before, after = format_bytes(report.store_bytes_before), format_bytes(report.store_bytes_after)
    reclaimed = "would reclaim" if report.dry_run else "reclaimed"
    lines.append(f"{reclaimed} {format_bytes(report.reclaimed_bytes)}; store: {before} -> {after}")
    for limit in report.limits:
        scope = "store" if limit.family is None else f"family {limit.family}"
        state = "met" if limit.met else "still over: the rest is pinned or in use"
        size = format_bytes(limit.bytes_after)
        lines.append(f"{scope} limit {format_bytes(limit.max_bytes)}: {size} ({state})")
    if no_limit and not report.limits:
        lines.append("no limit given: only unused blobs and leftovers go (use --ttl or --max-bytes, "
                     "or set WAN_QUOTA_BYTES / WAN_FAMILY_QUOTAS)")
    if report.dry_run and report.reclaimed_bytes:
        lines.append("run the same command without --dry-run to remove them")
    return "\n".join(lines)


@models_app.command("pin")
def pin(
    model_id: str = typer.Argument(..., metavar="ID", help="Model to keep."),
    variant: Optional[str] = VariantOption,
    as_json: bool = JsonOption,
) -> None:
    """Keep a variant from gc (it may be pinned before it is downloaded)."""
    _set_pin("wan.models.pin/1", model_id, variant, True, as_json)


@models_app.command("unpin")
def unpin(
    model_id: str = typer.Argument(..., metavar="ID", help="Model to release."),
    variant: Optional[str] = VariantOption,
    as_json: bool = JsonOption,
) -> None:
    """Let gc remove a variant again when it is the least recently used."""
    _set_pin("wan.models.unpin/1", model_id, variant, False, as_json)


def _set_pin(schema: str, model_id: str, variant: str | None, pinned: bool, as_json: bool) -> None:
    with reporting(schema, as_json):
        orchestrator = _orchestrator()
        was = orchestrator.status(model_id, variant).pinned
        item = orchestrator.pin(model_id, variant, pinned=pinned)
        if as_json:
            emit_json(schema, {"id": item.id, "variant": item.variant, "pinned": item.pinned,
                               "changed": was != pinned, "state": item.state, "path": str(item.path)})
            return
        note = "" if was != pinned else " (it was already pinned)" if pinned else " (it was not pinned)"
        print(f"{'pinned' if pinned else 'unpinned'} {item.id} [{item.variant}]{note}; it is {item.state}")
