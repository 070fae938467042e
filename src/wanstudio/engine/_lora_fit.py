"""Whether a LoRA fits a loaded pipeline, and where each of its parts goes: checked before loading anything.

diffusers loads what it can place and only logs the rest, so a LoRA for another model would be half-applied
(or fail deep inside peft). Here every layer the file adapts must exist in the target transformer with the
same in/out features, or the LoRA is refused with the layer, both shapes and, from the block width, the
model it looks made for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from wanstudio.engine._lora_file import EXPERT_LABELS, LoraInfo
from wanstudio.engine._lora_requests import LoraRequest
from wanstudio.errors import InvalidParamsError


class LoraIncompatibleError(InvalidParamsError):
    """A valid LoRA file that does not fit the loaded model (INVALID_PARAMS, param ``lora``)."""

    def __init__(self, lora: str, model: str, reason: str, *, suggestions: Sequence[str] = ()) -> None:
        super().__init__(
            f"LoRA {lora} does not fit {model}: {reason}",
            param="lora",
            suggestions=list(suggestions) or [f"use a LoRA made for {model}"],
        )
        self.lora = lora
        self.reason = reason


def check_compatible(
    pipeline: Any, info: LoraInfo, request: LoraRequest | None = None, *, model: str | None = None
) -> None:
    """Raise LoraIncompatibleError unless every layer `info` adapts (in every expert it would go into with
    `request`'s weights) exists in the pipeline's transformer(s) with the same in/out features."""
    pipeline = lora_pipeline(pipeline)
    model = model or model_label(pipeline)
    plan, _notes = plan_experts(pipeline, info, request or LoraRequest(info.label), model)
    for target, (source, _weight) in plan.items():
        check_layers(pipeline, info, source, target, model)


def has_two_experts(pipeline: Any) -> bool:
    return getattr(pipeline, "transformer_2", None) is not None


def plan_experts(
    pipeline: Any, info: LoraInfo, request: LoraRequest, model: str
) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """Which of the file's parts goes into which transformer with which weight: {target: (source, weight)};
    experts whose weight is 0 are left out. Also notes for the user (ignored weights or parts)."""
    notes: list[str] = []
    if has_two_experts(pipeline):
        if info.experts == ("transformer",):  # a plain LoRA: both experts, each with its own weight
            wanted = {"transformer": "transformer", "transformer_2": "transformer"}
        else:
            wanted = {expert: expert for expert in info.experts}
    else:
        if info.low_noise_only:
            raise LoraIncompatibleError(
                info.label, model,
                "it only has layers for the low-noise expert (transformer_2) of a two-expert A14B model, and "
                f"{model} has a single transformer",
                suggestions=["use it with t2v-A14B or i2v-A14B", f"or use a LoRA made for {model}"],
            )
        wanted = {"transformer": "transformer"}
        if "transformer_2" in info.experts:
            notes.append(
                f"LoRA {info.label}: its low-noise expert (transformer_2) layers are not used: {model} has one "
                "transformer"
            )
        if request.weight_2 is not None:
            notes.append(f"LoRA {info.label}: weight_2 is ignored: {model} has one transformer (weight applies)")
    plan = {}
    for target, source in wanted.items():
        weight = request.weight_for(target)
        if weight != 0.0:
            plan[target] = (source, weight)
    return plan, notes


def check_layers(pipeline: Any, info: LoraInfo, source: str, target: str, model: str) -> None:
    """LoraIncompatibleError unless the file's `source` layers all exist in the pipeline's `target` transformer
    with the same in/out features."""
    import torch

    transformer = getattr(pipeline, target)
    missing, mismatched = [], []
    for module_name, shape in info.layers[source].items():
        try:
            module = transformer.get_submodule(module_name)
        except AttributeError:
            missing.append(module_name)
            continue
        module = getattr(module, "base_layer", module)  # a layer another adapter of this job already wraps
        if isinstance(module, torch.nn.Linear) and shape.ndim == 2:
            expected = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv3d) and shape.ndim == 5:
            expected = (module.in_channels, module.out_channels)
        else:
            kind = type(module).__name__
            mismatched.append(f"{module_name} is a {kind}, the LoRA has a {shape.ndim}-D layer for it")
            continue
        if (shape.in_features, shape.out_features) != expected:
            mismatched.append(
                f"{module_name} maps {expected[0]} -> {expected[1]} features here, "
                f"the LoRA {shape.in_features} -> {shape.out_features}"
            )
    where = EXPERT_LABELS[target] if has_two_experts(pipeline) else "transformer"
    total = len(info.layers[source])
    guess = f" (it looks made for {info.made_for})" if info.made_for else ""
    if missing:
        examples = ", ".join(missing[:3])
        reason = f"{len(missing)} of its {total} layers do not exist in the {where} (e.g. {examples}){guess}"
        raise LoraIncompatibleError(info.label, model, reason)
    if mismatched:
        examples = "; ".join(mismatched[:2])
        reason = f"{len(mismatched)} of its {total} layers have other shapes than the {where}: {examples}{guess}"
        raise LoraIncompatibleError(info.label, model, reason)


def lora_pipeline(obj: Any) -> Any:
    for candidate in (obj, getattr(obj, "pipeline", None)):
        if hasattr(candidate, "load_lora_into_transformer") and hasattr(candidate, "transformer"):
            return candidate
    kind = type(obj).__name__
    raise LoraIncompatibleError("(any)", kind, f"the {kind} pipeline does not take LoRAs (no diffusers LoRA loader)")


def model_label(pipeline: Any) -> str:
    """A name for the model in messages: its folder as ``<model_id> [<variant>]`` when it is in the store."""
    source = getattr(getattr(pipeline, "config", None), "_name_or_path", None)
    if source:
        folder = Path(str(source))
        return f"{folder.parent.name} [{folder.name}]"
    return type(pipeline).__name__
