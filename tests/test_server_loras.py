"""LoRAs through the server: uploaded to the catalogue, checked, named by jobs, applied to one job only.

A real `wan serve` and the official openai client (the LoRA is named in `extra_body`); the LoRA file is made
here with peft for the ti2v-5B dev transformer (tests/test_lora.py has the helpers).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from test_lora import Pipelines, lora_layers, save_diffusers_lora
from test_server_api import create
from wanserver import WanServer, own_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanServer]:
    with own_server(tmp_path_factory.mktemp("lora-server"), WAN_MAX_LORA_BYTES="2M") as started:
        yield started


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    pipelines = Pipelines(tmp_path_factory.mktemp("store"))
    layers, config = lora_layers(pipelines["ti2v-5B"].pipeline.transformer, seed=7)
    return save_diffusers_lora(tmp_path_factory.mktemp("lora") / "grain.safetensors", layers, config).read_bytes()


def upload(server: WanServer, name: str, content: bytes, **fields: str) -> tuple[int, Any, dict[str, str]]:
    boundary = "wanstudio-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in {"name": name, **fields}.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.safetensors"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return server.request("POST", "/v1/loras", data=body,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_an_uploaded_lora_is_listed_and_applies_to_the_job_that_names_it(server: WanServer, lora_bytes: bytes) -> None:
    status, entry, _ = upload(server, "grain", lora_bytes)
    assert status == 201, entry
    assert entry["object"] == "lora" and entry["name"] == "grain" and "path" not in entry
    assert [item["name"] for item in server.request("GET", "/v1/loras")[1]["data"]] == ["grain"]

    client = server.openai()
    plain = server.wait_for(create(client, seed=5).id)
    styled = server.wait_for(create(client, seed=5, loras=[{"name": "grain", "weight": 0.8}]).id)
    after = server.wait_for(create(client, seed=5).id)
    assert [v["status"] for v in (plain, styled, after)] == ["completed"] * 3
    assert [lora["name"] for lora in styled["loras_applied"]] == ["grain"]
    assert "path" not in styled["loras_applied"][0]  # no server file paths in what clients see
    assert styled["parameters"]["loras"] == [{"name": "grain", "weight": 0.8, "weight_2": None}]
    assert plain["loras_applied"] == after["loras_applied"] == []
    contents = [client.videos.download_content(v["id"]).content for v in (plain, styled, after)]
    assert contents[0] == contents[2] != contents[1]  # the LoRA changed one video and did not leak


def test_a_file_that_is_not_a_safetensors_lora_is_refused_and_nothing_is_published(server: WanServer) -> None:
    for content in (os.urandom(4000), b"\x80\x04\x95pickle" + os.urandom(100)):
        status, body, _ = upload(server, "bad", content)
        assert status == 400 and body["error"]["code"] == "INVALID_PARAMS" and body["error"]["param"] == "file"
    status, body, _ = upload(server, "../escape", b"x")
    assert status == 400 and body["error"]["param"] == "name"
    # Over WAN_MAX_LORA_BYTES (2M) but under the body cap: the route reads it all and refuses it. (A body over
    # the cap is refused from its Content-Length before it is read, which urllib reports as a broken pipe.)
    status, body, _ = upload(server, "big", os.urandom(2 * 2**20 + 2**19))
    assert status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    names = [item["name"] for item in server.request("GET", "/v1/loras")[1]["data"]]
    assert "bad" not in names and "big" not in names
    assert server.request("GET", "/healthz")[0] == 200


def test_a_lora_is_replaced_only_when_asked_and_can_be_deleted(server: WanServer, lora_bytes: bytes) -> None:
    assert upload(server, "twice", lora_bytes)[0] == 201
    status, body, _ = upload(server, "twice", lora_bytes)
    assert status == 400 and body["error"]["param"] == "name"
    assert upload(server, "twice", lora_bytes, replace="true")[0] == 201
    status, body, _ = server.request("DELETE", "/v1/loras/twice")
    assert status == 200 and body == {"id": "twice", "object": "lora.deleted", "deleted": True}
    assert server.request("DELETE", "/v1/loras/twice")[0] == 404
    status, body, _ = server.request("POST", "/v1/videos", {"prompt": "a fox", "variant": "dev",
                                                             "loras": [{"name": "twice"}]})
    assert status == 400 and body["error"]["param"] == "loras"
    assert any("POST /v1/loras" in hint for hint in body["error"]["suggestions"])


def test_a_missing_lora_named_in_a_form_is_refused_like_in_json(server: WanServer) -> None:
    client = server.openai()
    with pytest.raises(Exception) as caught:
        create(client, loras=[{"name": "absent", "weight": 0.5}])
    assert getattr(caught.value, "status_code", None) == 400
    assert caught.value.body["param"] == "loras"  # type: ignore[attr-defined]
