"""LoRA files: what one holds, read from its safetensors header alone, and its tensors once it passed.

A LoRA is accepted only as safetensors, judged by content (never by name): a pickle (``.pt``, ``.bin``,
``.ckpt``) can run code when loaded, so it is refused before anything parses it. The header gives every
tensor's name, dtype and shape, which is enough to check the file against a model before loading it.

Key styles (all end up in diffusers' naming, ``transformer.blocks.0.attn1.to_q.lora_A.weight``):

- diffusers / peft: ``transformer.<module>.lora_A.weight`` and ``lora_B.weight`` (optionally
  ``lora_B.bias``); bare peft keys (``blocks.0...``, ``base_model.model.blocks.0...``) count as
  ``transformer``. Keys under ``transformer_2.`` are for the low-noise expert of the two-expert A14B
  models; a file may hold both experts' layers, or only ``transformer_2``'s.
- original Wan / ComfyUI (``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` with ``.alpha``) and
  kohya musubi-tuner (``lora_unet_blocks_0_self_attn_q.lora_down.weight``): converted by diffusers' own
  ``WanLoraLoaderMixin.lora_state_dict``, here on shape-only (meta) tensors so that nothing is read.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from wanstudio.config import DEFAULT_MAX_LORA_BYTES  # a rank-128 LoRA of a 14B expert is ~2 GiB: twice that
from wanstudio.errors import InvalidParamsError

if TYPE_CHECKING:
    import torch

EXPERTS = ("transformer", "transformer_2")
"""The denoisers a LoRA can target, in diffusers' naming: ``transformer`` (the only one of TI2V-5B, the
high-noise expert of the A14B models) and ``transformer_2`` (the A14B models' low-noise expert)."""

EXPERT_LABELS = {
    "transformer": "high-noise expert (transformer)",
    "transformer_2": "low-noise expert (transformer_2)",
}

_MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit on the JSON header
_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # where diffusers keeps the LoraConfig (rank, alpha, ...)
_OTHER_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "text_encoder_3", "vae", "image_encoder", "prior")
_LORA_KEY = re.compile(r"^(transformer|transformer_2)\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_B\.bias)$")
_PEFT_PREFIX = "base_model.model."
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}

# The width of the transformer blocks names the family a LoRA was trained for (in the messages only).
_HIDDEN_SIZES = {
    5120: "a 14B Wan model (T2V-A14B, I2V-A14B or Wan 2.1 14B)",
    3072: "Wan 2.2 TI2V-5B",
    1536: "Wan 2.1 1.3B",
}

V = TypeVar("V")


@dataclass(frozen=True)
class LayerShape:
    """One adapted layer: ``lora_A`` is (rank, in_features, ...), ``lora_B`` is (out_features, rank, ...)."""

    rank: int
    in_features: int
    out_features: int
    ndim: int = 2  # 2 for a linear layer; 5 for a Conv3d
    bias: bool = False


@dataclass(frozen=True)
class LoraInfo:
    """What a LoRA file holds, from its header: no tensor data was read to make it."""

    path: Path
    label: str  # how messages name it: the catalogue name, or the path as given
    size_bytes: int
    style: str  # "diffusers" | "wan" (original Wan / ComfyUI keys) | "kohya" (musubi-tuner keys)
    experts: tuple[str, ...]  # which of EXPERTS the file has layers for
    layers: Mapping[str, Mapping[str, LayerShape]]  # expert -> module path in the transformer -> shape
    rank: int  # the highest rank of its layers
    ignored: tuple[str, ...] = ()  # other components the file has layers for (text encoder, ...): not loaded
    metadata: Mapping[str, str] = field(default_factory=dict)  # the safetensors ``__metadata__``

    @property
    def low_noise_only(self) -> bool:
        """Made for the low-noise expert of a two-expert model only (its keys are all ``transformer_2.``)."""
        return self.experts == ("transformer_2",)

    @property
    def hidden_size(self) -> int | None:
        """The width of the blocks it adapts (from a self-attention query layer), when it adapts one."""
        for layers in self.layers.values():
            for module, shape in layers.items():
                if module.endswith("attn1.to_q"):
                    return shape.in_features
        return None

    @property
    def made_for(self) -> str | None:
        """The model family its block width points to, in words (None when the width is not a known one)."""
        return _HIDDEN_SIZES.get(self.hidden_size or 0)

    def describe_experts(self) -> str:
        if self.experts == ("transformer",):
            return "the transformer (on a two-expert A14B model: both experts)"
        if self.low_noise_only:
            return "the low-noise expert only (transformer_2)"
        return "both experts, each with its own layers (transformer and transformer_2)"

    def adapter_config(self, expert: str) -> dict[str, Any] | None:
        """diffusers' stored LoraConfig for `expert` (rank, alpha, ...) under the ``transformer.`` prefix that
        diffusers' loader reads, or None when the file carries none (then alpha = rank)."""
        raw = self.metadata.get(_ADAPTER_METADATA_KEY)
        if not raw:
            return None
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        prefix = f"{expert}."
        found = {f"transformer.{k[len(prefix):]}": v for k, v in document.items() if k.startswith(prefix)}
        return found or None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "style": self.style,
            "rank": self.rank,
            "experts": list(self.experts),
            "layers": {expert: len(layers) for expert, layers in self.layers.items()},
            "hidden_size": self.hidden_size,
            "made_for": self.made_for,
            "ignored_components": list(self.ignored),
        }


def inspect_lora(
    path: Path | str, *, max_bytes: int | None = DEFAULT_MAX_LORA_BYTES, label: str | None = None
) -> LoraInfo:
    """Read and check a LoRA file's header; INVALID_PARAMS (param ``lora``) naming the file when it is not a
    safetensors LoRA for a Wan transformer, or is larger than `max_bytes`."""
    path = Path(path)
    label = label or str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise _invalid(label, "is not a file")
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise _invalid(label, f"cannot be read ({exc.strerror or exc})") from exc
    if max_bytes is not None and size > max_bytes:
        raise InvalidParamsError(
            f"LoRA {label} is {size} bytes, over the limit of {max_bytes} bytes",
            param="lora",
            suggestions=["use a LoRA of a lower rank, or one saved in 16-bit (bfloat16) precision"],
        )
    _check_container(head, size, label)
    keys, metadata = _read_header(path, label)
    state = _shape_tensors(path, keys)
    style = _style(state)
    parts, ignored = _transformer_parts(_to_diffusers(state, style, label))
    if not parts:
        what = f"layers for {', '.join(ignored)}" if ignored else "no layers"
        raise _invalid(label, f"has {what} and none for a Wan transformer: it is a LoRA for another kind of model")
    layers = {expert: _layers(part, label) for expert, part in parts.items()}
    return LoraInfo(
        path=path,
        label=label,
        size_bytes=size,
        style=style,
        experts=tuple(e for e in EXPERTS if e in layers),
        layers=layers,
        rank=max(shape.rank for part in layers.values() for shape in part.values()),
        ignored=tuple(ignored),
        metadata=metadata,
    )


def read_lora_tensors(info: LoraInfo) -> dict[str, dict[str, "torch.Tensor"]]:
    """The file's tensors, per expert, keyed ``transformer.<module>.lora_*`` as diffusers' loader expects them.

    The file is read again with safetensors (never pickle); a file that changed since `info` was made (other
    layers, other shapes) is refused.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(info.path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError: the file changed or broke since its header was read
        raise _invalid(info.label, f"could not be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    parts, _ignored = _transformer_parts(_to_diffusers(state, _style(state), info.label))
    if {expert: _layers(part, info.label) for expert, part in parts.items()} != info.layers:
        raise _invalid(info.label, "changed while it was being loaded")
    return parts


# -- the container ------------------------------------------------------------------------------------------


def _check_container(head: bytes, size: int, label: str) -> None:
    """Refuse what is not safetensors by its first bytes, naming the format when it is a known one."""
    if head.startswith(b"PK\x03\x04"):
        raise _not_safetensors(label, "a ZIP archive (a PyTorch checkpoint saved by torch.save: pickled)")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise _not_safetensors(label, "a Python pickle")
    if size < 10 or len(head) < 9:
        raise _not_safetensors(label, "too short to be a safetensors file")
    (header_bytes,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_bytes <= min(size - 8, _MAX_HEADER_BYTES) or head[8:9] != b"{":
        raise _not_safetensors(label, "not a safetensors file (no safetensors header at its start)")


def _read_header(path: Path, label: str) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """Tensor names with (shape, dtype), and the metadata; safetensors validates the header as it opens it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                keys[key] = (tuple(int(n) for n in piece.get_shape()), str(piece.get_dtype()))
    except Exception as exc:  # SafetensorError for a bad header or offsets; OSError
        raise _not_safetensors(label, f"a damaged safetensors file ({str(exc)[:200]})") from exc
    if not keys:
        raise _invalid(label, "holds no tensors")
    return keys, metadata


def _shape_tensors(path: Path, keys: Mapping[str, tuple[tuple[int, ...], str]]) -> dict[str, "torch.Tensor"]:
    """Shape-only (meta) tensors for every key, so diffusers' converters run without reading the weights;
    the one-number ``alpha`` tensors, which the converters read, are real."""
    import torch
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key, (shape, dtype) in keys.items():
            if key.endswith(".alpha") and len(shape) <= 1 and (not shape or shape[0] == 1):
                state[key] = handle.get_tensor(key)
            else:
                torch_dtype = getattr(torch, _TORCH_DTYPES.get(dtype, "float32"))
                state[key] = torch.empty(shape, dtype=torch_dtype, device="meta")
    return state


# -- keys -------------------------------------------------------------------------------------------------


def _style(state: Mapping[str, Any]) -> str:
    # The same tests diffusers' WanLoraLoaderMixin.lora_state_dict makes to pick a converter.
    if any(k.startswith("diffusion_model.") for k in state):
        return "wan"
    if any(k.startswith("lora_unet_") for k in state):
        return "kohya"
    return "diffusers"


def _to_diffusers(state: dict[str, V], style: str, label: str) -> dict[str, V]:
    """Keys in diffusers' naming, through diffusers' own converter (which also drops DoRA scales)."""
    from diffusers.loaders import WanLoraLoaderMixin

    odd = [k for k in state if ".lokr_" in k or ".hada_" in k or ".oft_" in k]
    if odd:
        raise _invalid(label, f"is a LyCORIS adapter (LoKr, LoHa or OFT; e.g. {odd[0]}); only LoRA is supported")
    if style == "diffusers":
        state = {(k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k): v for k, v in state.items()}
    try:
        converted = WanLoraLoaderMixin.lora_state_dict(dict(state))
    except Exception as exc:  # the converters raise KeyError / ValueError on a key set they do not know
        raise _invalid(
            label, f"has {style}-style keys that diffusers cannot convert ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return dict(converted)


def _transformer_parts(state: Mapping[str, V]) -> tuple[dict[str, dict[str, V]], list[str]]:
    """Split keys by expert, each part keyed ``transformer.<rest>`` (the prefix diffusers' loader filters on);
    keys of other components are left out and named. Keys with no component prefix are the transformer's."""
    parts: dict[str, dict[str, V]] = {}
    ignored: list[str] = []
    for key, value in state.items():
        first, _, rest = key.partition(".")
        if first in EXPERTS and rest:
            parts.setdefault(first, {})[f"transformer.{rest}"] = value
        elif first in _OTHER_COMPONENTS:
            if first not in ignored:
                ignored.append(first)
        else:
            parts.setdefault("transformer", {})[f"transformer.{key}"] = value
    return parts, ignored


def _layers(part: Mapping[str, Any], label: str) -> dict[str, LayerShape]:
    """Pair every layer's ``lora_A`` and ``lora_B`` and check that their shapes agree."""
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    strangers = []
    for key, tensor in part.items():
        match = _LORA_KEY.match(key)
        if match is None:
            strangers.append(key.removeprefix("transformer."))
            continue
        found.setdefault(match.group(2), {})[match.group(3)] = tuple(tensor.shape)
    if strangers:
        raise _invalid(
            label,
            f"is not a LoRA: {len(strangers)} of its {len(part)} tensors are not LoRA weights "
            f"(e.g. {', '.join(strangers[:3])}); a LoRA has lora_A/lora_B (or lora_down/lora_up) pairs",
        )
    layers = {}
    for module, pieces in sorted(found.items()):
        a, b = pieces.get("lora_A.weight"), pieces.get("lora_B.weight")
        if a is None or b is None:
            raise _invalid(label, f"has an unpaired layer {module}: it needs both lora_A and lora_B")
        if len(a) < 2 or len(a) != len(b) or a[0] != b[1] or a[0] < 1:
            raise _invalid(label, f"has inconsistent shapes for {module}: lora_A {list(a)}, lora_B {list(b)}")
        bias = pieces.get("lora_B.bias")
        if bias is not None and bias != (b[0],):
            raise _invalid(label, f"has a lora_B bias of shape {list(bias)} for {module}, which has {b[0]} outputs")
        layers[module] = LayerShape(a[0], in_features=a[1], out_features=b[0], ndim=len(a), bias=bias is not None)
    return layers


# -- errors -----------------------------------------------------------------------------------------------


def _invalid(label: str, what: str) -> InvalidParamsError:
    return InvalidParamsError(
        f"LoRA {label} {what}",
        param="lora",
        suggestions=["use a LoRA made for Wan (2.1 or 2.2) in safetensors format (.safetensors)"],
    )


def _not_safetensors(label: str, found: str) -> InvalidParamsError:
    return InvalidParamsError(
        f"LoRA {label} is {found}; only safetensors LoRA files are accepted (pickled checkpoints can run code "
        "when loaded, so they are never opened)",
        param="lora",
        suggestions=[
            "get the .safetensors version of the LoRA",
            "or convert a file you trust: python -c \"import torch, safetensors.torch as s; "
            "s.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')\"",
        ],
    )
