"""RunSpec validation, failure errors, output tail and init event interpretation."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.errors import BuildStepError, SourceLocation, UsageError
from lamina.sandbox import (
    BindMount,
    RunResult,
    RunSpec,
    TmpfsMount,
    failure_error,
    host_network_files,
)
from lamina.sandbox._runners import _interpret, _Tail


def test_spec_defaults() -> None:
    spec = RunSpec(rootfs=Path("/r"), argv=("/bin/sh", "-c", "true"))
    assert (spec.cwd, spec.user, spec.network, spec.mounts, spec.upper) == (
        "/",
        "",
        "default",
        (),
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": ()}, "needs a command"),
        ({"cwd": "rel"}, "must be absolute"),
        ({"network": "bridge"}, "unknown network mode"),
        ({"upper": Path("/u")}, "both an upper and a work"),
        ({"extra_files": {"etc/hosts": b""}}, "must be absolute"),
    ],
)
def test_spec_rejects(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"rootfs": Path("/r"), "argv": ("true",), **kwargs}
    with pytest.raises(UsageError, match=message):
        RunSpec(**args)  # type: ignore[arg-type]


def test_mount_specs_reject_root_target_and_bad_size() -> None:
    with pytest.raises(UsageError):
        BindMount(source=Path("/x"), target="/")
    with pytest.raises(UsageError):
        TmpfsMount(target="/a/..")
    with pytest.raises(UsageError):
        TmpfsMount(target="/t", size=0)
    assert BindMount(source=Path("/x"), target="/y").readonly


def test_failure_error_names_everything() -> None:
    result = RunResult(exit_code=2, tail=b"one\ntwo\n")
    err = failure_error(
        result,
        command="make all",
        stage="build",
        location=SourceLocation(file="Dockerfile", line=7, text="RUN make all"),
    )
    assert isinstance(err, BuildStepError)
    text = str(err)
    assert text.startswith("Dockerfile:7: stage 'build': RUN make all exited with code 2")
    assert "  one\n  two" in text
    assert not result.ok


def test_failure_error_signal_and_not_found() -> None:
    assert "killed by signal 9" in str(
        failure_error(RunResult(exit_code=137, signal=9), command="x")
    )
    err = failure_error(RunResult(exit_code=127, exec_error="exec: nope"), command="nope")
    assert "could not start: exec: nope" in str(err)
    assert err.hint is not None


def test_tail_keeps_last_20_lines_in_bounded_memory() -> None:
    tail = _Tail()
    for i in range(100_000):
        tail.feed(f"line {i}\n".encode())
    lines = tail.lines().decode().splitlines()
    assert lines == [f"line {i}" for i in range(99_980, 100_000)]
    assert len(tail._buf) <= 2 * 64 * 1024


def test_tail_without_final_newline() -> None:
    tail = _Tail()
    tail.feed(b"a\nb")
    assert tail.lines() == b"a\nb"


def test_interpret_exit_and_exec_error() -> None:
    seen: list[bytes] = []
    status = b'{"event": "exec-error", "message": "exec: \\"x\\": not found"}\n'
    status += b'{"event": "exit", "exit_code": 127, "signal": null}\n'
    result = _interpret(status, 0, _Tail(), seen.append, runner="namespace")
    assert result.exit_code == 127
    assert result.exec_error == 'exec: "x": not found'
    assert seen == [b'lamina: exec: "x": not found\n']


def test_interpret_setup_error_and_silence() -> None:
    status = b'{"event": "error", "message": "overlay mount failed", "hint": "use chroot"}\n'
    with pytest.raises(BuildStepError, match="could not be set up: overlay mount failed") as err:
        _interpret(status, 125, _Tail(), lambda _: None, runner="namespace")
    assert err.value.hint == "use chroot"
    with pytest.raises(BuildStepError, match="without reporting"):
        _interpret(b"", -9, _Tail(), lambda _: None, runner="chroot")


def test_host_network_files(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 1.1.1.1\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost")
    files = host_network_files("sandbox", etc=tmp_path)
    assert files["/etc/resolv.conf"] == b"nameserver 1.1.1.1\n"
    assert files["/etc/hosts"] == b"127.0.0.1 localhost\n127.0.0.1\tsandbox\n"
    assert host_network_files(etc=tmp_path / "missing") == {}
