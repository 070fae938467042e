"""Windows long paths, UNC and WSL path forms, symlinks out of the store, and how far locks reach by mount.

The path rules are pure string functions, so the Windows ones run here on Linux; the symlink tests use
real links in tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wanstudio.errors import PathInvalidError
from wanstudio.orchestrator._fsutil import escaping_links, require_inside, resolves_outside
from wanstudio.orchestrator._posix_locks import classify_locking, lock_scope
from wanstudio.orchestrator.platform_paths import (
    MAX_PATH,
    UncPath,
    is_unc,
    needs_long_path,
    parse_unc,
    strip_long_path_prefix,
    to_windows_long_path,
    windows_length,
    windows_to_wsl,
    wsl_to_windows,
)


def _drive_path(length: int, drive: str = "C:") -> str:
    """An absolute Windows path of exactly `length` characters: C:\\aaaa...\\bbb...."""
    head = f"{drive}\\{'a' * 100}\\"
    return head + "b" * (length - len(head))


# -- Windows long paths --------------------------------------------------------------------------------------


def test_short_paths_are_left_alone_but_get_backslashes() -> None:
    assert to_windows_long_path("C:\\Users\\x\\model.json") == "C:\\Users\\x\\model.json"
    assert to_windows_long_path("C:/Users/x/model.json") == "C:\\Users\\x\\model.json"
    assert to_windows_long_path("//server/share/x") == "\\\\server\\share\\x"
    assert to_windows_long_path("relative/x") == "relative\\x"
    assert to_windows_long_path(Path("a") / "b") == "a\\b"


def test_the_limit_is_max_path_with_its_terminating_nul() -> None:
    longest_plain = _drive_path(MAX_PATH - 1)
    assert len(longest_plain) == 259
    assert to_windows_long_path(longest_plain) == longest_plain
    too_long = _drive_path(MAX_PATH)
    assert to_windows_long_path(too_long) == "\\\\?\\" + too_long


def test_long_drive_paths_get_the_prefix_and_forward_slashes_become_backslashes() -> None:
    path = "C:/" + "/".join(["folder"] * 40) + "/model.safetensors"
    long = to_windows_long_path(path)
    assert long == "\\\\?\\C:\\" + "\\".join(["folder"] * 40) + "\\model.safetensors"
    assert "/" not in long


def test_long_unc_paths_get_the_unc_prefix() -> None:
    rest = "\\".join(["d" * 50] * 6)
    assert to_windows_long_path(f"\\\\server\\share\\{rest}") == f"\\\\?\\UNC\\server\\share\\{rest}"
    forward = rest.replace("\\", "/")
    assert to_windows_long_path(f"//server/share/{forward}") == f"\\\\?\\UNC\\server\\share\\{rest}"


def test_dots_and_doubled_separators_are_resolved_since_the_prefix_turns_normalisation_off() -> None:
    tail = "\\".join(["x" * 60] * 5)
    assert to_windows_long_path(f"C:\\tmp\\.\\skip\\..\\\\{tail}") == f"\\\\?\\C:\\tmp\\{tail}"
    assert to_windows_long_path(f"C:\\..\\..\\{tail}") == f"\\\\?\\C:\\{tail}"  # .. stops at the root
    assert to_windows_long_path(f"\\\\srv\\sh\\..\\{tail}") == f"\\\\?\\UNC\\srv\\sh\\{tail}"


def test_always_prefixes_a_short_absolute_path_as_a_root_for_deep_trees() -> None:
    assert to_windows_long_path("D:/models", always=True) == "\\\\?\\D:\\models"
    assert to_windows_long_path("\\\\nas\\models\\", always=True) == "\\\\?\\UNC\\nas\\models"
    with pytest.raises(ValueError, match="absolute"):
        to_windows_long_path("models", always=True)


def test_folders_have_a_shorter_limit() -> None:
    folder = _drive_path(250)
    assert not needs_long_path(folder)
    assert needs_long_path(folder, directory=True)
    assert to_windows_long_path(folder) == folder
    assert to_windows_long_path(folder, directory=True) == "\\\\?\\" + folder


def test_length_is_counted_in_utf16_units() -> None:
    assert windows_length("\U0001f600") == 2  # outside the BMP: a surrogate pair
    emoji_path = "C:\\" + "\U0001f600" * 129  # 132 characters, 261 UTF-16 units
    assert len(emoji_path) < MAX_PATH <= windows_length(emoji_path)
    assert to_windows_long_path(emoji_path).startswith("\\\\?\\C:\\")


@pytest.mark.parametrize(
    "path",
    [
        "\\\\?\\C:\\" + "x" * 300,
        "\\\\?\\UNC\\s\\sh\\" + "x" * 300,
        "\\\\.\\pipe\\" + "x" * 300,
        "\\\\.\\COM1",
    ],
)
def test_namespaced_paths_are_returned_as_they_are(path: str) -> None:
    assert to_windows_long_path(path) == path


@pytest.mark.parametrize(
    "path, words",
    [("x" * 300, "absolute"), ("C:" + "x" * 300, "absolute"), ("\\" + "x" * 300, "absolute")],
    ids=["relative", "drive relative", "rooted without drive"],
)
def test_long_relative_paths_cannot_be_prefixed(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        to_windows_long_path(path)


def test_long_paths_with_names_ending_in_dot_or_space_are_refused() -> None:
    with pytest.raises(ValueError, match="dot or space"):
        to_windows_long_path(_drive_path(300) + "\\name.")
    with pytest.raises(ValueError, match="dot or space"):
        to_windows_long_path("C:\\folder \\" + "x" * 300)


def test_strip_long_path_prefix() -> None:
    assert strip_long_path_prefix("\\\\?\\C:\\x") == "C:\\x"
    assert strip_long_path_prefix("\\\\?\\UNC\\srv\\sh\\x") == "\\\\srv\\sh\\x"
    assert strip_long_path_prefix("\\\\?\\unc\\srv\\sh") == "\\\\srv\\sh"
    assert strip_long_path_prefix("C:\\x") == "C:\\x"
    assert strip_long_path_prefix("\\\\?\\Volume{1234}\\x") == "\\\\?\\Volume{1234}\\x"
    long = _drive_path(400)
    assert strip_long_path_prefix(to_windows_long_path(long)) == long


# -- UNC -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "\\\\server\\share\\a\\b",
        "//server/share/a/b",
        "\\\\server/share\\a/b",
        "\\\\?\\UNC\\server\\share\\a\\b",
        "\\\\server\\share\\a\\\\.\\b\\",
    ],
)
def test_parse_unc_forms(path: str) -> None:
    unc = parse_unc(path)
    assert unc == UncPath("server", "share", ("a", "b"))
    assert unc.windows == "\\\\server\\share\\a\\b"
    assert unc.posix == "//server/share/a/b"
    assert unc.long == "\\\\?\\UNC\\server\\share\\a\\b"
    assert is_unc(path)


def test_parse_unc_share_root() -> None:
    assert parse_unc("\\\\nas.local\\models") == UncPath("nas.local", "models")
    assert parse_unc("//nas/models/").windows == "\\\\nas\\models"
    assert parse_unc("\\\\10.0.0.5\\d$\\x").share == "d$"


@pytest.mark.parametrize(
    "path, words",
    [
        ("C:\\x", "not a UNC path"),
        ("/mnt/c", "not a UNC path"),
        ("///server/share", "not a UNC path"),
        ("\\\\server", "server and a share"),
        ("\\\\server\\", "server and a share"),
        ("\\\\\\share", "not a UNC path"),
        ("\\\\?\\C:\\x", "device path"),
        ("\\\\.\\pipe\\x", "device path"),
        ("\\\\server\\sh:are", "':'"),
        ("//server/share/a*b", "'\\*'"),
    ],
)
def test_parse_unc_refuses(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_unc(path)
    assert not is_unc(path)


# -- WSL -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wsl, windows",
    [
        ("/mnt/c/Users/x", "C:\\Users\\x"),
        ("/mnt/d/models/wan22", "D:\\models\\wan22"),
        ("/mnt/c", "C:\\"),
        ("/mnt/c/", "C:\\"),
        ("/mnt/c//Users/./x/", "C:\\Users\\x"),
        ("//server/share/models", "\\\\server\\share\\models"),
        ("models/wan22", "models\\wan22"),
        ("../x", "..\\x"),
    ],
)
def test_wsl_to_windows(wsl: str, windows: str) -> None:
    assert wsl_to_windows(wsl) == windows


@pytest.mark.parametrize(
    "windows, wsl",
    [
        ("C:\\Users\\x", "/mnt/c/Users/x"),
        ("c:\\Users\\x", "/mnt/c/Users/x"),
        ("C:/Users/x", "/mnt/c/Users/x"),
        ("D:\\", "/mnt/d"),
        ("C:\\Users\\\\x\\", "/mnt/c/Users/x"),
        ("\\\\server\\share\\models", "//server/share/models"),
        ("\\\\?\\C:\\Users\\x", "/mnt/c/Users/x"),
        ("\\\\?\\UNC\\server\\share\\m", "//server/share/m"),
        ("\\\\wsl.localhost\\Ubuntu\\home\\x", "/home/x"),
        ("\\\\wsl$\\Ubuntu\\home\\x", "/home/x"),
        ("models\\wan22", "models/wan22"),
    ],
)
def test_windows_to_wsl(windows: str, wsl: str) -> None:
    assert windows_to_wsl(windows) == wsl


@pytest.mark.parametrize(
    "windows", ["C:\\Users\\x", "D:\\models\\wan22\\ti2v-5B@2.2.0\\dev", "\\\\nas\\models\\a"]
)
def test_round_trip(windows: str) -> None:
    assert wsl_to_windows(windows_to_wsl(windows)) == windows


def test_a_custom_automount_root() -> None:
    assert wsl_to_windows("/c/Users/x", mount_root="/") == "C:\\Users\\x"
    assert windows_to_wsl("C:\\Users\\x", mount_root="/") == "/c/Users/x"
    assert wsl_to_windows("/win/e/x", mount_root="/win/") == "E:\\x"
    assert windows_to_wsl("E:\\x", mount_root="/win/") == "/win/e/x"


def test_the_distributions_own_files_map_to_wsl_localhost_when_the_distro_is_named() -> None:
    assert wsl_to_windows("/home/x/models", distro="Ubuntu") == "\\\\wsl.localhost\\Ubuntu\\home\\x\\models"
    assert wsl_to_windows("/mnt/wsl/x", distro="Ubuntu") == "\\\\wsl.localhost\\Ubuntu\\mnt\\wsl\\x"
    assert windows_to_wsl("\\\\wsl.localhost\\Ubuntu\\home\\x", distro="ubuntu") == "/home/x"


@pytest.mark.parametrize(
    "path, words",
    [
        ("/home/x", "distro=<name>"),
        ("/mnt", "distro=<name>"),
        ("/mnt/C/Users", "lower case"),
        ("/mnt/c/a:b", "':'"),
        ("/mnt/c/a\\b", "'\\\\\\\\'"),
        ("/mnt/c/x/CON", "reserved"),
        ("/mnt/c/x/file.", "dot or space"),
        ("", "empty"),
    ],
)
def test_wsl_paths_that_have_no_windows_form(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        wsl_to_windows(path)


@pytest.mark.parametrize(
    "path, words",
    [
        ("C:x", "current folder of drive C:"),
        ("c:", "current folder of drive C:"),
        ("\\Users\\x", "current drive"),
        ("\\\\.\\COM1", "device path"),
        ("\\\\?\\Volume{1234}\\x", "device path"),
        ("\\\\server", "share"),
        ("", "empty"),
    ],
)
def test_windows_paths_that_have_no_wsl_form(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        windows_to_wsl(path)


def test_another_distributions_files_are_refused() -> None:
    with pytest.raises(ValueError, match="'Debian', not in 'Ubuntu'"):
        windows_to_wsl("\\\\wsl$\\Debian\\home\\x", distro="Ubuntu")


# -- symlinks out of the store -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "wan22" / "m@1" / "dev" / "vae").mkdir(parents=True)
    (root / "wan22" / "m@1" / "dev" / "vae" / "config.json").write_text("{}")
    (root / ".wan" / "blobs").mkdir(parents=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret").write_text("not a model")
    return folder


def test_real_files_and_links_inside_the_store_stay_inside(store: Path) -> None:
    variant = store / "wan22" / "m@1" / "dev"
    assert not resolves_outside(variant / "vae" / "config.json", store)
    (variant / "alias.json").symlink_to("vae/config.json")
    (variant / "up").symlink_to("..")
    assert not resolves_outside(variant / "alias.json", store)
    assert not resolves_outside(variant / "up" / "dev" / "vae", store)
    assert not resolves_outside(variant / "not-yet-there.json", store)  # judged by its folders
    assert escaping_links(variant, store) == []
    assert require_inside(variant / "alias.json", store, what="test") == variant / "alias.json"


def test_links_out_of_the_store_are_found(store: Path, outside: Path) -> None:
    variant = store / "wan22" / "m@1" / "dev"
    (variant / "vae" / "weights.bin").symlink_to(outside / "secret")
    (variant / "text_encoder").symlink_to(outside)
    (variant / "dangling").symlink_to(outside / "gone")
    (variant / "relative").symlink_to(os.path.relpath(outside / "secret", variant))
    assert resolves_outside(variant / "vae" / "weights.bin", store)
    assert resolves_outside(variant / "text_encoder" / "model.safetensors", store)  # through a linked folder
    assert resolves_outside(variant / "dangling", store)
    assert resolves_outside(variant / "relative", store)
    assert escaping_links(variant, store) == ["dangling", "relative", "text_encoder", "vae/weights.bin"]


def test_a_linked_store_folder_counts_as_leaving(store: Path, outside: Path) -> None:
    (store / ".wan" / "tmp").symlink_to(outside)
    assert resolves_outside(store / ".wan" / "tmp" / "stage-1", store)
    with pytest.raises(PathInvalidError) as caught:
        require_inside(store / ".wan" / "tmp" / "stage-1", store, what="staging folder")
    error = caught.value
    assert error.code == "PATH_INVALID"
    assert "staging folder" in error.message and "symbolic link" in error.message
    assert str(outside) in error.message
    assert any("MODELS_ROOT" in s for s in error.suggestions)


def test_a_variant_folder_that_is_itself_a_link_out_is_reported_as_dot(store: Path, outside: Path) -> None:
    (store / "wan22" / "m@1" / "int8").symlink_to(outside)
    assert escaping_links(store / "wan22" / "m@1" / "int8", store) == ["."]


def test_the_root_itself_may_be_a_link(store: Path, tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "models-link"
    link.symlink_to(store)
    config = link / "wan22" / "m@1" / "dev" / "vae" / "config.json"
    assert not resolves_outside(config, link)
    assert not resolves_outside(config, store)
    assert not resolves_outside(store / "wan22", link)
    assert resolves_outside(outside / "secret", link)


def test_a_sibling_with_a_common_prefix_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    sibling = tmp_path / "models-old"
    sibling.mkdir()
    (root / "x").symlink_to(sibling)
    assert resolves_outside(root / "x", root)


def test_a_symlink_loop_counts_as_inside(store: Path) -> None:
    (store / "a").symlink_to(store / "b")
    (store / "b").symlink_to(store / "a")
    assert not resolves_outside(store / "a", store)


# -- how far locks reach -------------------------------------------------------------------------------------

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid 0 0
nas:/export/models /mnt/nfs nfs4 rw,vers=4.2,hard,proto=tcp,local_lock=none 0 0
nas:/export/old /mnt/nfs3 nfs rw,vers=3,nolock,local_lock=all 0 0
10.0.0.1@tcp:/lfs /lustre lustre rw,flock,lazystatfs 0 0
10.0.0.1@tcp:/lfs2 /lustre-local lustre rw,localflock 0 0
10.0.0.1@tcp:/lfs3 /lustre-none lustre rw,noflock 0 0
10.0.0.1@tcp:/lfs4 /lustre-default lustre rw,lazystatfs 0 0
gpfs1 /gpfs gpfs rw,relatime 0 0
C:\\134 /mnt/c 9p rw,dirsync,aname=drivers 0 0
//nas/share /mnt/smb cifs rw,vers=3.1.1 0 0
//nas/share /mnt/smb-nobrl cifs rw,nobrl 0 0
beegfs_nodev /beegfs beegfs rw 0 0
sshfs#me@h: /mnt/ssh fuse.sshfs rw 0 0
/dev/sdb1 /mnt/data\\040disk xfs rw 0 0
"""


@pytest.mark.parametrize(
    "path, fstype, reach",
    [
        ("/home/x", "ext4", "local"),
        ("/tmp/x", "tmpfs", "local"),
        ("/mnt/nfs/models", "nfs4", "cluster"),
        ("/mnt/nfs3/models", "nfs", "host"),
        ("/lustre/models", "lustre", "cluster"),
        ("/lustre-local/models", "lustre", "host"),
        ("/lustre-none/models", "lustre", "none"),
        ("/lustre-default/models", "lustre", "unknown"),
        ("/gpfs/models", "gpfs", "cluster"),
        ("/mnt/c/Users", "9p", "host"),
        ("/mnt/smb/m", "cifs", "cluster"),
        ("/mnt/smb-nobrl/m", "cifs", "host"),
        ("/beegfs/m", "beegfs", "unknown"),
        ("/mnt/ssh/m", "fuse.sshfs", "unknown"),
        ("/mnt/data disk/m", "xfs", "local"),
        ("/mnt/nfsx", "ext4", "local"),  # a name sharing a prefix with a mount point is not under it
    ],
)
def test_lock_scope_by_mount(path: str, fstype: str, reach: str) -> None:
    found = lock_scope(path, MOUNTS)
    assert (found.fstype, found.reach) == (fstype, reach)
    assert found.note


def test_lock_scope_notes_say_what_to_do() -> None:
    assert "-o flock" in lock_scope("/lustre-none/x", MOUNTS).note
    assert "-o flock" in lock_scope("/lustre-local/x", MOUNTS).note
    assert "nolock" in lock_scope("/mnt/nfs3/x", MOUNTS).note
    assert classify_locking("nfs4", ["rw", "local_lock=posix"])[0] == "host"
    assert classify_locking("nfs4", ["rw", "local_lock=flock"])[0] == "cluster"  # only flock() stays local


def test_lock_scope_of_this_machine_and_without_mount_table(tmp_path: Path) -> None:
    here = lock_scope(tmp_path)
    assert here.mount_point and here.fstype and here.reach in ("local", "cluster", "host", "none", "unknown")
    assert lock_scope(tmp_path, "").reach == "unknown"
