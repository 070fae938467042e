"""The test servers themselves: FakeHub speaks the Hub protocol huggingface_hub expects, faults and
accounting are observable, and FaultProxy works in front of the fake Hub and of moto's S3."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from fakehub import FakeHub, FaultPlan, FaultProxy
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

TOKEN = "hf_goodtoken123"
REPO = "Wan-AI/toy"
_random = random.Random(1234)
FILES: dict[str, bytes] = {
    "model_index.json": b'{"_class_name": "WanPipeline"}',
    "transformer/config.json": b'{"num_layers": 2}',
    "transformer/diffusion_pytorch_model.safetensors": _random.randbytes(300_000),
    "vae/diffusion_pytorch_model.safetensors": _random.randbytes(5_000),  # LFS by suffix, though small
    "text_encoder/spiece.model": _random.randbytes(20_000),  # LFS by size
}
LFS = {path for path in FILES if path.endswith(".safetensors") or len(FILES[path]) > 10_000}
BIG = "transformer/diffusion_pytorch_model.safetensors"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    digest = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(content)}\n".encode()


def fetch(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on a fresh connection; the body is read whole (IncompleteRead if cut short)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(
            method, f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers or {}
        )
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def hf_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub(tmp_path / "hub-data", tokens={TOKEN}) as hub:
        yield hub


def api(hub: FakeHub | FaultProxy, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def download(hub: FakeHub, tmp_path: Path, filename: str, **kwargs: Any) -> bytes:
    kwargs.setdefault("token", False)
    path = hf_hub_download(REPO, filename, cache_dir=tmp_path / "cache", endpoint=hub.url, **kwargs)
    return Path(path).read_bytes()


def cdn_location(hub: FakeHub, path: str) -> str:
    response, _ = fetch(hub.resolve_url(REPO, path), method="HEAD")
    assert response.status == 302
    return response.headers["Location"]


# ------------------------------------------------------------------------------------------ Hub API


def test_model_info_lists_sizes_blob_ids_and_lfs_digests(hub: FakeHub) -> None:
    sha = hub.add_repo(REPO, FILES)

    info = api(hub).model_info(REPO, files_metadata=True)

    assert (info.id, info.sha, info.private, info.gated) == (REPO, sha, False, False)
    assert info.last_modified is not None
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(FILES)
    for path, content in FILES.items():
        sibling = siblings[path]
        assert sibling.size == len(content)
        if path in LFS:
            assert sibling.lfs is not None
            assert sibling.lfs.sha256 == hashlib.sha256(content).hexdigest()
            assert (sibling.lfs.size, sibling.lfs.pointer_size) == (len(content), len(lfs_pointer(content)))
            assert sibling.blob_id == git_blob_id(lfs_pointer(content))
        else:
            assert sibling.lfs is None
            assert sibling.blob_id == git_blob_id(content)
    plain = api(hub).model_info(REPO)
    assert all(s.size is None and s.blob_id is None for s in plain.siblings or [])
    only_sha = api(hub).model_info(REPO, expand=["sha"])
    assert (only_sha.sha, only_sha.siblings) == (sha, None)


def test_list_repo_tree_follows_link_pagination(hub: FakeHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    hub.page_size = 2

    entries = list(api(hub).list_repo_tree(REPO, recursive=True))

    files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    assert set(files) == set(FILES)
    for path, content in FILES.items():
        assert files[path].size == len(content)
        if path in LFS:
            lfs = files[path].lfs
            assert lfs is not None and (lfs.sha256, lfs.size) == (
                hashlib.sha256(content).hexdigest(),
                len(content),
            )
            assert files[path].blob_id == git_blob_id(lfs_pointer(content))
        else:
            assert files[path].lfs is None and files[path].blob_id == git_blob_id(content)
    assert {e.path for e in entries if isinstance(e, RepoFolder)} == {"transformer", "vae", "text_encoder"}
    pages = [r for r in hub.requests if "/tree/" in r.path]
    assert len(pages) == 4  # 8 entries, 2 per page
    assert all("cursor=" in r.path for r in pages[1:])

    top = {e.path for e in api(hub).list_repo_tree(REPO)}
    assert top == {"model_index.json", "transformer", "vae", "text_encoder"}
    inside = list(api(hub).list_repo_tree(REPO, "transformer", revision=sha, expand=True))
    assert {e.path for e in inside} == {"transformer/config.json", BIG}
    assert all(e.last_commit is not None and e.last_commit.oid == sha for e in inside)
    with pytest.raises(EntryNotFoundError):
        list(api(hub).list_repo_tree(REPO, "nowhere"))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_directory_ids_are_real_git_tree_ids(hub: FakeHub, tmp_path: Path) -> None:
    files = {"a.txt": b"a\n", "sub/b.txt": b"b\n", "sub/deeper/c.json": b"{}", "sub.txt": b"s"}
    hub.add_repo(REPO, files)
    work = tmp_path / "git"
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(content)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "add", "."], check=True)
    tree = subprocess.run(["git", "-C", str(work), "write-tree"], check=True, capture_output=True, text=True)

    folders = {
        e.path: e.tree_id for e in api(hub).list_repo_tree(REPO, recursive=True) if isinstance(e, RepoFolder)
    }

    for folder in ("sub", "sub/deeper"):
        expected = subprocess.run(
            ["git", "-C", str(work), "rev-parse", f"{tree.stdout.strip()}:{folder}"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert folders[folder] == expected.stdout.strip()


def test_get_paths_info_returns_existing_paths_only(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)

    found = api(hub).get_paths_info(REPO, [BIG, "transformer", "missing.bin"])

    assert [type(e) for e in found] == [RepoFile, RepoFolder]
    big = found[0]
    assert isinstance(big, RepoFile) and big.size == len(FILES[BIG])
    assert big.lfs is not None and big.lfs.sha256 == hashlib.sha256(FILES[BIG]).hexdigest()


def test_a_new_commit_moves_the_branch_and_old_commits_still_resolve(hub: FakeHub, tmp_path: Path) -> None:
    first = hub.add_repo(REPO, FILES)
    second = hub.add_repo(REPO, {"model_index.json": b'{"v": 2}'})

    assert first != second
    assert api(hub).model_info(REPO).sha == second
    assert {s.rfilename for s in api(hub).model_info(REPO, revision=first).siblings or []} == set(FILES)
    assert download(hub, tmp_path, "model_index.json") == b'{"v": 2}'
    assert download(hub, tmp_path, "model_index.json", revision=first) == FILES["model_index.json"]
    assert download(hub, tmp_path, BIG, revision=first) == FILES[BIG]
    with pytest.raises(EntryNotFoundError):
        download(hub, tmp_path, BIG)
    with pytest.raises(RevisionNotFoundError):
        api(hub).model_info(REPO, revision="v9")


# ----------------------------------------------------------------------------------------- downloads


def test_snapshot_and_single_file_downloads_are_byte_identical(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)
    wanted = ["model_index.json", "transformer/config.json", BIG]

    folder = snapshot_download(
        REPO,
        allow_patterns=["*.json", "transformer/*"],
        cache_dir=tmp_path / "snap",
        endpoint=hub.url,
        token=False,
    )

    got = {p.relative_to(folder).as_posix(): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}
    assert got == {path: FILES[path] for path in wanted}
    assert (
        download(hub, tmp_path, "vae/diffusion_pytorch_model.safetensors")
        == FILES["vae/diffusion_pytorch_model.safetensors"]
    )


def test_a_big_file_given_as_a_path_is_linked_and_served_from_disk(hub: FakeHub, tmp_path: Path) -> None:
    source = tmp_path / "weights.safetensors"
    source.write_bytes(os.urandom(6 << 20))
    hub.add_repo(REPO, {"weights.safetensors": source})

    assert download(hub, tmp_path, "weights.safetensors") == source.read_bytes()
    blob = hub.data_dir / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
    assert blob.stat().st_ino == source.stat().st_ino
    assert hub.bytes_served("weights.safetensors") == 6 << 20


def test_private_repo_needs_a_valid_token_and_the_token_never_reaches_the_cdn(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.add_repo(REPO, FILES, private=True)

    with pytest.raises(RepositoryNotFoundError) as no_token:
        api(hub).model_info(REPO)
    assert type(no_token.value) is RepositoryNotFoundError
    assert no_token.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, "model_index.json")
    with pytest.raises(HfHubHTTPError) as bad_token:
        api(hub, token="hf_wrong").model_info(REPO)
    assert not isinstance(bad_token.value, RepositoryNotFoundError)
    assert bad_token.value.response.status_code == 401
    assert "Invalid credentials" in str(bad_token.value)
    with pytest.raises(RepositoryNotFoundError) as unknown:
        api(hub, token=TOKEN).model_info("Wan-AI/unknown")
    assert unknown.value.response.status_code == 404

    hub.reset_stats()
    assert api(hub, token=TOKEN).model_info(REPO).private is True
    assert download(hub, tmp_path, BIG, token=TOKEN) == FILES[BIG]
    head, cdn_get = [r for r in hub.requests if r.file == BIG]
    assert (head.server, head.method, head.status, head.authorization) == (
        "hub",
        "HEAD",
        302,
        f"Bearer {TOKEN}",
    )
    assert (cdn_get.server, cdn_get.method, cdn_get.status) == ("cdn", "GET", 200)
    assert not cdn_get.has_authorization


def test_gated_repo_lists_publicly_but_serves_files_only_with_a_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, gated=True)

    assert api(hub).model_info(REPO).gated == "auto"
    with pytest.raises(GatedRepoError):
        download(hub, tmp_path, "model_index.json")
    with pytest.raises(GatedRepoError):
        snapshot_download(REPO, cache_dir=tmp_path / "snap", endpoint=hub.url, token=False)
    assert download(hub, tmp_path, BIG, token=TOKEN) == FILES[BIG]


def test_unknown_repo_and_file(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)

    with pytest.raises(RepositoryNotFoundError):
        api(hub).model_info("Wan-AI/nothing")
    with pytest.raises(EntryNotFoundError):
        download(hub, tmp_path, "missing.json")
    response, body = fetch(hub.resolve_url(REPO, "missing.json"))
    assert (response.status, response.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert json.loads(body) == {"error": "Entry not found"}
    assert response.headers["X-Repo-Commit"] == api(hub).model_info(REPO).sha


# ------------------------------------------------------------------------------- resolve, cdn, ranges


def test_resolve_headers_ranges_and_keep_alive(hub: FakeHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    content = FILES["model_index.json"]
    parts = urlsplit(hub.resolve_url(REPO, "model_index.json"))
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)

    def get(range_header: str | None = None, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        connection.request(method, parts.path, headers={"Range": range_header} if range_header else {})
        response = connection.getresponse()
        return response, response.read()

    head, _ = get(method="HEAD")
    kept_socket = connection.sock
    assert head.status == 200
    assert head.headers["ETag"] == f'"{git_blob_id(content)}"'
    assert head.headers["X-Repo-Commit"] == sha
    assert (head.headers["Content-Length"], head.headers["Accept-Ranges"]) == (str(len(content)), "bytes")
    assert get()[1] == content
    for header, expected in (
        ("bytes=2-5", content[2:6]),
        ("bytes=7-", content[7:]),
        ("bytes=-4", content[-4:]),
    ):
        response, body = get(header)
        assert (response.status, body) == (206, expected)
    response, _ = get("bytes=2-5")
    assert response.headers["Content-Range"] == f"bytes 2-5/{len(content)}"
    response, _ = get(f"bytes={len(content)}-")
    assert (response.status, response.headers["Content-Range"]) == (416, f"bytes */{len(content)}")
    assert connection.sock is kept_socket  # every answer kept the connection open
    connection.close()


def test_lfs_resolve_redirects_to_a_signed_cdn_url_that_serves_ranges(hub: FakeHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    content = FILES[BIG]
    digest = hashlib.sha256(content).hexdigest()

    response, _ = fetch(hub.resolve_url(REPO, BIG), method="HEAD")

    assert response.status == 302
    assert response.headers["X-Linked-Etag"] == f'"{digest}"'
    assert response.headers["X-Linked-Size"] == str(len(content))
    assert response.headers["X-Repo-Commit"] == sha
    location = response.headers["Location"]
    assert location.startswith(f"{hub.cdn_url}/cdn/{digest}?")
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and len(query["X-Amz-Signature"]) == 64
    cdn, body = fetch(location, headers={"Range": "bytes=10-19"})
    assert (cdn.status, body, cdn.headers["ETag"]) == (206, content[10:20], f'"{digest}"')
    assert fetch(location)[1] == content
    assert fetch(location, headers={"Range": f"bytes={len(content)}-"})[0].status == 416


def test_cdn_refuses_missing_wrong_and_expired_signatures(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    location = cdn_location(hub, BIG)
    parts = urlsplit(location)
    query = dict(parse_qsl(parts.query))

    def with_query(params: dict[str, str]) -> str:
        return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}"

    unsigned = {k: v for k, v in query.items() if k != "X-Amz-Signature"}
    for url, code in (
        (with_query(unsigned), "AccessDenied"),
        (with_query({**query, "X-Amz-Signature": "0" * 64}), "SignatureDoesNotMatch"),
    ):
        response, body = fetch(url)
        assert response.status == 403 and f"<Code>{code}</Code>" in body.decode()
    hub.signed_url_ttl = 0
    expiring = cdn_location(hub, BIG)
    time.sleep(0.05)
    response, body = fetch(expiring)
    assert response.status == 403 and b"expired" in body
    assert fetch(location)[0].status == 200


# ------------------------------------------------------------------------------------------- faults


def test_corrupt_keeps_the_length_and_flips_bytes_once(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.add("*.safetensors", "corrupt")
    location = cdn_location(hub, BIG)

    response, body = fetch(location)

    assert response.status == 200 and len(body) == len(FILES[BIG])
    changed = [i for i in range(len(body)) if body[i] != FILES[BIG][i]]
    assert changed and changed[0] >= len(body) // 2
    assert fetch(location)[1] == FILES[BIG]
    assert hub.faults.triggered == [("corrupt", BIG)]


def test_truncate_closes_the_connection_after_some_bytes(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.add(BIG, "truncate", after_bytes=1000)

    with pytest.raises(http.client.IncompleteRead) as cut:
        fetch(cdn_location(hub, BIG))

    assert len(cut.value.partial) == 1000
    assert hub.bytes_served(BIG) == 1000
    hub.faults.add("model_index.json", "truncate")
    with pytest.raises(http.client.IncompleteRead) as half:
        fetch(hub.resolve_url(REPO, "model_index.json"))
    assert len(half.value.partial) == len(FILES["model_index.json"]) // 2


def test_rate_limit_and_server_error_answer_json_with_their_status(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.add("model_index.json", "rate_limit", retry_after=7)
    hub.faults.add("model_index.json", "server_error", status=503)
    url = hub.resolve_url(REPO, "model_index.json")

    limited, body = fetch(url)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "7")
    assert "error" in json.loads(body)
    failed, body = fetch(url)
    assert failed.status == 503 and "error" in json.loads(body)
    assert fetch(url)[1] == FILES["model_index.json"]
    assert [kind for kind, _ in hub.faults.triggered] == ["rate_limit", "server_error"]


def test_slow_and_throttle_limit_the_rate_but_complete(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    location = cdn_location(hub, "text_encoder/spiece.model")  # 20 kB
    hub.faults.add("text_encoder/*", "slow", bytes_per_second=80_000)

    started = time.monotonic()
    assert fetch(location)[1] == FILES["text_encoder/spiece.model"]
    assert time.monotonic() - started >= 0.2

    hub.throttle_bytes_per_second = 80_000
    started = time.monotonic()
    assert fetch(location)[1] == FILES["text_encoder/spiece.model"]
    assert time.monotonic() - started >= 0.2


def test_stall_sends_some_bytes_then_hangs(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.add(BIG, "stall", after_bytes=100, seconds=5)
    parts = urlsplit(cdn_location(hub, BIG))
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=0.3)
    connection.request("GET", f"{parts.path}?{parts.query}")
    response = connection.getresponse()

    assert response.read(100) == FILES[BIG][:100]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        response.read(1)
    assert time.monotonic() - started >= 0.25
    connection.close()


def test_faults_match_patterns_count_down_and_skip_heads_and_redirects(hub: FakeHub) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.add("transformer/*", "server_error", times=2)
    big_url = hub.resolve_url(REPO, BIG)

    assert fetch(hub.resolve_url(REPO, "model_index.json"))[0].status == 200  # no match
    assert fetch(hub.resolve_url(REPO, "transformer/config.json"), method="HEAD")[0].status == 200
    assert fetch(big_url)[0].status == 302  # a redirect has no body: the fault waits for the CDN
    assert fetch(cdn_location(hub, BIG))[0].status == 500
    assert fetch(hub.resolve_url(REPO, "transformer/config.json"))[0].status == 500
    assert fetch(hub.resolve_url(REPO, "transformer/config.json"))[0].status == 200
    hub.faults.add("*", "server_error")
    hub.faults.clear()
    assert fetch(hub.resolve_url(REPO, "model_index.json"))[0].status == 200
    assert hub.faults.triggered == [("server_error", BIG), ("server_error", "transformer/config.json")]


def test_fault_plan_rejects_unknown_kinds_and_options() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.add("*", "explode")
    with pytest.raises(TypeError):
        plan.add("*", "corrupt", after_bytes=3)
    with pytest.raises(TypeError):
        plan.add("*", "slow")
    with pytest.raises(ValueError):
        plan.add("*", "truncate", times=0)


def test_hf_hub_download_resumes_a_truncated_body_from_its_last_whole_chunk(
    hub: FakeHub, tmp_path: Path
) -> None:
    """huggingface_hub writes 10 MiB chunks: after a cut it asks for the rest from the last whole chunk."""
    content = os.urandom(12 << 20)
    hub.add_repo(REPO, {"big.safetensors": content})
    hub.faults.add("big.safetensors", "truncate", after_bytes=11 << 20)

    assert download(hub, tmp_path, "big.safetensors") == content

    cdn_gets = [(r.range, r.body_bytes) for r in hub.requests if r.server == "cdn"]
    assert cdn_gets == [(None, 11 << 20), (f"bytes={10 << 20}-", 2 << 20)]


# --------------------------------------------------------------------------------------- accounting


def test_accounting_counts_content_bytes_and_requests(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)
    snapshot_download(REPO, cache_dir=tmp_path / "snap", endpoint=hub.url, token=False)

    assert hub.bytes_served() == sum(len(c) for c in FILES.values())
    assert hub.bytes_served(BIG) == len(FILES[BIG])
    assert all(hub.get_count(path) == 1 for path in FILES)
    fetch(hub.resolve_url(REPO, "model_index.json"), headers={"Range": "bytes=0-3"})
    assert hub.bytes_served("model_index.json") == len(FILES["model_index.json"]) + 4
    assert hub.get_count("model_index.json") == 2
    assert all(not r.has_authorization for r in hub.requests)

    hub.reset_stats()
    assert (hub.bytes_served(), hub.requests, hub.get_count(BIG)) == (0, [], 0)


# -------------------------------------------------------------------------------------------- proxy


def test_proxy_in_front_of_the_hub_forwards_host_so_links_stay_on_the_proxy(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.add_repo(REPO, FILES)
    hub.page_size = 2
    with FaultProxy(hub.url) as proxy:
        entries = list(api(proxy).list_repo_tree(REPO, recursive=True))
        proxy.faults.add("*/model_index.json", "corrupt")
        path = hf_hub_download(
            REPO, "model_index.json", cache_dir=tmp_path / "cache", endpoint=proxy.url, token=False
        )

        assert len(entries) == 8
        assert len([r for r in proxy.requests if "/tree/" in r.path]) == 4  # next pages came back through
        assert Path(path).read_bytes() != FILES["model_index.json"]
        assert proxy.faults.triggered == [("corrupt", f"/{REPO}/resolve/main/model_index.json")]


@pytest.fixture
def s3_proxy(moto_endpoint: str) -> Iterator[tuple[FaultProxy, Any, str, bytes]]:
    """A proxy in front of moto, an S3 client using it, a presigned URL of an object and its bytes."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    with FaultProxy(moto_endpoint) as proxy:
        s3 = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(signature_version="s3v4"),
        )
        bucket = f"models-{os.urandom(4).hex()}"
        s3.create_bucket(Bucket=bucket)
        data = os.urandom(200_000)
        s3.put_object(Bucket=bucket, Key="wan/model.bin", Body=data)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "wan/model.bin"})
        yield proxy, s3, url, data


def test_proxy_carries_boto3_and_presigned_gets_to_moto(s3_proxy: tuple[FaultProxy, Any, str, bytes]) -> None:
    proxy, s3, url, data = s3_proxy
    key_path = urlsplit(url).path

    bucket = key_path.split("/")[1]
    assert s3.get_object(Bucket=bucket, Key="wan/model.bin")["Body"].read() == data
    assert "X-Amz-Signature=" in url and url.startswith(proxy.url)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == data
    ranged = urllib.request.Request(url, headers={"Range": "bytes=5-9"})
    with urllib.request.urlopen(ranged, timeout=5) as response:
        assert (response.status, response.read()) == (206, data[5:10])
    assert proxy.bytes_served(key_path) == 2 * len(data) + 5
    assert proxy.get_count(key_path) == 3
    assert any(r.method == "PUT" and r.path == key_path and r.status == 200 for r in proxy.requests)


def test_proxy_applies_each_fault_to_presigned_gets(s3_proxy: tuple[FaultProxy, Any, str, bytes]) -> None:
    proxy, _, url, data = s3_proxy
    faults = proxy.faults

    faults.add("*.bin", "corrupt")
    with urllib.request.urlopen(url, timeout=5) as response:
        corrupted = response.read()
    assert len(corrupted) == len(data) and corrupted != data

    faults.add("*.bin", "truncate", after_bytes=5000)
    with pytest.raises(http.client.IncompleteRead), urllib.request.urlopen(url, timeout=5) as response:
        response.read()

    faults.add("*.bin", "rate_limit", retry_after=2)
    with pytest.raises(urllib.error.HTTPError) as limited:
        urllib.request.urlopen(url, timeout=5)
    assert (limited.value.code, limited.value.headers["Retry-After"]) == (429, "2")

    faults.add("*.bin", "server_error", status=502)
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(url, timeout=5)
    assert failed.value.code == 502

    faults.add("*.bin", "slow", bytes_per_second=800_000)
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == data
    assert time.monotonic() - started >= 0.2

    faults.add("*.bin", "stall", after_bytes=10, seconds=5)
    with pytest.raises(TimeoutError), urllib.request.urlopen(url, timeout=0.3) as response:
        response.read()

    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == data
    assert [kind for kind, _ in faults.triggered] == [
        "corrupt",
        "truncate",
        "rate_limit",
        "server_error",
        "slow",
        "stall",
    ]
