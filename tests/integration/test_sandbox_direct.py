"""ChrootRunner and InPlaceRunner (``--isolation=chroot|none``) and select_runner."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from lamina.errors import NotSupportedError, UsageError
from lamina.sandbox import (
    BindMount,
    ChrootRunner,
    InPlaceRunner,
    NamespaceRunner,
    RunSpec,
    TmpfsMount,
    detect_container,
    probe_mounts,
    select_runner,
)
from tests.integration.test_sandbox_namespace import (
    BUSYBOX,
    Collected,
    _processes_with,
    make_rootfs,
    run_parent_and_signal,
    snapshot,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs")


def chroot_run(root: Path, script: str, **kwargs: object) -> tuple[int, str]:
    out = Collected()
    spec = RunSpec(rootfs=root, argv=("/bin/sh", "-c", script), **kwargs)  # type: ignore[arg-type]
    result = ChrootRunner().run(spec, on_output=out)
    return result.exit_code, out.text


def test_chroot_basics(rootfs: Path) -> None:
    code, text = chroot_run(
        rootfs,
        "echo hi; ls /; id -u; id -G; pwd; echo $HOME",
        user="alice",
        cwd="/home/alice/src",
    )
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == "hi"
    assert "busybox" not in lines[1:]  # we see the image root, not the host's
    assert lines[-4:] == ["1000", "1000 50", "/home/alice/src", "/home/alice"]
    assert (rootfs / "home/alice/src").is_dir()


def test_chroot_exit_code_and_signal(rootfs: Path) -> None:
    assert chroot_run(rootfs, "exit 9")[0] == 9
    out = Collected()
    spec = RunSpec(rootfs=rootfs, argv=("/bin/sh", "-c", "kill -KILL $$"))
    result = ChrootRunner().run(spec, on_output=out)
    assert result.signal == signal.SIGKILL


def test_chroot_extra_files_restored(rootfs: Path) -> None:
    (rootfs / "etc/hosts").write_text("original\n")
    os.utime(rootfs / "etc/hosts", ns=(1, 1_000_000_000))
    etc_mtime = (rootfs / "etc").stat().st_mtime_ns
    before = snapshot(rootfs)
    code, text = chroot_run(
        rootfs,
        "cat /etc/resolv.conf /etc/hosts",
        extra_files={"/etc/resolv.conf": b"nameserver 192.0.2.1\n", "/etc/hosts": b"new\n"},
    )
    assert (code, text) == (0, "nameserver 192.0.2.1\nnew\n")
    assert (rootfs / "etc/hosts").read_text() == "original\n"
    assert not (rootfs / "etc/resolv.conf").exists()
    assert (rootfs / "etc").stat().st_mtime_ns == etc_mtime
    assert snapshot(rootfs) == before


def test_chroot_kills_leftovers_even_after_setsid(rootfs: Path) -> None:
    code, _ = chroot_run(rootfs, "sleep 43210 & setsid sleep 43211 & echo started")
    assert code == 0
    assert not _processes_with("43210")
    assert not _processes_with("43211")


def test_chroot_refuses_what_it_cannot_do(rootfs: Path) -> None:
    with pytest.raises(NotSupportedError, match="--mount"):
        chroot_run(rootfs, "true", mounts=(TmpfsMount(target="/t"),))
    with pytest.raises(NotSupportedError, match="network=none"):
        chroot_run(rootfs, "true", network="none")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_chroot_parent_interrupted_leaves_no_process(rootfs: Path, sig: int) -> None:
    run_parent_and_signal("ChrootRunner", rootfs, None, sig)


def test_in_place_runs_in_slash() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="lamina-inplace-"))
    tmp_path.chmod(0o777)
    marker = tmp_path / "marker"
    out = Collected()
    spec = RunSpec(
        rootfs=Path("/"),
        argv=("sh", "-c", f"id -u; echo $HOME; pwd; touch {marker}; ls {tmp_path}; sleep 32109 &"),
        user="nobody",
        cwd=str(tmp_path / "wd"),
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        result = InPlaceRunner().run(spec, on_output=out)
    finally:
        shutil.rmtree(tmp_path)
    assert result.ok, out.text
    lines = out.text.splitlines()
    assert lines[0] == "65534"
    assert lines[2] == str(tmp_path / "wd")
    assert "marker" in lines
    assert not _processes_with("32109")


def test_in_place_needs_its_own_root(rootfs: Path) -> None:
    with pytest.raises(NotSupportedError, match="other than the runner's root"):
        InPlaceRunner().run(RunSpec(rootfs=rootfs, argv=("true",)), on_output=lambda _: None)


def test_in_place_with_a_test_root_is_chrooted(rootfs: Path) -> None:
    out = Collected()
    spec = RunSpec(rootfs=rootfs, argv=("/bin/sh", "-c", "echo in > /inside; pwd"), cwd="/tmp")
    result = InPlaceRunner(root=rootfs).run(spec, on_output=out)
    assert result.ok, out.text
    assert out.text == "/tmp\n"
    assert (rootfs / "inside").read_text() == "in\n"
    with pytest.raises(NotSupportedError, match="--mount with --isolation=none"):
        InPlaceRunner(root=rootfs).run(
            RunSpec(rootfs=rootfs, argv=("true",), mounts=(TmpfsMount(target="/t"),)),
            on_output=lambda _: None,
        )


def test_select_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    runner = select_runner("auto", force=False, log=logged.append)
    assert isinstance(runner, NamespaceRunner)  # we are root with namespaces here
    assert logged
    assert logged[0].startswith("isolation: namespace")
    assert isinstance(select_runner("chroot", force=False, log=logged.append), ChrootRunner)
    assert isinstance(select_runner("namespace", force=False, log=logged.append), NamespaceRunner)


def test_none_refused_outside_a_container() -> None:
    if detect_container({}) is not None:
        # this machine is a container: the refusal path is covered with a fake root
        from lamina.sandbox._select import _refuse_outside_container

        with pytest.raises(UsageError, match="outside a container"):
            _refuse_outside_container(False, {}, root=Path("/nonexistent"))
        _refuse_outside_container(True, {}, root=Path("/nonexistent"))
        return
    with pytest.raises(UsageError, match="outside a container") as err:
        select_runner("none", force=False, log=lambda _: None)
    assert "--force" in (err.value.hint or "")
    assert isinstance(select_runner("none", force=True, log=lambda _: None), InPlaceRunner)


def test_chroot_without_mount_rights_refuses_mounts(rootfs: Path, tmp_path: Path) -> None:
    """The builder emulates mounts when ``can_mount`` is false; a spec with one is refused."""
    src = tmp_path / "secret"
    src.write_text("s\n")
    spec = RunSpec(
        rootfs=rootfs,
        argv=("/bin/sh", "-c", "true"),
        mounts=(BindMount(source=src, target="/run/secrets/s", readonly=True),),
    )
    with pytest.raises(NotSupportedError, match="no mount rights"):
        ChrootRunner(mount_rights=False).run(spec, on_output=Collected())
    assert not (rootfs / "run/secrets").exists()


@pytest.mark.namespaces
def test_chroot_mount_probe_as_root_with_caps() -> None:
    """The test process is root with CAP_SYS_ADMIN: the probe passes, real mounts are used."""
    assert probe_mounts() is None
    assert ChrootRunner().can_mount
