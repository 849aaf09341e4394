"""``InPlaceMounts``: RUN mounts emulated in an in-place root, on a fake tree.

Every test places mounts in a small directory tree, plays the step (writes
into the targets, or replaces them), restores, and checks that the tree is
exactly what it was: same entries, contents, modes and directory mtimes.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path, PurePosixPath

import pytest

from lamina.builder._mounts import CacheLease, InPlaceMounts
from lamina.errors import BuildStepError, SourceLocation
from lamina.fs import Change, IgnoreList, StatIndex, diff

LOC = SourceLocation(file="Dockerfile", line=4)


def _tree(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """path -> (mode, mtime for dirs else 0, content or link target)."""
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (st.st_mode, st.st_mtime_ns, None)
            else:
                out[rel] = (st.st_mode, 0, p.read_bytes())
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/existing").write_text("image\n")
    (r / "work").mkdir()
    (r / "work/mine").write_text("mine\n")
    (r / "link").symlink_to("/work")
    (r / "opt").mkdir()
    old = 1_000_000_000_000_000_000
    for d in (r / "etc", r / "work", r / "opt", r):
        os.utime(d, ns=(old, old))
    return r


def _mounts(root: Path, logged: list[str] | None = None) -> InPlaceMounts:
    return InPlaceMounts(
        root=root, location=LOC, log=(logged.append if logged is not None else lambda _: None)
    )


def test_file_over_an_image_file_and_a_missing_target_then_restore(
    root: Path, tmp_path: Path
) -> None:
    before = _tree(root)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cr3t")
    os.chmod(secret, 0o440)
    em = _mounts(root)
    em.bind(secret, "/etc/existing")
    em.bind(secret, "/run/secrets/tok")
    em.placed()
    assert (root / "etc/existing").read_bytes() == b"s3cr3t"
    assert stat.S_IMODE((root / "run/secrets/tok").stat().st_mode) == 0o440
    (root / "etc/existing").write_text("changed by the step\n")
    em.restore()
    assert _tree(root) == before  # the image's file back, /run gone, times restored


def test_tree_bind_is_a_copy_and_is_logged(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/f").write_text("f\n")
    before = _tree(root)
    logged: list[str] = []
    em = _mounts(root, logged)
    em.bind(src, "/link")  # a symlink in the image is followed, as a mount's target is
    em.placed()
    assert sorted(os.listdir(root / "work")) == ["sub"]
    (root / "work/sub/f").write_text("step\n")
    (root / "work/junk").write_text("junk\n")
    em.restore()
    assert (src / "sub/f").read_text() == "f\n"  # the source never changes
    assert _tree(root) == before
    assert len(logged) == 1
    assert "/link" in logged[0]
    assert "1 file" in logged[0]


def test_tmpfs_is_an_empty_sticky_directory(root: Path) -> None:
    before = _tree(root)
    em = _mounts(root)
    em.tmpfs("/work")
    em.placed()
    assert os.listdir(root / "work") == []
    assert stat.S_IMODE((root / "work").stat().st_mode) == 0o1777
    (root / "work/tmp").write_text("x\n")
    em.restore()
    assert _tree(root) == before


def _lease(tmp_path: Path, name: str) -> CacheLease:
    data = tmp_path / "caches" / name / "data"
    data.mkdir(parents=True)
    (data / "old").write_text("old\n")
    return CacheLease(data=data, discard=False)


def test_cache_is_renamed_in_and_out(root: Path, tmp_path: Path) -> None:
    lease = _lease(tmp_path, "rw")
    inode = lease.data.stat().st_ino
    before = _tree(root)
    em = _mounts(root)
    em.cache(lease, "/work", readonly=False)
    em.placed()
    assert (root / "work").stat().st_ino == inode  # a rename, not a copy
    assert sorted(os.listdir(root / "work")) == ["old"]
    (root / "work/new").write_text("new\n")
    em.restore()
    assert _tree(root) == before
    assert sorted(os.listdir(lease.data)) == ["new", "old"]


def test_read_only_cache_is_a_copy_whose_writes_are_dropped(root: Path, tmp_path: Path) -> None:
    lease = _lease(tmp_path, "ro")
    before = _tree(root)
    em = _mounts(root)
    em.cache(lease, "/var/cache", readonly=True)
    em.placed()
    (root / "var/cache/new").write_text("new\n")
    em.restore()
    assert _tree(root) == before
    assert sorted(os.listdir(lease.data)) == ["old"]


def test_cache_replaced_by_the_step_leaves_an_empty_cache(root: Path, tmp_path: Path) -> None:
    lease = _lease(tmp_path, "gone")
    em = _mounts(root)
    em.cache(lease, "/c", readonly=False)
    em.placed()
    (root / "c/old").unlink()
    (root / "c").rmdir()
    (root / "c").write_text("a file now\n")
    em.restore()
    assert lease.data.is_dir()
    assert os.listdir(lease.data) == []
    assert not (root / "c").exists()


def test_socket_link_and_nested_targets(root: Path, tmp_path: Path) -> None:
    before = _tree(root)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a\n")
    lease = _lease(tmp_path, "nested")
    em = _mounts(root)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "agent.sock"))
        em.link(PurePosixPath("/kaniko/agent.sock"), "/run/agent")
        em.bind(src, "/srv")
        em.cache(lease, "/srv/deps", readonly=False)  # a mount inside a mount
        em.placed()
        assert os.readlink(root / "run/agent") == "/kaniko/agent.sock"
        assert sorted(os.listdir(root / "srv")) == ["a", "deps"]
        (root / "srv/deps/fetched").write_text("f\n")
        em.restore()
    assert _tree(root) == before
    assert sorted(os.listdir(lease.data)) == ["fetched", "old"]


def test_target_below_a_file_is_refused(root: Path, tmp_path: Path) -> None:
    em = _mounts(root)
    with pytest.raises(BuildStepError, match="not a directory") as info:
        em.tmpfs("/etc/existing/sub")
    assert info.value.location == LOC
    with pytest.raises(BuildStepError, match="not a directory") as info:
        em.resolve("/etc/existing/sub/x")
    (root / "up").symlink_to("/")
    with pytest.raises(BuildStepError, match="root directory"):
        em.tmpfs("/up")
    assert info.value.location == LOC
    em.restore()
    assert (root / "etc/existing").read_text() == "image\n"


def test_parent_with_only_a_new_ctime_is_left_out_of_the_changes(
    root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    em = _mounts(root)
    ignore = IgnoreList.of(
        [em.resolve("/etc/new-secret"), em.resolve("/work"), em.resolve("/opt/sub/tmp")]
    )
    old = StatIndex.scan(root, ignore)
    em.bind(secret, "/etc/new-secret")
    em.tmpfs("/work")
    em.tmpfs("/opt/sub/tmp")  # /opt/sub is created, then removed
    em.placed()
    (root / "etc/added-by-step").write_text("kept\n")
    em.restore()
    new = StatIndex.scan(root, ignore)
    kept = diff(old, new)
    # /etc keeps the mtime the step gave it (a real change); /opt only got a new ctime
    assert Change.add("/etc") in kept
    assert Change.add("/etc/added-by-step") in kept
    assert Change.add("/opt") not in kept
    assert not any(str(c.path).startswith("/opt/") for c in kept)
    assert not any(str(c.path).startswith("/work") for c in kept)
    assert em.resolve("/link/x") == PurePosixPath("/work/x")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and chown need root")
def test_tree_copy_remakes_nodes_instead_of_reading_them(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "stage"
    (src / "dev").mkdir(parents=True)
    os.mknod(src / "dev/zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    os.mkfifo(src / "dev/fifo", 0o600)
    (src / "f").write_text("f\n")
    os.chown(src / "f", 12, 34)
    em = _mounts(root)
    em.bind(src, "/mnt")  # reading /dev/zero or the FIFO would never end
    em.placed()
    zero = os.lstat(root / "mnt/dev/zero")
    assert stat.S_ISCHR(zero.st_mode)
    assert zero.st_rdev == os.makedev(1, 5)
    assert stat.S_ISFIFO(os.lstat(root / "mnt/dev/fifo").st_mode)
    f = os.lstat(root / "mnt/f")
    assert (f.st_uid, f.st_gid) == (12, 34)
    em.restore()
    assert not (root / "mnt").exists()


def test_socket_is_hard_linked_and_reaches_the_agent(root: Path, tmp_path: Path) -> None:
    """A chroot cannot follow a symlink out of its root: the agent socket is hard-linked."""
    before = _tree(root)
    sock = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        server.listen(1)
        em = _mounts(root)
        em.socket(sock, "/run/buildkit/ssh_agent.0")
        em.placed()
        placed = root / "run/buildkit/ssh_agent.0"
        assert not placed.is_symlink()
        assert os.lstat(placed).st_ino == os.lstat(sock).st_ino
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(placed))
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
        em.restore()
    assert _tree(root) == before
    assert sock.exists()  # the agent's own socket is left alone
