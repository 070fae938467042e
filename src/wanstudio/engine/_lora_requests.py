"""LoRA requests: which LoRAs a job wants and with which weights, from the CLI or the API, validated.

The CLI form is ``NAME_OR_PATH[:WEIGHT[:WEIGHT_2]]`` (``--lora``, repeatable); the API form is
``loras: [{"name": ..., "weight": ..., "weight_2": ...}]`` and takes catalogue names only, so that a remote
client can never make the server open a file of its choosing. Every bad value is INVALID_PARAMS naming
the parameter, the range and the nearest valid value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from wanstudio.engine._lora_catalog import LORA_SUFFIX, check_lora_name, is_lora_path
from wanstudio.errors import InvalidParamsError

MAX_LORAS = 8  # per job: each one adds its matrices to the compute of every layer it adapts
MAX_WEIGHT = 4.0  # |weight|: past this a LoRA only breaks the picture
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NUMBER_ATTEMPT = re.compile(r"^[\s+\-.\deE]*$")  # what a mistyped weight looks like (not a path's tail)
_EXAMPLE = '[{"name": "my_style", "weight": 0.8}]'


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA for one job: a catalogue name (or, from the CLI, a file path) and its weights.

    `weight` scales the LoRA on the transformer (on the A14B models, the high-noise expert); `weight_2` on the
    low-noise expert of the two-expert models (None: the same as `weight`); it is ignored on one-transformer
    models. Weight 0 on an expert loads nothing there.
    """

    name: str
    weight: float = 1.0
    weight_2: float | None = None

    def weight_for(self, expert: str) -> float:
        if expert == "transformer_2" and self.weight_2 is not None:
            return self.weight_2
        return self.weight

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "weight_2": self.weight_2}


def parse_lora_arg(text: str) -> LoraRequest:
    """The CLI form ``NAME_OR_PATH[:WEIGHT[:WEIGHT_2]]``: ``style``, ``style:0.8``, ``style:1:0.5``,
    ``./my.safetensors:0.7``. A path has a folder separator (or starts with ``~``); anything else is a
    catalogue name. INVALID_PARAMS (param ``lora``) on bad text or a weight out of range."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidParamsError("--lora needs a LoRA name or path, e.g. --lora my_style:0.8", param="lora")
    head, weights = text.strip(), []
    while len(weights) < 2:
        rest, sep, tail = head.rpartition(":")
        if not sep or not rest or not _NUMBER.match(tail.strip()):
            if sep and rest and _NUMBER_ATTEMPT.match(tail):
                raise InvalidParamsError(
                    f"--lora {text!r}: {tail!r} is not a number; write NAME_OR_PATH[:WEIGHT[:WEIGHT_2]], "
                    f"e.g. {rest}:0.8",
                    param="lora",
                )
            break
        weights.insert(0, float(tail))
        head = rest
    if not is_lora_path(head):
        check_lora_name(head)
    weight = weights[0] if weights else 1.0
    weight_2 = weights[1] if len(weights) > 1 else None
    return _request(head, weight, weight_2, "lora")


def lora_requests_from_json(value: Any, *, param: str = "loras") -> tuple[LoraRequest, ...]:
    """The API form ``[{"name": ..., "weight": 1.0, "weight_2": null}]`` (a bare name string is accepted too):
    catalogue names only, at most MAX_LORAS, no LoRA twice. INVALID_PARAMS naming `param`."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidParamsError(f"{param} must be a list like {_EXAMPLE}", param=param)
    requests = []
    for index, item in enumerate(value):
        where = f"{param}[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise InvalidParamsError(f"{where} must be an object like {_EXAMPLE[1:-1]}", param=param)
        unknown = sorted(set(item) - {"name", "weight", "weight_2"})
        if unknown:
            raise InvalidParamsError(
                f"{where} has unknown field(s) {', '.join(unknown)}; allowed: name, weight, weight_2", param=param
            )
        name = item.get("name")
        if not isinstance(name, str) or is_lora_path(name):
            raise InvalidParamsError(
                f"{where}.name must be the name of a LoRA in the catalogue (not a path)", param=param
            )
        weight = 1.0 if item.get("weight") is None else item.get("weight")
        stem = check_lora_name(name, param=param)
        requests.append(_request(stem, weight, item.get("weight_2"), param, where))
    return check_lora_requests(requests, param=param)


def check_lora_requests(requests: Iterable[LoraRequest], *, param: str = "loras") -> tuple[LoraRequest, ...]:
    """At most MAX_LORAS, no LoRA twice, weights in range; INVALID_PARAMS otherwise."""
    requests = tuple(requests)
    if len(requests) > MAX_LORAS:
        raise InvalidParamsError(
            f"{len(requests)} LoRAs asked; at most {MAX_LORAS} can be applied to one job",
            param=param,
            suggestions=[f"keep the {MAX_LORAS} that matter most"],
        )
    seen: set[str] = set()
    for request in requests:
        _request(request.name, request.weight, request.weight_2, param)
        key = request.name[: -len(LORA_SUFFIX)] if request.name.lower().endswith(LORA_SUFFIX) else request.name
        if key in seen:
            raise InvalidParamsError(
                f"LoRA {request.name!r} is asked twice; give it once with the sum of the weights", param=param
            )
        seen.add(key)
    return requests


def _request(name: str, weight: Any, weight_2: Any, param: str, where: str | None = None) -> LoraRequest:
    where = where or f"LoRA {name!r}"
    low = None if weight_2 is None else _weight(weight_2, "weight_2", where, param)
    return LoraRequest(name, _weight(weight, "weight", where, param), low)


def _weight(value: Any, label: str, where: str, param: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidParamsError(
            f"{where}: {label} must be a number between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}", param=param
        )
    if abs(value) > MAX_WEIGHT:
        raise InvalidParamsError(
            f"{where}: {label} {value:g} is out of range: allowed {-MAX_WEIGHT:g} to {MAX_WEIGHT:g}; "
            f"nearest valid value: {math.copysign(MAX_WEIGHT, value):g}",
            param=param,
        )
    return float(value)
