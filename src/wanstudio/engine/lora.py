"""LoRA for the Wan pipelines: the catalogue, file checks, and applying LoRAs to one job only.

A LoRA (low-rank adapter) changes a model's style or subject without a new model: small matrices added
to the transformer's linear layers. What this package of modules adds around diffusers' own machinery
(``WanLoraLoaderMixin``, backed by peft), and why:

- **Requests** (``_lora_requests``): ``LoraRequest(name, weight, weight_2)``; the CLI form
  ``NAME_OR_PATH[:WEIGHT[:WEIGHT_2]]`` (``parse_lora_arg``) and the API form ``[{"name", "weight",
  "weight_2"}]`` (``lora_requests_from_json``: catalogue names only, a remote client never names a path
  on the server). Weights are in [-4, 4]; at most 8 LoRAs a job.
- **The catalogue** (``_lora_catalog``): ``{MODELS_ROOT}/loras/<name>.safetensors``, names that cannot
  leave the folder, and ``install_lora`` to add a checked file by rename; and the manifest's LoRA entries
  (``kind = "lora"``), named by id, looked up when a job is validated and ensured (downloaded, verified,
  counted as a use for gc) when it is applied.
- **File checks before loading** (``_lora_file``): safetensors only, judged by content (a pickle can run
  code), a size limit, LoRA keys only, paired and consistent shapes; all from the header. Original-Wan /
  ComfyUI and kohya (musubi-tuner) keys go through diffusers' own converters.
- **Fit before loading** (``_lora_fit``): every layer the LoRA adapts must exist in the pipeline's
  transformer(s) with the same in/out features, so a LoRA for another model is refused with a reason
  instead of being half-applied (diffusers only logs the layers it could not place).
- **Two experts** (T2V-A14B, I2V-A14B): ``transformer`` is the high-noise expert, ``transformer_2`` the
  low-noise one. A file with plain ``transformer`` layers goes into both (``weight`` for the high-noise
  expert, ``weight_2`` for the low-noise one, defaulting to ``weight``); a file with ``transformer_2.``
  layers only is a low-noise LoRA; a file with both gives each expert its own layers. An expert whose
  weight is 0 gets nothing loaded (no memory, no compute).
- **One job only** (here): ``apply_loras`` loads each LoRA as its own adapter and ``unload_loras`` removes
  every adapter layer, leaving the cached pipeline exactly as loaded (the next job's frames are
  bit-identical to a pipeline that never saw a LoRA). ``loras_applied`` pairs the two around a job. A LoRA
  that cannot be found, read or fitted is skipped with a warning naming it and why; the job goes on.
- **Lean memory profiles**: on float8-stored layers (diffusers' layerwise casting) the LoRA keeps the
  compute dtype, since peft would store it in float8 where no matmul takes it; group offloading is
  re-applied after each change, as diffusers' loader does. On torchao int8 layers (``int8_model_offload``)
  peft wraps the layer with its own torchao LoRA layer, and the LoRA is in the compute dtype already.

The pipeline must be used by one job at a time while LoRAs are on it (the engine's cache entry lock).
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from wanstudio.config import Settings
from wanstudio.engine._lora_catalog import (
    LORA_SUFFIX,
    CatalogEntry,
    check_lora_name,
    find_lora,
    install_lora,
    is_lora_path,
    list_loras,
    lora_dir,
    lora_file_path,
    manifest_lora,
)
from wanstudio.engine._lora_file import (
    DEFAULT_MAX_LORA_BYTES,
    EXPERTS,
    LayerShape,
    LoraInfo,
    inspect_lora,
    read_lora_tensors,
)
from wanstudio.engine._lora_fit import (
    LoraIncompatibleError,
    check_compatible,
    check_layers,
    lora_pipeline,
    model_label,
    plan_experts,
)
from wanstudio.engine._lora_requests import (
    MAX_LORAS,
    MAX_WEIGHT,
    LoraRequest,
    check_lora_requests,
    lora_requests_from_json,
    parse_lora_arg,
)
from wanstudio.errors import WanError

if TYPE_CHECKING:
    from wanstudio.orchestrator.orchestrator import Orchestrator

__all__ = [
    "DEFAULT_MAX_LORA_BYTES",
    "EXPERTS",
    "LORA_SUFFIX",
    "MAX_LORAS",
    "MAX_WEIGHT",
    "AppliedLora",
    "CatalogEntry",
    "LayerShape",
    "LoraIncompatibleError",
    "LoraInfo",
    "LoraOutcome",
    "LoraRequest",
    "apply_loras",
    "check_compatible",
    "check_lora_name",
    "check_lora_requests",
    "find_lora",
    "inspect_lora",
    "install_lora",
    "list_loras",
    "lora_dir",
    "lora_file_path",
    "lora_requests_from_json",
    "loras_applied",
    "manifest_lora",
    "parse_lora_arg",
    "unload_loras",
]

log = logging.getLogger("wanstudio.engine")

_ADAPTER_PREFIX = "wanstudio_lora_"


# -- applying -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA on the pipeline for this job: its weight on each transformer it went into."""

    name: str
    path: str
    rank: int
    style: str
    weights: dict[str, float]  # expert -> weight

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "rank": self.rank,
            "style": self.style,
            "weights": dict(self.weights),
        }


@dataclass
class LoraOutcome:
    """What ``apply_loras`` did: the LoRAs now on the pipeline, and a warning per LoRA skipped or trimmed."""

    applied: list[AppliedLora] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        return [lora.to_json() for lora in self.applied]


def apply_loras(
    pipeline: Any,
    requests: Sequence[LoraRequest],
    settings: Settings,
    *,
    model: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_LORA_BYTES,
    orchestrator: Orchestrator | None = None,
) -> LoraOutcome:
    """Load each LoRA as its own adapter and set the weights; skip (with a warning) each one that cannot be
    found, read or fitted. `pipeline` is a diffusers Wan pipeline, or an object holding one as ``.pipeline``
    (the wan family's loaded model); `model` names it in warnings. A manifest LoRA is ensured first through
    `orchestrator` (default: one for `settings`); one that cannot be obtained is skipped like the others.
    Call ``unload_loras`` after the job. Any LoRA left on the pipeline by an earlier job (one that crashed
    before unloading) is removed first."""
    outcome = LoraOutcome()
    if not requests:
        return outcome
    try:
        pipeline = lora_pipeline(pipeline)
    except LoraIncompatibleError as exc:
        outcome.warnings.append(f"LoRAs skipped: {exc.reason}")
        return outcome
    model = model or model_label(pipeline)
    unload_loras(pipeline)
    active: dict[str, list[tuple[str, float]]] = {}
    for index, request in enumerate(requests):
        adapter = f"{_ADAPTER_PREFIX}{index}"
        try:
            applied, notes = _apply_one(pipeline, request, adapter, settings, model, max_bytes, orchestrator)
        except WanError as exc:
            outcome.warnings.append(f"LoRA {request.name!r} skipped: {_reason(exc.message, request.name)}")
            continue
        except Exception as exc:  # what diffusers or peft raise while injecting: the LoRA goes, the job stays
            log.debug("LoRA %s failed to load", request.name, exc_info=True)
            _remove_adapter(pipeline, adapter)
            failure = f"{type(exc).__name__}: {str(exc)[:300]}"
            outcome.warnings.append(f"LoRA {request.name!r} skipped: it failed to load into {model} ({failure})")
            continue
        outcome.warnings.extend(notes)
        if applied is not None:
            outcome.applied.append(applied)
            for expert, weight in applied.weights.items():
                active.setdefault(expert, []).append((adapter, weight))
    for expert, adapters in active.items():
        getattr(pipeline, expert).set_adapters([a for a, _ in adapters], [w for _, w in adapters])
    for lora in outcome.applied:
        weights = ", ".join(f"{expert} x{weight:g}" for expert, weight in lora.weights.items())
        log.info("LoRA %s on %s: %s", lora.name, model, weights)
    for warning in outcome.warnings:
        log.warning("%s", warning)
    return outcome


def unload_loras(pipeline: Any) -> None:
    """Remove every LoRA layer from the pipeline's transformers: the modules are the pipeline's own again."""
    try:
        pipeline = lora_pipeline(pipeline)
    except LoraIncompatibleError:  # a pipeline that takes no LoRA has none to remove
        return
    for expert in EXPERTS:
        transformer = getattr(pipeline, expert, None)
        if transformer is None:
            continue
        if getattr(transformer, "peft_config", None) or _has_lora_layers(transformer):
            transformer.unload_lora()


@contextmanager
def loras_applied(
    pipeline: Any,
    requests: Sequence[LoraRequest],
    settings: Settings,
    *,
    model: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_LORA_BYTES,
    orchestrator: Orchestrator | None = None,
) -> Iterator[LoraOutcome]:
    """``apply_loras`` for the body of the ``with``, then ``unload_loras`` however the body ends (cancelled,
    failed): a LoRA never outlives its job. Without requests it touches nothing."""
    if not requests:
        yield LoraOutcome()
        return
    try:
        yield apply_loras(pipeline, requests, settings, model=model, max_bytes=max_bytes, orchestrator=orchestrator)
    finally:
        unload_loras(pipeline)


def _apply_one(
    pipeline: Any, request: LoraRequest, adapter: str, settings: Settings, model: str, max_bytes: int | None,
    orchestrator: Orchestrator | None = None,
) -> tuple[AppliedLora | None, list[str]]:
    """Find (a manifest LoRA: ensure), inspect, fit and load one LoRA as `adapter`; raises (WanError or the
    loader's error) to skip it."""
    path = find_lora(request.name, settings, fetch=True, orchestrator=orchestrator)
    label = request.name if not is_lora_path(request.name) else str(path)
    info = inspect_lora(path, max_bytes=max_bytes, label=label)
    plan, notes = plan_experts(pipeline, info, request, model)
    if info.ignored:
        others = ", ".join(info.ignored)
        notes.append(f"LoRA {label}: its layers for {others} are not used (only the transformer takes LoRAs)")
    if not plan:
        log.info("LoRA %s has weight 0 on every transformer: not loaded", label)
        return None, notes
    for target, (source, _weight) in plan.items():
        check_layers(pipeline, info, source, target, model)
    parts = read_lora_tensors(info)
    for target, (source, _weight) in plan.items():
        with warnings.catch_warnings():
            # peft warns that a second adapter makes "multiple adapters in the model": that is the point here.
            warnings.filterwarnings("ignore", message=".*multiple adapters.*", category=UserWarning)
            # diffusers' loader for one transformer: the file's part for it, and its stored LoraConfig (alpha).
            pipeline.load_lora_into_transformer(
                dict(parts[source]),
                transformer=getattr(pipeline, target),
                adapter_name=adapter,
                metadata=info.adapter_config(source),
                _pipeline=pipeline,
            )
        _lift_float8_adapter(getattr(pipeline, target), adapter, parts[source])
    weights = {target: weight for target, (_source, weight) in plan.items()}
    return AppliedLora(label, str(path), info.rank, info.style, weights), notes


def _lift_float8_adapter(transformer: Any, adapter: str, part: dict[str, Any]) -> None:
    """Give an adapter on float8-stored layers the compute dtype back, with the file's exact values.

    peft stores an adapter in its base layer's dtype. Under diffusers' layerwise casting (the fp8 memory
    profiles) the base weights are stored in float8 and cast up only while their layer runs, so the LoRA
    matrices would become float8 with nothing to cast them up: no matmul takes them. A LoRA is small, so it
    stays in the compute dtype instead; group offloading, which keeps references to the parameters it
    moves, is then re-applied, as diffusers' own loader does after changing a model's layers.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    lifted = False
    for name, module in transformer.named_modules():
        pieces = [getattr(module, piece, None) for piece in ("lora_A", "lora_B")]
        if not isinstance(module, BaseTunerLayer) or any(p is None or adapter not in p for p in pieces):
            continue
        if pieces[0][adapter].weight.element_size() > 1:
            continue
        dtype = _compute_dtype(module.get_base_layer())
        for piece_name, piece in zip(("lora_A", "lora_B"), pieces):
            layer = piece[adapter].to(dtype=dtype)
            with torch.no_grad():
                for kind in ("weight", "bias"):
                    value = part.get(f"transformer.{name}.{piece_name}.{kind}")
                    if value is not None and getattr(layer, kind, None) is not None:
                        getattr(layer, kind).copy_(value)
        lifted = True
    if lifted:
        try:
            from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading
        except ImportError:  # an older diffusers: its loader re-applied group offloading itself, before the lift
            return
        _maybe_remove_and_reapply_group_offloading(transformer)


def _compute_dtype(layer: Any) -> Any:
    """The dtype a float8-stored layer computes in: its layerwise-casting hook's, else bfloat16."""
    import torch

    registry = getattr(layer, "_diffusers_hook", None)
    hook = registry.get_hook("layerwise_casting") if registry is not None else None
    return getattr(hook, "compute_dtype", None) or torch.bfloat16


def _reason(message: str, name: str) -> str:
    """An error's message without its leading "LoRA <name> " (the warning names the LoRA already)."""
    for label in (name, str(Path(name).expanduser().absolute())):
        if message.startswith(f"LoRA {label} "):
            return message[len(f"LoRA {label} "):]
    return message


def _remove_adapter(pipeline: Any, adapter: str) -> None:
    """Take a half-loaded adapter off every transformer it reached (the job's other LoRAs stay)."""
    for expert in EXPERTS:
        transformer = getattr(pipeline, expert, None)
        if transformer is not None and adapter in (getattr(transformer, "peft_config", None) or {}):
            try:
                transformer.delete_adapters(adapter)
            except Exception:  # its layers go at unload_loras anyway
                log.debug("could not delete adapter %s from %s", adapter, expert, exc_info=True)


def _has_lora_layers(transformer: Any) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    return any(isinstance(module, BaseTunerLayer) for module in transformer.modules())
