"""Container detection and the --isolation choices that need no probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lamina.errors import BuildStepError, UsageError
from lamina.fs import IgnoreList
from lamina.sandbox import InPlaceRunner, detect_container, select_runner
from lamina.sandbox._select import auto_in_place


def test_detect_container(tmp_path: Path) -> None:
    assert detect_container({}, root=tmp_path) is None
    assert detect_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, root=tmp_path)
    assert detect_container({"container": "podman"}, root=tmp_path)
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/kubepods/burstable/pod1\n")
    assert "kubepods" in (detect_container(None, root=tmp_path) or "")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").touch()
    assert detect_container(None, root=tmp_path) == "/run/.containerenv exists"


def test_unknown_isolation() -> None:
    with pytest.raises(UsageError, match="unknown --isolation"):
        select_runner("vm", force=False, log=lambda _: None)


def test_none_with_force_or_in_container() -> None:
    assert isinstance(select_runner("none", force=True, log=lambda _: None), InPlaceRunner)
    runner = select_runner("none", force=False, log=lambda _: None, environ={"container": "oci"})
    assert runner.name == "none"
    assert not runner.captures_upper


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("bin", "etc", "kaniko", "proc/self", "usr/lib"):
        (root / d).mkdir(parents=True)
    return root


def test_detect_container_by_runtime_mounts(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    host_mounts = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 0:5 / /proc rw - proc proc rw\n"
    (root / "proc/self/mountinfo").write_text(host_mounts)
    assert detect_container({}, root=root) is None
    (root / "proc/self/mountinfo").write_text(
        host_mounts + "30 22 8:1 /containers/abc/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
    )
    assert detect_container({}, root=root) == "/etc/hostname is a mount point"


def test_none_refusal_says_what_would_be_deleted(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    with pytest.raises(UsageError) as err:
        select_runner(
            "none",
            force=False,
            log=lambda _: None,
            environ={},
            probe_root=root,
            ignore=IgnoreList.of(["/kaniko", "/proc"]),
        )
    message = err.value.message
    assert "outside a container" in message
    assert "/bin, /etc, /usr" in message
    assert "/kaniko" not in message
    assert "/proc" not in message
    assert "--force" in (err.value.hint or "")
    forced = select_runner("none", force=True, log=lambda _: None, environ={}, probe_root=root)
    assert isinstance(forced, InPlaceRunner)
    assert forced.root == Path("/")


def test_auto_never_picks_none_outside_a_container(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    logged: list[str] = []
    with pytest.raises(BuildStepError, match="not a container") as err:
        auto_in_place(
            ["namespace: EPERM"], environ={}, probe_root=root, ignore=None, log=logged.append
        )
    assert "it would delete: /bin, /etc, /kaniko" in (err.value.hint or "")
    # a container without kaniko's layout is not enough either
    shutil.rmtree(root / "kaniko")
    with pytest.raises(BuildStepError):
        auto_in_place(
            ["namespace: EPERM"],
            environ={"container": "podman"},
            probe_root=root,
            ignore=None,
            log=logged.append,
        )
    assert not logged
    (root / "kaniko").mkdir()
    # lamina not installed under /kaniko: a CI container that merely has the directory
    with pytest.raises(BuildStepError, match="not installed under"):
        auto_in_place(
            ["namespace: EPERM"],
            environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
            probe_root=root,
            ignore=None,
            log=logged.append,
        )
    assert not logged
    runner = auto_in_place(
        ["namespace: EPERM"],
        environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
        probe_root=root,
        ignore=None,
        log=logged.append,
        installed_at=root / "kaniko/python/lib/lamina/sandbox/_select.py",
    )
    assert isinstance(runner, InPlaceRunner)
    assert logged == ["isolation: none (in place, as kaniko; EPERM)"]


def test_probe_summaries_are_short_and_name_the_missing_right() -> None:
    from lamina.sandbox._select import NamespaceProbe, _meaning

    mapping = (
        "cannot create the namespaces: [Errno 1] user namespace id mapping: "
        "cannot write uid_map: [Errno 1] Operation not permitted"
    )
    assert _meaning(mapping, root=True) == (
        "mapping root into a user namespace is refused (needs CAP_SETFCAP)"
    )
    assert _meaning(mapping, root=False) == "mapping ids into a user namespace is refused"
    assert _meaning("cannot create the namespaces: [Errno 1] unshare: EPERM", root=True) == (
        "creating namespaces is refused (seccomp, or no rights)"
    )
    assert _meaning("something new\nand more", root=True) == "something new"
    pod = NamespaceProbe(user_namespace=True, reason=None, proc="bound", upper="tmpfs")
    assert pod.describe() == (
        "namespace (a user namespace, the container's /proc, changes staged on a tmpfs)"
    )
    host = NamespaceProbe(user_namespace=False, reason=None, proc="fresh", upper="direct")
    assert host.describe() == "namespace (root)"
