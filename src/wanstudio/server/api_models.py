"""`/v1/models`: the models with capabilities, limits, per-variant defaults and local status; downloads.

These are what a job's `model` may name, so LoRA entries of the manifest (`kind = "lora"`) are not listed
here but in `GET /v1/loras`; `POST /v1/models/{id}/ensure` takes them like any model (a download).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from wanstudio.engine.info import model_info
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.errors import InvalidParamsError, ModelNotFoundError, WanError
from wanstudio.orchestrator.manifest import Model
from wanstudio.server.state import ServerState, State, require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["models"])


def model_object(state: ServerState, model: Model) -> dict[str, Any]:
    """`model_info` as an OpenAI-style model object, each variant with the defaults a request gets."""
    info = model_info(state.orchestrator, model)
    try:
        spec = spec_of(family_for(model), model)
    except WanError:
        spec = None
    for variant in info["variants"]:
        variant["defaults"] = asdict(spec.defaults_for(variant["name"])) if spec else None
    downloading = {d["variant"]: d for d in state.downloads.running() if d["model"] == model.id}
    for variant in info["variants"]:
        variant["download"] = downloading.get(variant["name"], {}).get("progress")
    device = state.queue.devices[0]
    info["fits"] = [fit.to_json() for fit in state.fits(device) if fit.model == model.id]
    return {"object": "model", "created": 0, "owned_by": "wanstudio", "aliases": [model.name], **info}


@router.get("/models")
def list_models(state: State) -> dict[str, Any]:
    models = [model for model in state.orchestrator.manifest.models.values() if not model.is_lora]
    return {"object": "list", "data": [model_object(state, model) for model in models]}


@router.get("/models/{model_id}")
def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    model = state.orchestrator.manifest.resolve(model_id)
    if model.is_lora:
        raise ModelNotFoundError(
            f"{model.id} is a LoRA (for {', '.join(model.base_models)}), not a video model",
            param="model", suggestions=["GET /v1/loras lists it", f"POST /v1/models/{model.id}/ensure downloads it"],
        )
    return model_object(state, model)


@router.post("/models/{model_id}/ensure", status_code=202)
def ensure_model(
    model_id: str, request: Request, state: State, body: dict[str, Any] | None = Body(None)
) -> JSONResponse:
    """Start downloading a variant (default: the model's default variant); progress arrives as events."""
    variant = (body or {}).get("variant")
    unknown = set(body or {}) - {"variant"}
    if unknown:
        raise InvalidParamsError(f"unknown field {sorted(unknown)[0]!r}; the body may name a variant",
                                 param=sorted(unknown)[0])
    if variant is not None and not isinstance(variant, str):
        raise InvalidParamsError("variant must be text", param="variant")
    answer = state.downloads.start(model_id, variant, request.scope["state"].get("request_id"))
    return JSONResponse(answer, status_code=200 if answer["status"] == "complete" else 202)
