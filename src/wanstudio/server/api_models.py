"""`/v1/models`: the models with capabilities, limits, per-variant defaults and local status; downloads."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from wanstudio.engine.info import model_info
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.errors import InvalidParamsError, WanError
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
    models = state.orchestrator.manifest.models.values()
    return {"object": "list", "data": [model_object(state, model) for model in models]}


@router.get("/models/{model_id}")
def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    return model_object(state, state.orchestrator.manifest.resolve(model_id))


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
