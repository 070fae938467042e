"""A job as the OpenAI video object (CONTRACT section 8), with our extensions beside the OpenAI fields."""

from __future__ import annotations

from typing import Any

from wanstudio.server.jobstore import COMPLETED, Job


def video_object(job: Job, live: dict[str, Any] | None, retention_seconds: float) -> dict[str, Any]:
    """The video object of `job`; `live` is the running job's latest progress (fresher than the row)."""
    params = job.params
    progress = live or job.progress or {}
    fps = params["fps"]
    percent = 100 if job.status == COMPLETED else int(progress.get("percent") or 0)
    result = job.result or {}
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": job.status,
        "progress": percent,
        "created_at": int(job.created_at),
        "completed_at": int(job.completed_at) if job.completed_at else None,
        "expires_at": int(job.completed_at + retention_seconds) if job.completed_at else None,
        "size": f"{params['width']}x{params['height']}",
        "seconds": f"{(params['num_frames'] - 1) / fps:.2f}".rstrip("0").rstrip("."),
        "prompt": params["prompt"],
        "remixed_from_video_id": None,
        "error": job.error,
        # extensions
        "variant": job.variant,
        "stage": "done" if job.status == COMPLETED else progress.get("stage", job.status),
        "step": progress.get("step", 0),
        "total_steps": params["steps"],
        "eta_seconds": progress.get("eta_seconds") if job.status == "in_progress" else None,
        "download": progress.get("download") if job.status == "in_progress" else None,
        "metrics": result.get("metrics"),
        "memory_plan": result.get("memory_plan"),
        # What was asked is in parameters.loras; what was applied, without the server's file paths:
        "loras_applied": [_without_path(lora) for lora in result["loras"]] if result.get("loras") is not None else None,
        "fallback": result.get("fallback"),
        "mock": bool(result.get("mock")),
        "warnings": job.warnings + [w for w in result.get("warnings", []) if w not in job.warnings],
        "parameters": {key: value for key, value in params.items() if key != "prompt"},
        "attempts": job.attempts,
        "request_id": job.request_id,
    }


def _without_path(lora: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in lora.items() if key != "path"}
