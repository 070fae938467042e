"""`wan serve` end to end: the official OpenAI client against a real server subprocess, on the dev models.

One server is shared by the tests that do not disturb each other (module scope); the restart tests start
their own. The server runs one worker (WAN_DEVICE=cpu), so a long job holds it and jobs created meanwhile
stay queued (`busy_worker`).
"""

from __future__ import annotations

import io
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from wanserver import WanServer, own_server

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")

STAGES = ("queued", "ensuring", "loading", "denoising", "decoding", "encoding", "done")
STATUS_ORDER = ("queued", "in_progress", "completed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanServer]:
    with own_server(tmp_path_factory.mktemp("api-server")) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: WanServer) -> Any:
    return server.openai()


def png(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def create(client: Any, model: str = "ti2v-5B", prompt: str = "a red fox runs through snow", **extensions: Any) -> Any:
    """A dev job: OpenAI fields as keywords, our extensions in the body."""
    openai_fields = {name: extensions.pop(name) for name in ("seconds", "size", "input_reference")
                     if name in extensions}
    return client.videos.create(model=model, prompt=prompt, **openai_fields,
                                extra_body={"variant": "dev", **extensions})


def extra(video: Any) -> dict[str, Any]:
    return video.model_extra or {}


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param", "suggestions"}, body
    return body["error"]  # type: ignore[no-any-return]


def decode_mp4(data: bytes) -> tuple[int, int, int, float]:
    """(frames, width, height, frame rate) of an MP4, decoded frame by frame."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return len(frames), frames[0].width, frames[0].height, float(stream.average_rate or 0)


def cancel(client: Any, video_id: str) -> Any:
    """`POST /v1/videos/{id}/cancel` (our extension) through the official client."""
    return client.post(f"/videos/{video_id}/cancel", cast_to=openai.types.Video)


@contextmanager
def busy_worker(client: Any, *, cancel_queued: bool = True) -> Iterator[Any]:
    """A long job holding the only worker, so that jobs created in the block stay queued. At the end,
    every queued job (unless `cancel_queued` is false) and then the long one are cancelled."""
    blocker = create(client, prompt="a long, slow job", num_inference_steps=100, num_frames=17)
    wait_until(lambda: client.videos.retrieve(blocker.id).status == "in_progress")
    try:
        yield blocker
    finally:
        for video in client.videos.list(limit=100).data if cancel_queued else ():
            if video.status == "queued":
                cancel(client, video.id)
        assert cancel(client, blocker.id).status == "cancelled"


def metric_samples(server: WanServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text, headers = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- the life of a video -------------------------------------------------------------------------------------


def test_create_watch_download_list_and_delete(server: WanServer, client: Any) -> None:
    video = create(client, model="ti2v-5B@2.2.0", num_frames=13, num_inference_steps=6, seed=7)
    assert (video.object, video.model, video.status, video.progress) == ("video", "ti2v-5B@2.2.0", "queued", 0)
    assert video.size == "128x64" and video.seconds == "0.5"  # 12 frame intervals at 24 fps
    assert extra(video)["total_steps"] == 6 and extra(video)["variant"] == "dev"
    assert extra(video)["parameters"]["seed"] == 7

    seen: list[tuple[str, int, str, int]] = []
    while True:
        current = client.videos.retrieve(video.id)
        seen.append((current.status, current.progress, extra(current)["stage"], extra(current)["step"]))
        if current.status not in ("queued", "in_progress"):
            break
        time.sleep(0.02)
    statuses = [status for status, *_ in seen]
    progress = [percent for _, percent, *_ in seen]
    steps = [step for *_, step in seen]
    assert current.status == "completed", current
    assert progress == sorted(progress), f"progress went backwards: {seen}"
    assert steps == sorted(steps) and max(steps) == 6
    assert [STATUS_ORDER.index(status) for status in statuses] == sorted(STATUS_ORDER.index(s) for s in statuses)
    assert all(0 <= percent <= 100 for percent in progress) and progress[-1] == 100
    assert {stage for *_, stage, _ in seen} <= set(STAGES)
    assert current.completed_at >= current.created_at and current.error is None
    assert extra(current)["attempts"] == 1 and extra(current)["eta_seconds"] is None
    assert extra(current)["metrics"]["elapsed_seconds"] > 0

    content = client.videos.download_content(video.id)
    assert content.response.headers["content-type"] == "video/mp4"
    frames, width, height, rate = decode_mp4(content.content)
    assert (frames, f"{width}x{height}", rate) == (13, current.size, 24.0)

    later = create(client, num_frames=5, num_inference_steps=1)
    assert server.wait_for(later.id)["status"] == "completed"
    newest_first = [v.id for v in client.videos.list(limit=100).data]
    assert newest_first.index(later.id) < newest_first.index(video.id)
    created = [v.created_at for v in client.videos.list(limit=100).data]
    assert created == sorted(created, reverse=True)
    oldest_first = [v.id for v in client.videos.list(limit=100, order="asc").data]
    assert oldest_first == newest_first[::-1]
    first_page = client.videos.list(limit=1)
    assert [v.id for v in first_page.data] == [later.id] and first_page.has_more
    assert [v.id for v in client.videos.list(limit=2)] == newest_first  # the client follows the pages itself

    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted) == (video.id, True)
    with pytest.raises(openai.NotFoundError) as gone:
        client.videos.retrieve(video.id)
    assert error_body(gone.value)["code"] == "NOT_FOUND"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in [v.id for v in client.videos.list(limit=100).data]
    assert not (Path(server.env["WAN_DATA_DIR"]) / "videos" / video.id).exists()


def test_image_to_video_from_an_uploaded_image(server: WanServer, client: Any) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 90, 200)).save(jpeg, "JPEG")
    video = create(client, model="i2v-A14B", input_reference=("fox.jpg", jpeg.getvalue(), "image/jpeg"),
                   num_inference_steps=2)
    assert video.model == "i2v-A14B@2.2.0" and extra(video)["parameters"]["image"] is True
    # What the server keeps is the decoded pixels, written by itself, never the uploaded bytes.
    kept = Path(server.env["WAN_DATA_DIR"]) / "videos" / video.id / "input.png"
    assert kept.read_bytes().startswith(b"\x89PNG")
    width, height = map(int, video.size.split("x"))
    assert width / height == pytest.approx(96 / 64, rel=0.2)  # the size follows the image's shape
    done = server.wait_for(video.id)
    assert done["status"] == "completed", done
    frames, decoded_width, decoded_height, rate = decode_mp4(client.videos.download_content(video.id).content)
    assert (frames, decoded_width, decoded_height, rate) == (9, width, height, 16.0)


def test_seconds_and_size_map_onto_the_architecture(server: WanServer, client: Any) -> None:
    with busy_worker(client):  # the jobs below only need creating: they are never run
        snapped = create(client, size="1280x720")
        assert snapped.size == "1280x704"  # TI2V-5B's sizes are multiples of 32
        assert any("1280x704" in warning for warning in extra(snapped)["warnings"])

        on_grid = create(client, model="t2v-A14B", size="832x480")
        assert on_grid.size == "832x480" and extra(on_grid)["warnings"] == []

        four_seconds = create(client, seconds="4")
        assert extra(four_seconds)["parameters"]["num_frames"] == 97 and four_seconds.seconds == "4"  # 4 s at 24 fps
        assert extra(create(client, model="t2v-A14B", seconds="4"))["parameters"]["num_frames"] == 65  # at 16 fps

        odd = create(client, seconds="1.1")
        frames = extra(odd)["parameters"]["num_frames"]
        assert frames % 4 == 1 and abs(frames - (1.1 * 24 + 1)) <= 4  # on the 4n+1 grid, near 1.1 s

        too_long = create(client, model="t2v-A14B", seconds="12")
        assert extra(too_long)["parameters"]["num_frames"] == 81 and too_long.seconds == "5"
        assert any("12 s" in warning for warning in extra(too_long)["warnings"])

        # Our extensions win over what the OpenAI fields imply.
        frames_win = create(client, seconds="4", num_frames=17)
        assert extra(frames_win)["parameters"]["num_frames"] == 17 and frames_win.seconds == "0.67"
        fps_counts = create(client, seconds="4", fps=8)
        assert (extra(fps_counts)["parameters"]["num_frames"], extra(fps_counts)["parameters"]["fps"]) == (33, 8)

        image_seconds = create(client, model="i2v-A14B", seconds="2", input_reference=("a.png", png(), "image/png"))
        assert extra(image_seconds)["parameters"]["num_frames"] == 33  # 2 s at 16 fps


# -- cancelling ----------------------------------------------------------------------------------------------


def test_cancel_a_queued_job(server: WanServer, client: Any) -> None:
    with busy_worker(client, cancel_queued=False):
        first, second, last = (create(client, num_frames=5, num_inference_steps=1) for _ in range(3))
        status, cancelled, _ = server.request("POST", f"/v1/videos/{last.id}/cancel")
        assert status == 200 and cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "CANCELLED"
        assert client.videos.retrieve(first.id).status == "queued"  # the others wait on
        with pytest.raises(openai.ConflictError) as not_ready:
            client.videos.download_content(last.id)
        assert error_body(not_ready.value)["code"] == "NOT_READY"
        with pytest.raises(openai.ConflictError) as still_queued:
            client.videos.download_content(first.id)
        assert error_body(still_queued.value)["code"] == "NOT_READY"
        assert server.request("POST", f"/v1/videos/{last.id}/cancel")[1]["status"] == "cancelled"  # again: no-op
        busy_list = [v.id for v in client.videos.list(limit=100).data if v.status == "queued"]
        assert last.id not in busy_list and {first.id, second.id} <= set(busy_list)
    # The long job is cancelled as it runs; the two left in the queue run to the end, the cancelled one never.
    for video_id in (first.id, second.id):
        assert server.wait_for(video_id)["status"] == "completed"
    never_ran = client.videos.retrieve(last.id)
    assert never_ran.status == "cancelled" and extra(never_ran)["attempts"] == 0
    assert cancel(client, first.id).status == "completed"  # a finished job stays as it is
    assert len(client.videos.download_content(first.id).content) > 0


def test_cancel_a_running_job(server: WanServer, client: Any) -> None:
    running = create(client, prompt="cancel me", num_inference_steps=100, num_frames=17)
    wait_until(lambda: extra(client.videos.retrieve(running.id))["step"] >= 2)
    status, cancelled, _ = server.request("POST", f"/v1/videos/{running.id}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    assert cancelled["stage"] == "denoising" and 0 < cancelled["progress"] < 95

    # The worker stops at its next step and takes the next job.
    after = create(client, num_frames=5, num_inference_steps=1)
    assert server.wait_for(after.id)["status"] == "completed"
    final = client.videos.retrieve(running.id)
    assert final.status == "cancelled" and final.error.code == "CANCELLED"
    # It keeps the progress it was cancelled at, never the steps it ran after the cancel.
    assert (final.progress, extra(final)["stage"], extra(final)["step"]) == (
        cancelled["progress"], cancelled["stage"], cancelled["step"])
    with pytest.raises(openai.ConflictError) as not_ready:
        client.videos.download_content(running.id)
    assert error_body(not_ready.value)["code"] == "NOT_READY"
    assert not (Path(server.env["WAN_DATA_DIR"]) / "videos" / running.id / "video.mp4").exists()


def test_delete_a_running_job(server: WanServer, client: Any) -> None:
    running = create(client, prompt="delete me", num_inference_steps=100, num_frames=17)
    wait_until(lambda: extra(client.videos.retrieve(running.id))["step"] >= 1)
    assert client.videos.delete(running.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(running.id)
    after = create(client, num_frames=5, num_inference_steps=1)
    assert server.wait_for(after.id)["status"] == "completed"
    assert not (Path(server.env["WAN_DATA_DIR"]) / "videos" / running.id).exists()


# -- observability -------------------------------------------------------------------------------------------


def test_request_ids_follow_a_job_into_the_worker_logs(server: WanServer, client: Any) -> None:
    raw = client.videos.with_raw_response.create(model="ti2v-5B", prompt="traced", extra_body={
        "variant": "dev", "num_frames": 5, "num_inference_steps": 1})
    request_id = raw.headers["x-request-id"]
    video = raw.parse()
    assert request_id and extra(video)["request_id"] == request_id
    assert server.wait_for(video.id)["status"] == "completed"

    # A client's own well-formed X-Request-ID is kept.
    raw_own = client.videos.with_raw_response.create(
        model="ti2v-5B", prompt="traced too", extra_headers={"X-Request-ID": "test-trace-0001"},
        extra_body={"variant": "dev", "num_frames": 5, "num_inference_steps": 1})
    assert raw_own.headers["x-request-id"] == "test-trace-0001"
    assert extra(raw_own.parse())["request_id"] == "test-trace-0001"
    assert server.wait_for(raw_own.parse().id)["status"] == "completed"

    records = server.log_records()
    access = [r for r in records if r.get("logger") == "wanstudio.server.access" and r.get("method") == "POST"
              and r.get("path") == "/v1/videos" and r.get("correlation_id") == request_id]
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["duration_ms"] >= 0
    worker = [r for r in records if video.id in r.get("message", "") and r.get("thread", "").startswith("worker")]
    assert any("running" in r["message"] for r in worker) and any("completed" in r["message"] for r in worker)
    assert {r["correlation_id"] for r in worker} == {request_id}
    assert {r.get("correlation_id") for r in records
            if raw_own.parse().id in r.get("message", "") and r.get("thread", "").startswith("worker")} == {
        "test-trace-0001"}
    # Every answer carries an id, errors included, and each differs.
    first, second = (server.request("GET", "/v1/videos/video_" + "0" * 32)[2]["x-request-id"] for _ in range(2))
    assert first != second


def test_metrics_and_readiness(server: WanServer, client: Any) -> None:
    before = metric_samples(server)
    assert server.request("POST", "/v1/videos", {"prompt": ""})[0] == 400
    video = client.videos.create_and_poll(model="ti2v-5B", prompt="counted", poll_interval_ms=100,
                                          extra_body={"variant": "dev", "num_frames": 5, "num_inference_steps": 3})
    assert video.status == "completed"

    after = metric_samples(server)
    assert metric(after, "wan_errors_total", code="INVALID_PARAMS") >= metric(
        before, "wan_errors_total", code="INVALID_PARAMS") + 1
    assert metric(after, "wan_jobs", status="completed") >= 1
    assert ("wan_queue_length", frozenset()) in after and metric(after, "wan_workers_alive") == 1
    model = "ti2v-5B@2.2.0"
    assert metric(after, "wan_generation_seconds_count", model=model, status="completed") == metric(
        before, "wan_generation_seconds_count", model=model, status="completed") + 1
    assert metric(after, "wan_generation_seconds_sum", model=model, status="completed") > metric(
        before, "wan_generation_seconds_sum", model=model, status="completed")
    assert metric(after, "wan_step_seconds_count", model=model) == metric(
        before, "wan_step_seconds_count", model=model) + 3  # one sample per step, the first one included

    status, ready, _ = server.request("GET", "/readyz")
    assert status == 200 and ready["status"] == "ready"
    checks = {check["name"]: check for check in ready["checks"]}
    assert {"manifest", "data_dir_writable", "job_database", "workers"} <= set(checks)
    assert all(check["ok"] for check in checks.values())
    assert checks["job_database"]["jobs"]["completed"] >= 1
    data_dir = Path(server.env["WAN_DATA_DIR"])
    assert data_dir.stat().st_mode & 0o777 == 0o700  # prompts, images and videos are the user's own
    assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})


def test_models_list_capabilities_and_local_state(server: WanServer, client: Any) -> None:
    models = {model.id: model for model in client.models.list().data}
    assert set(models) >= {"t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0"}
    ti2v = client.models.retrieve("ti2v-5B")
    assert ti2v.id == "ti2v-5B@2.2.0"
    info = ti2v.model_extra or {}
    assert set(info["engine"]["capabilities"]) == {"text-to-video", "image-to-video"}
    dev = next(v for v in info["variants"] if v["name"] == "dev")
    assert dev["state"] == "complete"  # the earlier tests ran it
    assert (dev["defaults"]["width"], dev["defaults"]["height"]) == (128, 64)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("sora-2")
    assert error_body(unknown.value)["code"] == "MODEL_NOT_FOUND"


# -- restarts (servers of their own) -------------------------------------------------------------------------


def submit(server: WanServer, **fields: Any) -> str:
    status, video, _ = server.request("POST", "/v1/videos", {"model": "ti2v-5B", "variant": "dev",
                                                            "prompt": "a fox", "num_frames": 5, **fields})
    assert status == 200, video
    return video["id"]  # type: ignore[no-any-return]


def video_of(server: WanServer, video_id: str) -> dict[str, Any]:
    status, video, _ = server.request("GET", f"/v1/videos/{video_id}")
    assert status == 200, video
    return video  # type: ignore[no-any-return]


@pytest.mark.slow
def test_queued_and_running_jobs_survive_a_stop_and_a_kill(wan_server: Callable[..., WanServer]) -> None:
    server = wan_server(WAN_DEVICE="cpu")

    # A clean stop (SIGTERM): the running job goes back in the queue without counting the attempt.
    running, *waiting = submit(server, num_inference_steps=8), submit(server, num_inference_steps=1), submit(
        server, num_inference_steps=1)
    server.wait_for(running, ("in_progress",))
    assert server.stop() == 0
    assert f"{running} goes back in the queue" in server.log()
    server.start()
    for video_id in (running, *waiting):
        done = server.wait_for(video_id)
        assert done["status"] == "completed" and done["attempts"] == 1 and done["warnings"] == [], done

    # A kill (SIGKILL): the job that was running runs again, once, and says so.
    running, *waiting = submit(server, num_inference_steps=16), submit(server, num_inference_steps=1), submit(
        server, num_inference_steps=1)
    wait_until(lambda: video_of(server, running)["step"] >= 1)  # mid-run, with most of its steps to go
    server.kill()
    server.start()
    again = server.wait_for(running)
    assert again["status"] == "completed" and again["attempts"] == 2, again
    assert any("run again" in warning for warning in again["warnings"])
    for video_id in waiting:
        done = server.wait_for(video_id)
        assert done["status"] == "completed" and done["attempts"] == 1 and done["warnings"] == [], done
    assert len(server.request("GET", "/v1/videos?limit=100")[1]["data"]) == 6  # none lost, none doubled


@pytest.mark.slow
def test_a_job_interrupted_twice_fails_with_the_reason(wan_server: Callable[..., WanServer]) -> None:
    server = wan_server(WAN_DEVICE="cpu")
    doomed = submit(server, num_inference_steps=100, num_frames=17)
    behind = submit(server, num_inference_steps=1)
    server.wait_for(doomed, ("in_progress",))
    server.kill()
    server.start()
    wait_until(lambda: (video_of(server, doomed)["status"], video_of(server, doomed)["attempts"]) == ("in_progress", 2))
    assert any("run again" in warning for warning in video_of(server, doomed)["warnings"])
    server.kill()
    server.start()

    failed = video_of(server, doomed)
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert failed["error"]["code"] == "GENERATION_FAILED"
    assert "interrupted 2 times" in failed["error"]["message"] and failed["error"]["suggestions"]
    status, body, _ = server.request("GET", f"/v1/videos/{doomed}/content")
    assert status == 409 and body["error"]["code"] == "NOT_READY"
    # The job queued behind it was never started, so it runs as usual.
    assert server.wait_for(behind)["status"] == "completed"


@pytest.mark.slow
def test_finished_jobs_go_past_the_results_size_limit_and_after_their_retention(
    wan_server: Callable[..., WanServer],
) -> None:
    """The sweep runs at every start-up: oldest finished jobs first, with their files."""
    server = wan_server(WAN_DEVICE="cpu")
    ids = [submit(server, num_inference_steps=1) for _ in range(3)]
    for video_id in ids:
        assert server.wait_for(video_id)["status"] == "completed"
    videos = Path(server.env["WAN_DATA_DIR"]) / "videos"
    sizes = {video_id: sum(f.stat().st_size for f in (videos / video_id).iterdir()) for video_id in ids}

    # Room for the two newest: the oldest goes, with its folder.
    server.stop()
    server.env["WAN_RESULTS_MAX_BYTES"] = str(sizes[ids[1]] + sizes[ids[2]])
    server.start()
    assert [server.request("GET", f"/v1/videos/{video_id}")[0] for video_id in ids] == [404, 200, 200]
    assert sorted(p.name for p in videos.iterdir()) == sorted(ids[1:])

    # Past their retention, the rest go too.
    server.stop()
    server.env.update(WAN_RESULTS_MAX_BYTES="1G", WAN_JOB_RETENTION="1s")
    time.sleep(1.1)
    server.start()
    assert [server.request("GET", f"/v1/videos/{video_id}")[0] for video_id in ids] == [404, 404, 404]
    assert list(videos.iterdir()) == []
