"""Bad input to `wan serve`: each answered 4xx with the pinned error shape, none reaching a model, and the
server still healthy afterwards. Also the limits (upload size, queue length) and API keys.

One server for the module, with API keys, a 100K upload limit and room for two queued jobs.
"""

from __future__ import annotations

import base64
import http.server
import io
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from PIL import Image

from test_server_api import busy_worker, cancel, create, error_body, metric, metric_samples, png
from wanserver import WanServer, own_server

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")

KEYS = ("key-one", "key-two")
AUTH = {"Authorization": f"Bearer {KEYS[0]}"}
MAX_UPLOAD = 100 * 1024
GOOD = {"model": "ti2v-5B", "variant": "dev", "prompt": "a fox in snow", "num_frames": 5, "num_inference_steps": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanServer]:
    with own_server(tmp_path_factory.mktemp("inputs-server"), WAN_API_KEYS=",".join(KEYS),
                    WAN_MAX_UPLOAD_BYTES="100K", WAN_QUEUE_MAX="2") as started:
        yield started


@pytest.fixture(scope="module")
def client(server: WanServer) -> Any:
    return server.openai(api_key=KEYS[0])


def job_count(server: WanServer) -> int:
    status, listing, _ = server.request("GET", "/v1/videos?limit=100", headers=AUTH)
    assert status == 200, listing
    return len(listing["data"])


def assert_error(status: int, body: Any, headers: dict[str, str], want_status: int, code: str,
                 param: str | None = None) -> dict[str, Any]:
    """The pinned shape: {"error": {code, message, param, suggestions}} with the code's status."""
    assert status == want_status, body
    assert headers["content-type"] == "application/json"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "param", "suggestions"}, error
    assert error["code"] == code and error["param"] == param, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["suggestions"], list) and all(isinstance(s, str) for s in error["suggestions"])
    return error  # type: ignore[no-any-return]


def healthy(server: WanServer) -> bool:
    return server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: random pixels."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def without(name: str) -> dict[str, Any]:
    return {key: value for key, value in GOOD.items() if key != name}


BAD_JSON = [
    ("missing prompt", without("prompt"), 400, "INVALID_PARAMS", "prompt"),
    ("empty prompt", {**GOOD, "prompt": ""}, 400, "INVALID_PARAMS", "prompt"),
    ("blank prompt", {**GOOD, "prompt": "  \n "}, 400, "INVALID_PARAMS", "prompt"),
    ("prompt not text", {**GOOD, "prompt": ["a", "fox"]}, 400, "INVALID_PARAMS", "prompt"),
    ("NUL in the prompt", {**GOOD, "prompt": "a\x00fox"}, 400, "INVALID_PARAMS", "prompt"),
    ("unknown model", {**GOOD, "model": "sora-2"}, 404, "MODEL_NOT_FOUND", "model"),
    ("unknown model version", {**GOOD, "model": "ti2v-5B@9.9.9"}, 404, "MODEL_NOT_FOUND", "model"),
    ("unknown variant", {**GOOD, "variant": "fp64"}, 404, "MODEL_NOT_FOUND", "variant"),
    ("num_frames not 4n+1", {**GOOD, "num_frames": 10}, 400, "INVALID_PARAMS", "num_frames"),
    ("num_frames past the limit", {**GOOD, "num_frames": 10**6 + 1}, 400, "INVALID_PARAMS", "num_frames"),
    ("num_frames not whole", {**GOOD, "num_frames": 9.0}, 400, "INVALID_PARAMS", "num_frames"),
    ("zero steps", {**GOOD, "num_inference_steps": 0}, 400, "INVALID_PARAMS", "num_inference_steps"),
    ("too many steps", {**GOOD, "num_inference_steps": 101}, 400, "INVALID_PARAMS", "num_inference_steps"),
    ("steps as text", {**GOOD, "num_inference_steps": "4"}, 400, "INVALID_PARAMS", "num_inference_steps"),
    ("steps as a boolean", {**GOOD, "num_inference_steps": True}, 400, "INVALID_PARAMS", "num_inference_steps"),
    ("guidance not a number", {**GOOD, "guidance_scale": "high"}, 400, "INVALID_PARAMS", "guidance_scale"),
    ("guidance out of range", {**GOOD, "guidance_scale": 500}, 400, "INVALID_PARAMS", "guidance_scale"),
    ("bad size text", {**GOOD, "size": "big"}, 400, "INVALID_PARAMS", "size"),
    ("size with a zero side", {**GOOD, "size": "0x720"}, 400, "INVALID_PARAMS", "size"),
    ("size not text", {**GOOD, "size": [1280, 720]}, 400, "INVALID_PARAMS", "size"),
    ("seconds not a number", {**GOOD, "seconds": "forever"}, 400, "INVALID_PARAMS", "seconds"),
    ("negative seconds", {**GOOD, "seconds": "-4"}, 400, "INVALID_PARAMS", "seconds"),
    ("fps zero", {**GOOD, "fps": 0}, 400, "INVALID_PARAMS", "fps"),
    ("negative seed", {**GOOD, "seed": -1}, 400, "INVALID_PARAMS", "seed"),
    ("unknown field", {**GOOD, "num_inferance_steps": 4}, 400, "INVALID_PARAMS", "num_inferance_steps"),
    ("t2v with an image", {**GOOD, "model": "t2v-A14B", "input_reference": {"image_url": data_url(png())}},
     400, "INVALID_PARAMS", "input_reference"),
    ("i2v without an image", {**GOOD, "model": "i2v-A14B"}, 400, "INVALID_PARAMS", "input_reference"),
    ("image that is not an image", {**GOOD, "input_reference": {"image_url": data_url(os.urandom(500))}},
     400, "INVALID_PARAMS", "input_reference"),
    ("image data URL not base64", {**GOOD, "input_reference": {"image_url": "data:image/png;base64,!!!"}},
     400, "INVALID_PARAMS", "input_reference"),
    ("image by file id", {**GOOD, "input_reference": {"file_id": "file-abc123"}}, 400, "INVALID_PARAMS",
     "input_reference"),
    ("image as text", {**GOOD, "input_reference": "fox.png"}, 400, "INVALID_PARAMS", "input_reference"),
    ("image over the limit", {**GOOD, "input_reference": {"image_url": data_url(os.urandom(MAX_UPLOAD + 3000))}},
     413, "PAYLOAD_TOO_LARGE", "input_reference"),
    ("a LoRA missing from the catalogue", {**GOOD, "loras": [{"name": "film-grain", "weight": 0.8}]}, 400,
     "INVALID_PARAMS", "loras"),
    ("loras of the wrong shape", {**GOOD, "loras": "film-grain"}, 400, "INVALID_PARAMS", "loras"),
    ("a LoRA by path", {**GOOD, "loras": [{"name": "../../etc/passwd"}]}, 400, "INVALID_PARAMS", "loras"),
    ("a LoRA weight out of range", {**GOOD, "loras": [{"name": "grain", "weight": 40}]}, 400, "INVALID_PARAMS",
     "loras"),
    ("an unknown memory profile", {**GOOD, "memory_profile": "tiny"}, 400, "INVALID_PARAMS", "memory_profile"),
    ("allow_fallback not a boolean", {**GOOD, "allow_fallback": "maybe"}, 400, "INVALID_PARAMS", "allow_fallback"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), [case[1:] for case in BAD_JSON],
                         ids=[case[0] for case in BAD_JSON])
def test_bad_json_fields(server: WanServer, body: dict[str, Any], status: int, code: str, param: str) -> None:
    before = job_count(server)
    assert_error(*server.request("POST", "/v1/videos", body, headers=AUTH), status, code, param)
    assert job_count(server) == before  # nothing was queued
    assert healthy(server)


def test_an_unknown_field_suggests_the_close_name(server: WanServer) -> None:
    error = assert_error(*server.request("POST", "/v1/videos", {**GOOD, "guidence_scale": 4}, headers=AUTH),
                         400, "INVALID_PARAMS", "guidence_scale")
    assert any("guidance_scale" in suggestion for suggestion in error["suggestions"])


def test_errors_name_the_api_fields_and_the_nearest_valid_value(server: WanServer) -> None:
    error = assert_error(*server.request("POST", "/v1/videos", {**GOOD, "num_frames": 10}, headers=AUTH),
                         400, "INVALID_PARAMS", "num_frames")
    assert "nearest valid value: 9" in error["message"]
    assert not any("--" in suggestion for suggestion in error["suggestions"]), error  # no CLI flags
    error = assert_error(*server.request("POST", "/v1/videos", {**GOOD, "variant": "fp64"}, headers=AUTH),
                         404, "MODEL_NOT_FOUND", "variant")
    assert "dev" in error["message"]


def test_a_prompt_over_the_limit(server: WanServer) -> None:
    status, model, _ = server.request("GET", "/v1/models/ti2v-5B", headers=AUTH)
    assert status == 200
    limit = model["engine"]["limits"]["max_prompt_chars"]
    error = assert_error(*server.request("POST", "/v1/videos", {**GOOD, "prompt": "x" * (limit + 1)}, headers=AUTH),
                         400, "INVALID_PARAMS", "prompt")
    assert str(limit) in error["message"]


@pytest.mark.parametrize(("data", "content_type"), [
    (b'{"prompt": "a fox", ', "application/json"),
    (b"\xff\xfe not utf-8", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"a fox"', "application/json"),
    (b"", "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # nested past the parser's recursion limit
    (b"prompt: a fox", "text/plain"),
], ids=["truncated", "not utf-8", "array", "string", "empty", "deeply nested", "text/plain"])
def test_bodies_that_are_not_a_json_object(server: WanServer, data: bytes, content_type: str) -> None:
    headers = {**AUTH, "Content-Type": content_type}
    assert_error(*server.request("POST", "/v1/videos", data=data, headers=headers), 400, "INVALID_PARAMS")
    assert healthy(server)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(png())

    def log_message(self, *args: Any) -> None:
        pass


def test_an_image_url_is_never_fetched(server: WanServer) -> None:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/fox.png"
        assert urllib.request.urlopen(url).status == 200 and _CountingHandler.hits == 1  # it does answer
        for reference in ({"image_url": url}, {"image_url": url.replace("http", "https")}):
            body = {**GOOD, "model": "i2v-A14B", "input_reference": reference}
            error = assert_error(*server.request("POST", "/v1/videos", body, headers=AUTH),
                                 400, "INVALID_PARAMS", "input_reference")
            assert "does not fetch" in error["message"]
        assert _CountingHandler.hits == 1
    finally:
        web.shutdown()
        web.server_close()


# -- multipart uploads, as the openai client sends them ------------------------------------------------------


def test_uploads_that_are_refused(server: WanServer, client: Any) -> None:
    before = job_count(server)
    cases = [
        ("ti2v-5B", ("x.png", os.urandom(4000), "image/png"), {}, 400, "INVALID_PARAMS", "input_reference"),
        ("ti2v-5B", ("x.png", b"", "image/png"), {}, 400, "INVALID_PARAMS", "input_reference"),
        ("t2v-A14B", ("fox.png", png(), "image/png"), {}, 400, "INVALID_PARAMS", "input_reference"),
        ("ti2v-5B", ("fox.png", noise_png(200, 200), "image/png"), {}, 413, "PAYLOAD_TOO_LARGE", "input_reference"),
        ("ti2v-5B", ("fox.png", png(), "image/png"), {"num_inference_steps": "3.5"}, 400, "INVALID_PARAMS",
         "num_inference_steps"),
        ("ti2v-5B", ("fox.png", png(), "image/png"), {"num_frames": "ten"}, 400, "INVALID_PARAMS", "num_frames"),
        ("ti2v-5B", ("fox.png", png(), "image/png"), {"guidance_scale": "high"}, 400, "INVALID_PARAMS",
         "guidance_scale"),
        ("ti2v-5B", ("fox.png", png(), "image/png"), {"loras": [{"name": "grain", "weight": 0.5}]}, 400,
         "INVALID_PARAMS", "loras"),
        ("ti2v-5B", ("fox.png", png(), "image/png"), {"colour": "red"}, 400, "INVALID_PARAMS", "colour"),
    ]
    assert len(noise_png(200, 200)) > MAX_UPLOAD
    for model, upload, fields, status, code, param in cases:
        with pytest.raises(openai.APIStatusError) as refused:
            client.videos.create(model=model, prompt="a fox", input_reference=upload,
                                 extra_body={"variant": "dev", **fields})
        assert refused.value.status_code == status, (model, fields, refused.value.body)
        error = error_body(refused.value)
        assert (error["code"], error["param"]) == (code, param), error
    assert job_count(server) == before
    assert healthy(server)


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: WanServer, client: Any) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client.videos.create(model="ti2v-5B", prompt="a fox", input_reference=("big.png", os.urandom(3 * 2**20),
                                                                              "image/png"),
                             extra_body={"variant": "dev"})
    assert refused.value.status_code == 413
    assert error_body(refused.value)["code"] == "PAYLOAD_TOO_LARGE"
    assert healthy(server)


def test_a_chunked_body_over_the_limit_is_cut_off(server: WanServer) -> None:
    """No Content-Length to refuse up front: the server counts the bytes as they come."""
    chunk = b" " * 2**16
    request = urllib.request.Request(server.base_url + "/v1/videos", method="POST",
                                     data=iter([b'{"prompt": "a fox", "pad": "', *[chunk] * 40, b'"}']),
                                     headers={**AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except (ConnectionError, urllib.error.URLError):
        status, body = 413, b""  # the server may close the connection before the client sent everything
    assert status == 413, body
    assert healthy(server)


# -- ids, states and the queue -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/content"), ("POST", "/cancel"),
                                                ("DELETE", "")])
def test_unknown_video_ids(server: WanServer, method: str, suffix: str) -> None:
    assert_error(*server.request(method, f"/v1/videos/video_{'0' * 32}{suffix}", headers=AUTH),
                 404, "NOT_FOUND", "video_id")
    assert_error(*server.request(method, f"/v1/videos/nonsense{suffix}", headers=AUTH), 404, "NOT_FOUND", "video_id")


@pytest.mark.parametrize(("query", "status", "code", "param"), [
    (f"after=video_{'0' * 32}", 404, "NOT_FOUND", "after"),
    ("after=..%2F..%2Fjobs.sqlite3", 404, "NOT_FOUND", "after"),
    ("limit=0", 400, "INVALID_PARAMS", "limit"),
    ("limit=1000", 400, "INVALID_PARAMS", "limit"),
    ("limit=ten", 400, "INVALID_PARAMS", "limit"),
    ("order=sideways", 400, "INVALID_PARAMS", "order"),
])
def test_bad_list_queries(server: WanServer, query: str, status: int, code: str, param: str) -> None:
    assert_error(*server.request("GET", f"/v1/videos?{query}", headers=AUTH), status, code, param)


TRAVERSALS = ["..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fjobs.sqlite3", "%2e%2e%2f%2e%2e%2fjobs.sqlite3", "..", "%2e%2e",
              "video_..%2F..%2Fjobs.sqlite3", "..%5C..%5Cjobs.sqlite3", "%2Fetc%2Fpasswd", "videos%00", "~root"]


@pytest.mark.parametrize("video_id", TRAVERSALS)
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/content"), ("POST", "/cancel"),
                                                ("DELETE", "")])
def test_path_traversal_in_the_video_id(server: WanServer, video_id: str, method: str, suffix: str) -> None:
    status, body, headers = server.request(method, f"/v1/videos/{video_id}{suffix}", headers=AUTH)
    assert status == 404 and headers["content-type"] == "application/json", body
    assert body["error"]["code"] == "NOT_FOUND"
    database = Path(server.env["WAN_DATA_DIR"]) / "jobs.sqlite3"
    assert database.is_file()  # nothing was deleted
    assert healthy(server)


def test_content_before_completion_and_a_full_queue(server: WanServer, client: Any) -> None:
    with busy_worker(client) as running:
        status, body, _ = server.request("GET", f"/v1/videos/{running.id}/content", headers=AUTH)
        error = assert_error(status, body, _, 409, "NOT_READY", "video_id")
        assert "in_progress" in error["message"]

        waiting = [create(client, num_frames=5, num_inference_steps=1) for _ in range(2)]
        assert_error(*server.request("GET", f"/v1/videos/{waiting[0].id}/content", headers=AUTH),
                     409, "NOT_READY", "video_id")
        status, body, headers = server.request("POST", "/v1/videos", GOOD, headers=AUTH)
        assert_error(status, body, headers, 429, "QUEUE_FULL")
        assert int(headers["retry-after"]) > 0
        with pytest.raises(openai.RateLimitError):
            create(client, num_frames=5, num_inference_steps=1)

        # The bound counts jobs waiting: one cancelled makes room for one.
        cancel(client, waiting[0].id)
        accepted = create(client, num_frames=5, num_inference_steps=1)
        assert accepted.status == "queued"
    assert healthy(server)


# -- API keys ------------------------------------------------------------------------------------------------


def test_api_keys(server: WanServer) -> None:
    for headers in ({}, {"Authorization": "Bearer key-three"}, {"Authorization": f"Basic {KEYS[0]}"},
                    {"Authorization": "Bearer "}, {"X-Api-Key": KEYS[0]}):
        status, body, answer = server.request("GET", "/v1/videos", headers=headers)
        assert_error(status, body, answer, 401, "UNAUTHORIZED")
        assert answer["www-authenticate"] == "Bearer"
        assert_error(*server.request("POST", "/v1/videos", GOOD, headers=headers), 401, "UNAUTHORIZED")
    # Keys in a URL end up in logs and histories: only the WebSocket, which cannot send headers, takes one.
    assert_error(*server.request("GET", f"/v1/videos?api_key={KEYS[0]}"), 401, "UNAUTHORIZED")

    for key in KEYS:
        keyed = server.openai(api_key=key)
        keyed.videos.list()
        assert keyed.models.retrieve("ti2v-5B").id == "ti2v-5B@2.2.0"
    with pytest.raises(openai.AuthenticationError) as refused:
        server.openai(api_key="key-three").videos.list()
    assert error_body(refused.value)["code"] == "UNAUTHORIZED"
    assert KEYS[0] not in server.log()  # keys never reach the log

    assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})


# -- afterwards ----------------------------------------------------------------------------------------------


def test_the_server_is_still_healthy_and_counted_the_errors(server: WanServer, client: Any) -> None:
    assert healthy(server)
    video = create(client, num_frames=5, num_inference_steps=2)
    assert server.wait_for(video.id, headers=AUTH)["status"] == "completed"
    samples = metric_samples(server)
    assert metric(samples, "wan_errors_total", code="INVALID_PARAMS") >= len(BAD_JSON) - 4
    for code in ("MODEL_NOT_FOUND", "PAYLOAD_TOO_LARGE", "QUEUE_FULL", "UNAUTHORIZED", "NOT_FOUND", "NOT_READY"):
        assert metric(samples, "wan_errors_total", code=code) >= 1, code
    assert not any(record.get("level") == "ERROR" for record in server.log_records())  # no 500s, no crashes
