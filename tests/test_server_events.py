"""`GET /v1/events`: a real WebSocket client on a real `wan serve`, with API keys set.

One server for the module. Its t2v-A14B dev model is fetched only by the download test (the other tests
run ti2v-5B), so that the download starts from nothing on disk.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from test_server_api import STAGES, cancel, create
from wanserver import WanServer, own_server

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")

KEYS = ("key-one", "key-two")
AUTH = {"Authorization": f"Bearer {KEYS[0]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanServer]:
    with own_server(tmp_path_factory.mktemp("events-server"), WAN_API_KEYS=",".join(KEYS)) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: WanServer) -> Any:
    return server.openai(api_key=KEYS[1])


def events_url(server: WanServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/v1/events{query}"


def collect(socket: ClientConnection, until: Callable[[dict[str, Any]], bool], timeout: float = 120.0,
            ) -> list[dict[str, Any]]:
    """Every event received until (and including) the first for which `until` holds."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        assert set(event) == {"type", "created_at", "data"}, event
        assert isinstance(event["created_at"], int) and isinstance(event["data"], dict)
        events.append(event)
        if until(event):
            return events


def test_the_socket_needs_a_key(server: WanServer) -> None:
    for query, headers in (("", {}), ("?api_key=key-three", {}), ("", {"Authorization": "Bearer key-three"})):
        with pytest.raises(InvalidStatus) as refused:
            connect(events_url(server, query), additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403
    # A browser passes the key in the query; other clients may send the header.
    with connect(events_url(server, f"?api_key={KEYS[0]}"), open_timeout=10):
        pass
    with connect(events_url(server), additional_headers={"Authorization": f"Bearer {KEYS[1]}"}, open_timeout=10):
        pass
    assert KEYS[0] not in server.log()


def test_a_job_sends_progress_then_completed(server: WanServer, client: Any) -> None:
    with connect(events_url(server, f"?api_key={KEYS[0]}"), open_timeout=10) as socket:
        video = create(client, num_frames=9, num_inference_steps=6)
        events = collect(socket, lambda e: e["type"] == "video.completed" and e["data"]["id"] == video.id)
    mine = [event for event in events if event["data"].get("id") == video.id]
    progress = [event["data"] for event in mine if event["type"] == "video.progress"]
    assert progress, [event["type"] for event in mine]
    percents = [data["progress"] for data in progress]
    assert percents == sorted(percents), percents
    stages = [data["stage"] for data in progress]
    assert set(stages) <= set(STAGES) and "denoising" in stages
    assert [STAGES.index(stage) for stage in stages] == sorted(STAGES.index(stage) for stage in stages)
    assert all(data["status"] == "in_progress" and data["total_steps"] == 6 for data in progress)
    assert max(data["step"] for data in progress) == 6

    completed = mine[-1]["data"]
    assert completed["status"] == "completed" and completed["progress"] == 100 and completed["object"] == "video"
    assert completed["size"] == "128x64" and completed["metrics"]["elapsed_seconds"] > 0
    retrieved = client.videos.retrieve(video.id)
    assert (retrieved.status, retrieved.size, retrieved.completed_at) == (
        "completed", completed["size"], completed["completed_at"])


def test_a_cancelled_job_sends_cancelled(server: WanServer, client: Any) -> None:
    with connect(events_url(server), additional_headers=AUTH, open_timeout=10) as socket:
        video = create(client, num_frames=17, num_inference_steps=100)
        collect(socket, lambda e: e["type"] == "video.progress" and e["data"]["id"] == video.id
                and e["data"]["step"] >= 1)
        cancel(client, video.id)
        events = collect(socket, lambda e: e["type"] == "video.cancelled" and e["data"]["id"] == video.id)
        # The next job runs once the cancelled one has stopped: wait for it to hear everything in between.
        following = create(client, num_frames=5, num_inference_steps=1)
        later = collect(socket, lambda e: e["type"] == "video.completed" and e["data"]["id"] == following.id)
    data = events[-1]["data"]
    assert data["status"] == "cancelled" and data["error"]["code"] == "CANCELLED"
    assert not any(event["type"] in ("video.completed", "video.failed") and event["data"]["id"] == video.id
                   for event in events)
    assert [event["type"] for event in later if event["data"].get("id") == video.id] == []  # the last word


def test_every_subscriber_gets_every_event(server: WanServer, client: Any) -> None:
    url = events_url(server, f"?api_key={KEYS[1]}")
    with connect(url, open_timeout=10) as first, connect(url, open_timeout=10) as second:
        video = create(client, num_frames=5, num_inference_steps=1)
        done = [collect(socket, lambda e: e["type"] == "video.completed" and e["data"]["id"] == video.id)
                for socket in (first, second)]
    assert [event["data"]["id"] for event in done[0]] == [event["data"]["id"] for event in done[1]]
    assert [event["type"] for event in done[0]] == [event["type"] for event in done[1]]


def test_ensuring_a_model_sends_download_events(server: WanServer) -> None:
    status, model, _ = server.request("GET", "/v1/models/t2v-A14B", headers=AUTH)
    dev = next(variant for variant in model["variants"] if variant["name"] == "dev")
    assert status == 200 and dev["state"] != "complete"

    with connect(events_url(server, f"?api_key={KEYS[0]}"), open_timeout=10) as socket:
        status, answer, _ = server.request("POST", "/v1/models/t2v-A14B/ensure", {"variant": "dev"}, headers=AUTH)
        assert status == 202 and answer["status"] in ("started", "running"), answer
        assert (answer["model"], answer["variant"]) == ("t2v-A14B@2.2.0", "dev")
        events = collect(socket, lambda e: e["type"] in ("model.download.completed", "model.download.failed")
                         and e["data"]["model"] == "t2v-A14B@2.2.0", timeout=60)
    downloads = [event for event in events if event["type"].startswith("model.download.")]
    completed = downloads[-1]
    assert completed["type"] == "model.download.completed", completed
    data = completed["data"]
    assert (data["model"], data["variant"], data["error"]) == ("t2v-A14B@2.2.0", "dev", None)
    assert 0 < data["bytes_done"] == data["bytes_total"] <= dev["bytes"]
    assert data["files_done"] == data["files_total"] > 0
    assert 0 < data["bytes_downloaded"] <= data["bytes_total"]
    for event in downloads:
        progress = event["data"]
        assert set(progress) >= {"model", "variant", "bytes_done", "bytes_total", "rate_bytes_per_second",
                                 "eta_seconds", "error"}
        assert 0 <= progress["bytes_done"] <= progress["bytes_total"] and progress["rate_bytes_per_second"] >= 0
    done = [event["data"]["bytes_done"] for event in downloads]
    assert done == sorted(done)

    status, model, _ = server.request("GET", "/v1/models/t2v-A14B", headers=AUTH)
    assert next(v for v in model["variants"] if v["name"] == "dev")["state"] == "complete"
    status, again, _ = server.request("POST", "/v1/models/t2v-A14B/ensure", {"variant": "dev"}, headers=AUTH)
    assert status == 200 and again["status"] == "complete"


def test_ensure_refuses_bad_requests(server: WanServer) -> None:
    cases = [("sora-2", {"variant": "dev"}, 404, "MODEL_NOT_FOUND"), ("ti2v-5B", {"variant": "fp64"}, 404,
             "MODEL_NOT_FOUND"), ("ti2v-5B", {"varient": "dev"}, 400, "INVALID_PARAMS"),
             ("ti2v-5B", {"variant": 7}, 400, "INVALID_PARAMS")]
    for model, body, status, code in cases:
        answer_status, answer, _ = server.request("POST", f"/v1/models/{model}/ensure", body, headers=AUTH)
        assert (answer_status, answer["error"]["code"]) == (status, code), answer
    assert server.request("POST", "/v1/models/ti2v-5B/ensure", {"variant": "dev"})[0] == 401
