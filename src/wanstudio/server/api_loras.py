"""`/v1/loras`: the LoRA catalogue (`MODELS_ROOT/loras/`), uploads checked before they are published.

An upload is streamed to a private temporary file in the catalogue folder, never under a name the client
chose, and published by `install_lora`: safetensors only (judged by content), at most `WAN_MAX_LORA_BYTES`,
keys and shapes that make a LoRA of a WAN transformer. Jobs then name it in `loras`.

The list also shows the manifest's LoRA entries (`source: "manifest"`, named by id, with `state` on disk and
`base_models`); a job that names one gets it downloaded first. They belong to the store: uploads and
deletes here touch catalogue files only (`wan models gc` removes a manifest LoRA like any model).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from wanstudio.engine.lora import (
    LORA_SUFFIX,
    check_lora_name,
    install_lora,
    list_loras,
    lora_dir,
    manifest_lora,
)
from wanstudio.errors import InvalidParamsError, PayloadTooLargeError, VideoNotFoundError
from wanstudio.orchestrator.manifest import is_model_id
from wanstudio.server.state import State, require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["loras"])

_CHUNK = 1 << 20


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """A catalogue or manifest LoRA as the API shows it: no server paths."""
    return {"object": "lora", **{key: value for key, value in entry.items() if key != "path"}}


@router.get("/loras")
def list_lora_files(state: State) -> dict[str, Any]:
    entries = list_loras(state.settings, inspect=True, max_bytes=state.settings.max_lora_bytes)
    return {"object": "list", "data": [_public(entry.to_json()) for entry in entries]}


@router.post("/loras", status_code=201)
async def upload_lora(request: Request, state: State) -> dict[str, Any]:
    """Add a LoRA: multipart with `file` (safetensors) and `name` (letters, digits, `-`, `_`, `.`);
    `replace=true` to overwrite one of the same name."""
    settings = state.settings
    form = await request.form(max_files=1, max_fields=4)
    upload, name = form.get("file"), form.get("name")
    if not isinstance(upload, UploadFile):
        raise InvalidParamsError("file is required: the LoRA as a .safetensors file part", param="file")
    if not isinstance(name, str) or not name.strip():
        raise InvalidParamsError("name is required: what jobs will call this LoRA in `loras`", param="name",
                                 suggestions=["name=my_style"])
    stem = check_lora_name(name.strip(), param="name", catalogue=True)
    folder = lora_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".upload-{uuid.uuid4().hex}.part"
    try:
        size = 0
        with open(partial, "wb") as handle:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > settings.max_lora_bytes:
                    raise PayloadTooLargeError(
                        f"the LoRA {stem!r} is over {settings.max_lora_bytes} bytes", param="file",
                        suggestions=["raise WAN_MAX_LORA_BYTES on the server for larger LoRAs"])
                handle.write(chunk)
        try:
            entry = await run_in_threadpool(install_lora, partial, stem, settings, max_bytes=settings.max_lora_bytes,
                                            replace=str(form.get("replace", "")).lower() in ("1", "true"), move=True)
        except InvalidParamsError as error:
            if error.param == "lora":  # the file's content, in this route's words
                error.param = "file"
            raise
    finally:
        partial.unlink(missing_ok=True)
    return _public(entry.to_json())


@router.delete("/loras/{name}")
def delete_lora(name: str, state: State) -> dict[str, Any]:
    stem = check_lora_name(name, param="name")  # a catalogue name, or a manifest LoRA's id
    path = lora_dir(state.settings) / f"{stem}{LORA_SUFFIX}"
    if manifest_lora(stem, state.settings) is not None and (is_model_id(stem) or not path.is_file()):
        raise InvalidParamsError(f"LoRA {stem!r} is an entry of the models manifest, not a catalogue file: the store "
                                 "manages it like a model", param="name",
                                 suggestions=["wan models gc removes it when it is unused (and not pinned)"])
    stem = check_lora_name(stem, param="name", catalogue=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise VideoNotFoundError(f"no LoRA named {stem!r} in the catalogue", param="name",
                                 suggestions=["list them with GET /v1/loras"]) from None
    return {"id": stem, "object": "lora.deleted", "deleted": True}
