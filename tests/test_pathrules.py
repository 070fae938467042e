"""PATH_INVALID: manifest paths stay inside the variant folder and are portable (CONTRACT sections 3, 7)."""

from __future__ import annotations

import json

import pytest

from wanstudio.errors import ManifestInvalidError, PathInvalidError
from wanstudio.orchestrator._pathrules import (
    MAX_NAME_BYTES,
    case_collisions,
    fold_name,
    path_problem,
    segment_problem,
    windows_device_name,
)
from wanstudio.orchestrator.manifest import parse_manifest

SHA = "0f" * 32

GOOD_PATHS = [
    "model_index.json",
    "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "tokenizer/tokenizer_config.json",
    "console.json",  # starts like CON, but is not reserved
    "auxiliary/config.json",
    "com10.json",
    "lpt0x.bin",
    "nul_model.bin",
    ".gitattributes",
    "a/b/c/d.txt",
    "name with spaces.json",
    "unicodé.json",
]

BAD_PATHS = {
    "parent": "../x",
    "parent after a folder": "a/../../x",
    "parent in the middle": "a/../b",
    "dot segment": "./x",
    "absolute": "/etc/passwd",
    "drive letter": "C:/x",
    "drive relative": "c:x",
    "unc": "//server/share/x",
    "backslash": "a\\b",
    "backslash traversal": "..\\x",
    "empty": "",
    "empty segment": "a//b",
    "trailing slash": "a/",
    "reserved CON": "CON",
    "reserved nul.txt": "nul.txt",
    "reserved COM1": "COM1",
    "reserved LPT9.json": "vae/LPT9.json",
    "reserved aux": "aux",
    "reserved folder": "prn/config.json",
    "reserved with space before extension": "CON .txt",
    "trailing dot": "config.",
    "trailing space": "config.json ",
    "folder with trailing dot": "vae./x",
    "colon": "a:b",
    "pipe": "a|b",
    "question mark": "a?b",
    "star": "a*b",
    "angle brackets": "a<b>",
    "double quote": 'a"b',
    "control character": "a\x01b",
    "nul character": "a\x00b",
}


def _manifest(*paths: str) -> str:
    files = ", ".join(f"{{ path = {json.dumps(p)}, size = 1, sha256 = {json.dumps(SHA)} }}" for p in paths)
    return f"""\
schema_version = 1
[models."m@1.0"]
family = "wan22"
task = "t2v"
default_variant = "dev"
[models."m@1.0".variants.dev]
files = [{files}]
"""


# -- through the manifest ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_unsafe_manifest_path_is_path_invalid(path: str) -> None:
    with pytest.raises(PathInvalidError) as caught:
        parse_manifest(_manifest("model_index.json", path), origin="test.toml")
    error = caught.value
    assert error.code == "PATH_INVALID" and error.exit_code == 14
    assert not isinstance(error, ManifestInvalidError)
    assert "m@1.0" in error.message and "test.toml" in error.message
    assert repr(path) in error.message
    assert error.suggestions


def test_good_paths_parse() -> None:
    variant = parse_manifest(_manifest(*GOOD_PATHS)).resolve("m").variant()
    assert [f.path for f in variant.files] == GOOD_PATHS


@pytest.mark.parametrize(
    "paths, first, second",
    [
        (("a.json", "A.json"), "a.json", "A.json"),
        (("vae/x", "VAE/y"), "vae", "VAE"),
        (("t/config.json", "t/Config.JSON"), "t/config.json", "t/Config.JSON"),
        (("a", "A/b"), "a", "A"),
    ],
    ids=["files", "folders", "nested files", "file and folder"],
)
def test_case_collision_in_a_variant_is_path_invalid(paths: tuple[str, str], first: str, second: str) -> None:
    with pytest.raises(PathInvalidError) as caught:
        parse_manifest(_manifest(*paths))
    message = caught.value.message
    assert "m@1.0" in message and repr(first) in message and repr(second) in message
    assert "case" in message


def test_same_names_in_different_variants_do_not_collide() -> None:
    int8 = f'[models."m@1.0".variants.int8]\nfiles = [{{ path = "A.json", size = 1, sha256 = "{SHA}" }}]\n'
    text = _manifest("a.json") + int8
    model = parse_manifest(text).resolve("m")
    assert model.variant("dev").files[0].path == "a.json"
    assert model.variant("int8").files[0].path == "A.json"


def test_exact_duplicate_is_manifest_invalid_not_a_case_collision() -> None:
    with pytest.raises(ManifestInvalidError, match="more than once"):
        parse_manifest(_manifest("a.json", "b.json", "a.json"))


def test_hub_variant_paths_are_checked_too() -> None:
    text = _manifest("a.json").replace(
        "files = [", 'hf_allow_patterns = ["*"]\nfiles = [{ path = "../escape", size = 1 }, '
    ) + '[models."m@1.0".hf]\nrepo = "Org/m"\n'
    with pytest.raises(PathInvalidError, match="escape"):
        parse_manifest(text)


# -- the pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_path_problem_accepts_ordinary_paths(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_path_problem_explains_unsafe_paths(path: str) -> None:
    problem = path_problem(path)
    assert isinstance(problem, str) and problem


@pytest.mark.parametrize(
    "path, words",
    [
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("a\\b", "backslash"),
        ("../x", "'..'"),
        ("nul.txt", "reserved"),
        ("x.", "dot or space"),
        ("a|b", "'|'"),
    ],
)
def test_path_problem_says_what_is_wrong(path: str, words: str) -> None:
    assert words in (path_problem(path) or "")


@pytest.mark.parametrize(
    "segment", ["", ".", "..", "CON", "con", "Nul.tar.gz", "COM9", "lpt1.json", "x ", "x.", "a:b", "a\tb"]
)
def test_segment_problem_rejects(segment: str) -> None:
    assert segment_problem(segment)


@pytest.mark.parametrize(
    "segment", ["config.json", "console.json", "COM10", "LPT", "CONX", ".env", "x y", "Ünïcode"]
)
def test_segment_problem_accepts(segment: str) -> None:
    assert segment_problem(segment) is None


@pytest.mark.parametrize("segment", ["COM\u00b9", "lpt\u00b2.txt", "CONIN$", "conout$.json"])
def test_less_known_windows_reserved_names(segment: str) -> None:
    assert segment_problem(segment)


def test_case_collisions() -> None:
    assert case_collisions([]) == []
    assert case_collisions(["a.json", "b.json", "vae/x", "vae/y"]) == []
    assert case_collisions(["a.json", "A.json"]) == [("a.json", "A.json")]
    assert case_collisions(["vae/x", "VAE/y"]) == [("vae", "VAE")]
    assert case_collisions(["t/a", "t/B", "t/b"]) == [("t/B", "t/b")]
    assert case_collisions(["x", "X", "x"]) == [("x", "X")]


# -- additions: COM0/LPT0, name length, Unicode normalisation ------------------------------------------------


@pytest.mark.parametrize("segment", ["COM0", "lpt0.json", "Com0 .txt", "NUL..json", "aux .tar.gz"])
def test_more_reserved_device_names(segment: str) -> None:
    assert "reserved on Windows" in (segment_problem(segment) or "")


@pytest.mark.parametrize(
    "segment, device",
    [("nul.tar.gz", "NUL"), ("COM1 .txt", "COM1"), ("conin$.json", "CONIN$"), ("lpt\u00b3", "LPT\u00b3"),
     ("console.json", None), ("COM10", None), ("LPT", None), (" CON", None), ("CON-1", None)],
)
def test_windows_device_name(segment: str, device: str | None) -> None:
    assert windows_device_name(segment) == device


def test_names_longer_than_255_bytes_are_refused() -> None:
    assert segment_problem("a" * MAX_NAME_BYTES) is None
    assert "255 bytes" in (segment_problem("a" * (MAX_NAME_BYTES + 1)) or "")
    # 128 two-byte characters: 128 characters, but 256 bytes in UTF-8 (the limit ext4 and APFS count in)
    assert "255 bytes" in (segment_problem("\u00e9" * 128) or "")
    assert path_problem("vae/" + "x" * 300 + ".json")


def test_names_differing_only_in_unicode_normalisation_collide() -> None:
    nfc, nfd = "caf\u00e9.json", "cafe\u0301.json"
    assert nfc != nfd
    assert case_collisions([nfc, nfd]) == [(nfc, nfd)]
    assert case_collisions([f"t/{nfc}", f"T/{nfd}"]) == [("t", "T")]
    assert case_collisions(["Stra\u00dfe", "STRASSE"]) == [("Stra\u00dfe", "STRASSE")]  # stricter than NTFS


def test_fold_name() -> None:
    assert fold_name("Config.JSON") == fold_name("config.json")
    assert fold_name("\u00c9") == fold_name("e\u0301")
    assert fold_name("a") != fold_name("b")


def test_unicode_normalisation_collision_in_a_manifest_is_path_invalid() -> None:
    with pytest.raises(PathInvalidError):
        parse_manifest(_manifest("caf\u00e9.json", "cafe\u0301.json"))
