"""`wan models ...`: list, ensure, status and check the models of the manifest."""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import typer

from wanstudio._units import format_bytes
from wanstudio.cli._output import EXIT_INCOMPLETE, emit_json, reporting
from wanstudio.cli._progress import download_progress
from wanstudio.config import Settings
from wanstudio.errors import InvalidParamsError
from wanstudio.orchestrator.manifest import Model
from wanstudio.orchestrator.orchestrator import EnsureResult, Orchestrator
from wanstudio.orchestrator.status import VariantStatus

models_app = typer.Typer(help="Get model files onto disk, verified, and see what is there.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout (progress goes to stderr).")
VariantOption = typer.Option(None, "--variant", help="Variant to use (default: each model's default_variant).")


def _orchestrator() -> Orchestrator:
    return Orchestrator(Settings.from_env())


@models_app.command("list")
def list_models(as_json: bool = JsonOption) -> None:
    """List the models of the manifest, their variants and, when MODELS_ROOT is set, what is on disk."""
    with reporting("wan.models.list/1", as_json):
        orchestrator = _orchestrator()
        has_store = orchestrator.settings.models_root is not None
        models = [_model_json(orchestrator, model, has_store) for model in orchestrator.manifest.models.values()]
        if as_json:
            emit_json("wan.models.list/1", {"models": models})
            return
        for model in models:
            print(f"{model['id']}  ({model['task']}, {model['family']})  {model['description']}")
            for variant in model["variants"]:
                size = format_bytes(variant["bytes"]) if variant["bytes"] is not None else "size from the Hub"
                default = " (default)" if variant["name"] == model["default_variant"] else ""
                state = f"  [{variant['state']}]" if variant["state"] else ""
                print(f"    {variant['name']}{default}: {size}{state}")


def _model_json(orchestrator: Orchestrator, model: Model, has_store: bool) -> dict[str, Any]:
    variants = []
    for variant in model.variants.values():
        state = orchestrator.status(model.id, variant.name).state if has_store else None
        variants.append(
            {
                "name": variant.name,
                "dtype": variant.dtype,
                "file_list": "manifest" if variant.lists_files else "hub",
                "files": len(variant.files) if variant.lists_files else None,
                "bytes": variant.total_bytes if variant.lists_files else None,
                "components": list(variant.components),
                "state": state,
            }
        )
    return {
        "id": model.id,
        "name": model.name,
        "version": model.version,
        "family": model.family,
        "task": model.task,
        "description": model.description,
        "default_variant": model.default_variant,
        "optional_components": list(model.optional_components),
        "hf": {"repo": model.hf.repo, "revision": model.hf.revision} if model.hf else None,
        "variants": variants,
    }


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

