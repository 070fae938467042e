"""`/v1/videos`: the OpenAI Videos API (create, retrieve, list, content, delete) plus cancel."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from wanstudio.errors import InvalidParamsError, ModelNotFoundError, NotReadyError, VideoNotFoundError
from wanstudio.server.jobstore import CANCELLED, COMPLETED, FAILED
from wanstudio.server.state import State, require_api_key
from wanstudio.server.video_request import as_api_error, fields_from_form, parse_video_request

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])

MAX_FORM_FIELDS = 64


@router.post("/videos")
async def create_video(request: Request, state: State) -> dict[str, Any]:
    """Queue a generation (JSON or multipart/form-data, as the openai client sends it)."""
    content_type = request.headers.get("content-type", "").lower()
    upload: bytes | None = None
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
        items: list[tuple[str, Any]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "input_reference":
                    raise InvalidParamsError(
                        f"unexpected file field {key!r}; only input_reference takes a file", param=key
                    )
                upload = await value.read()
            else:
                items.append((key, value))
        fields, from_form = fields_from_form(items), True
    elif content_type.startswith("application/json") or not content_type:
        try:
            fields = json.loads(await request.body() or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # nesting too deep too
            raise InvalidParamsError(
                f"the request body is not valid JSON: {exc}",
                suggestions=['send a JSON object such as {"prompt": "..."}'],
            ) from None
        if not isinstance(fields, dict):
            raise InvalidParamsError(
                "the request body must be a JSON object with at least a prompt",
                suggestions=['{"model": "ti2v-5B", "prompt": "a fox in snow"}'],
            )
        from_form = False
    else:
        raise InvalidParamsError(
            f"unsupported content type {content_type!r}",
            suggestions=["send application/json or multipart/form-data"],
        )
    settings = state.settings
    try:
        parsed = await run_in_threadpool(
            parse_video_request,
            fields,
            upload,
            state.orchestrator.manifest,
            max_upload_bytes=settings.max_upload_bytes,
            from_form=from_form,
        )
        job = await run_in_threadpool(state.queue.submit, parsed, request.scope["state"].get("request_id"))
    except (InvalidParamsError, ModelNotFoundError) as error:
        raise as_api_error(error)
    return state.queue.video(job)


@router.get("/videos")
def list_videos(
    state: State,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, max_length=80),
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """Videos, newest first (or oldest with order=asc), a page at a time: pass `after` = the last id seen."""
    try:
        jobs, more = state.store.list(limit=limit, after=after, newest_first=order == "desc")
    except VideoNotFoundError as error:
        error.param = "after"  # the cursor, not a path's id
        raise
    data = [state.queue.video(job) for job in jobs]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


@router.get("/videos/{video_id}")
def retrieve_video(video_id: str, state: State) -> dict[str, Any]:
    return state.queue.get(video_id)


@router.get("/videos/{video_id}/content")
def video_content(video_id: str, state: State, variant: str = "video") -> FileResponse:
    """The MP4 of a completed video (NOT_READY before; byte ranges supported for seeking)."""
    if variant != "video":
        raise InvalidParamsError(
            f"variant {variant!r} is not available; this server keeps the video only",
            param="variant",
            suggestions=["leave out variant, or pass variant=video"],
        )
    job = state.store.get(video_id)
    if job.status != COMPLETED:
        hint = {
            FAILED: "it failed: see its error, fix the request and submit it again",
            CANCELLED: "it was cancelled: submit the request again to make it",
        }.get(job.status, f"poll GET /v1/videos/{video_id} until its status is completed")
        raise NotReadyError(
            f"{video_id} is {job.status}, so it has no video", param="video_id", suggestions=[hint]
        )
    path = state.queue.output_path(video_id)
    if not path.is_file():
        raise VideoNotFoundError(
            f"the video file of {video_id} is gone from {path.parent}",
            param="video_id",
            suggestions=["submit the request again"],
        )
    return FileResponse(
        path, media_type="video/mp4", filename=f"{video_id}.mp4", content_disposition_type="inline"
    )


@router.post("/videos/{video_id}/cancel")
def cancel_video(video_id: str, state: State) -> dict[str, Any]:
    return state.queue.cancel(video_id)


@router.delete("/videos/{video_id}")
def delete_video(video_id: str, state: State) -> dict[str, Any]:
    return state.queue.delete(video_id)
