"""NamespaceRunner against a real busybox rootfs (we are root here and in CI)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lamina.errors import BuildStepError
from lamina.sandbox import (
    BindMount,
    NamespaceRunner,
    RunResult,
    RunSpec,
    TmpfsMount,
    host_network_files,
    probe_namespace,
)

BUSYBOX = Path("/bin/busybox")
PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n"

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
    pytest.mark.timeout(120),
]


def make_rootfs(root: Path) -> Path:
    """A minimal image: static busybox with its applet links, passwd and group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (mode, size, mtime_ns) of everything under root."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


class Collected:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if probe_namespace(user_namespace=os.geteuid() != 0) is not None:
        pytest.skip("namespaces are not available on this machine")
    return make_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture
def layer(tmp_path: Path) -> tuple[Path, Path]:
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    return upper, work


def run(
    image: Path,
    layer: tuple[Path, Path] | None,
    script: str,
    **kwargs: object,
) -> tuple[RunResult, str]:
    out = Collected()
    upper, work = layer if layer is not None else (None, None)
    spec = RunSpec(
        rootfs=image,
        upper=upper,
        work=work,
        argv=("/bin/sh", "-c", script),
        **kwargs,  # type: ignore[arg-type]
    )
    result = NamespaceRunner().run(spec, on_output=out)
    return result, out.text


def test_echo_pid1_proc_dev(image: Path, layer: tuple[Path, Path]) -> None:
    before = snapshot(image)
    result, text = run(
        image,
        layer,
        "echo hello; echo pid=$$; ls /proc | grep -c '^[0-9]'; "
        "echo data > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; "
        "test -c /dev/urandom && echo urandom-ok; "
        "test -d /dev/pts && test -d /dev/shm && echo dirs-ok; "
        "readlink /dev/fd; hostname",
    )
    assert result.ok, text
    lines = text.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == "pid=2"  # the init is PID 1, the command its child
    assert int(lines[2]) <= 5  # a fresh /proc: only the sandbox's processes
    assert lines[3:7] == ["null-ok", "4", "urandom-ok", "dirs-ok"]
    assert lines[7] == "/proc/self/fd"
    assert lines[8] == "lamina"
    assert snapshot(image) == before  # the rootfs is untouched


def test_writes_and_deletions_land_in_upper(image: Path, layer: tuple[Path, Path]) -> None:
    before = snapshot(image)
    upper = layer[0]
    result, text = run(
        image, layer, "mkdir -p /opt/app && echo hi > /opt/app/f; rm /bin/ls; rm -r /etc/group"
    )
    assert result.ok, text
    assert (upper / "opt/app/f").read_text() == "hi\n"
    for deleted in ("bin/ls", "etc/group"):
        st = (upper / deleted).lstat()
        assert stat.S_ISCHR(st.st_mode)
        assert st.st_rdev == 0  # overlay whiteout
    assert snapshot(image) == before
    assert not (upper / "proc").exists()
    assert not (upper / "dev").exists()


def test_resolv_conf_visible_but_not_captured(image: Path, layer: tuple[Path, Path]) -> None:
    files = {"/etc/resolv.conf": b"nameserver 192.0.2.53\n", **host_network_files("sandbox")}
    files["/etc/resolv.conf"] = b"nameserver 192.0.2.53\n"
    result, text = run(
        image,
        layer,
        "cat /etc/resolv.conf; grep -c sandbox /etc/hosts; echo x >> /etc/passwd",
        extra_files=files,
    )
    assert result.ok, text
    assert text.splitlines()[:2] == ["nameserver 192.0.2.53", "1"]
    upper = layer[0]
    assert not (upper / "etc/resolv.conf").exists()
    assert not (upper / "etc/hosts").exists()
    assert (upper / "etc/passwd").exists()  # real changes next to them still land
    assert not (image / "etc/resolv.conf").exists()


def test_exit_codes_and_signals(image: Path, layer: tuple[Path, Path]) -> None:
    result, _ = run(image, layer, "echo failing >&2; exit 7")
    assert (result.exit_code, result.signal, result.tail) == (7, None, b"failing\n")
    result, _ = run(image, layer, "kill -TERM $$")
    assert (result.exit_code, result.signal) == (128 + signal.SIGTERM, signal.SIGTERM)


def test_exec_form_path_lookup_in_the_image(image: Path, layer: tuple[Path, Path]) -> None:
    out = Collected()
    (image / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    spec = RunSpec(
        rootfs=image,
        upper=layer[0],
        work=layer[1],
        argv=("busybox", "echo", "exec-form"),
        env={"PATH": "/nowhere:/bin"},
    )
    assert NamespaceRunner().run(spec, on_output=out).ok
    assert out.text == "exec-form\n"
    missing = RunSpec(rootfs=image, upper=layer[0], work=layer[1], argv=("no-such-tool",))
    out = Collected()
    result = NamespaceRunner().run(missing, on_output=out)
    assert result.exit_code == 127
    assert result.exec_error == 'exec: "no-such-tool": executable file not found in $PATH'
    assert "no-such-tool" in out.text


def test_user_workdir_home_env(image: Path, layer: tuple[Path, Path]) -> None:
    result, text = run(
        image,
        layer,
        'id -u; id -g; id -G; echo "$HOME $FOO"; pwd',
        user="alice",
        cwd="/srv/app",
        env={"FOO": "bar", "PATH": "/bin"},
    )
    assert result.ok, text
    assert text.splitlines() == ["1000", "1000", "1000 50", "/home/alice bar", "/srv/app"]
    created = layer[0] / "srv/app"
    assert created.is_dir()
    assert stat.S_IMODE(created.stat().st_mode) == 0o755
    result, text = run(image, layer, "id -u; id -g; echo $HOME", user="4242:77")
    assert text.splitlines() == ["4242", "77", "/"]
    with pytest.raises(BuildStepError, match="unable to find user bob"):
        run(image, layer, "true", user="bob")


def test_background_process_killed(image: Path, layer: tuple[Path, Path]) -> None:
    started = time.monotonic()
    result, _ = run(image, layer, "sleep 76543 & echo started")
    assert result.ok
    assert time.monotonic() - started < 30
    assert not _processes_with("76543")


def _processes_with(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline and int(name) != os.getpid():
                found.append(int(name))
    return found


def test_network_none_has_only_loopback(image: Path, layer: tuple[Path, Path]) -> None:
    result, text = run(
        image, layer, "ls /sys/class/net 2>/dev/null; cat /proc/net/dev", network="none"
    )
    assert result.ok, text
    interfaces = sorted(line.split(":")[0].strip() for line in text.splitlines() if ":" in line)
    assert interfaces == ["lo"]
    result, text = run(image, layer, "ip link show lo", network="none")
    assert "UP" in text


def test_host_network_sees_host_interfaces(image: Path, layer: tuple[Path, Path]) -> None:
    host = Path("/proc/net/dev").read_text().count(":")
    result, text = run(image, layer, "cat /proc/net/dev")
    assert result.ok
    assert text.count(":") == host


def test_bind_and_tmpfs_mounts(image: Path, layer: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("from host\n")
    single = tmp_path / "single.txt"
    single.write_text("one file\n")
    mounts = (
        BindMount(source=src, target="/mnt/ro"),
        BindMount(source=src, target="rw", readonly=False),  # relative to the workdir
        BindMount(source=single, target="/etc/single.txt", readonly=False),
        TmpfsMount(target="/scratch", size=1024 * 1024),
    )
    result, text = run(
        image,
        layer,
        "cat /mnt/ro/data.txt; touch /mnt/ro/x 2>/dev/null || echo ro-ok; "
        "echo changed > rw/data.txt; cat rw/data.txt; echo more >> /etc/single.txt; "
        "echo t > /scratch/t; grep ' /scratch ' /proc/mounts | grep -o 'size=[0-9a-z]*'",
        mounts=mounts,
        cwd="/work",
    )
    assert result.ok, text
    assert text.splitlines() == ["from host", "ro-ok", "changed", "size=1024k"]
    assert (src / "data.txt").read_text() == "from host\n"  # rw changes discarded
    assert single.read_text() == "one file\n"
    upper = layer[0]
    for stub in ("mnt", "work/rw", "scratch", "etc/single.txt"):
        assert not (upper / stub).exists(), stub
    assert not (image / "mnt").exists()


def test_without_overlay_changes_go_to_rootfs_and_stubs_are_removed(
    tmp_path: Path,
) -> None:
    root = make_rootfs(tmp_path / "direct")
    etc_mtime = (root / "etc").stat().st_mtime_ns
    result, text = run(
        root,
        None,
        "echo x > /created; cat /etc/resolv.conf",
        extra_files={"/etc/resolv.conf": b"ns\n"},
    )
    assert result.ok, text
    assert text == "ns\n"
    assert (root / "created").exists()
    assert not (root / "etc/resolv.conf").exists()
    assert not (root / "proc").exists()
    assert (root / "etc").stat().st_mtime_ns == etc_mtime


def test_cancel_from_on_output_kills_everything(image: Path, layer: tuple[Path, Path]) -> None:
    def stop(_: bytes) -> None:
        raise KeyboardInterrupt

    spec = RunSpec(
        rootfs=image,
        upper=layer[0],
        work=layer[1],
        argv=("/bin/sh", "-c", "sleep 65432 & echo go; sleep 65431"),
    )
    with pytest.raises(KeyboardInterrupt):
        NamespaceRunner().run(spec, on_output=stop)
    deadline = time.monotonic() + 10
    while _processes_with("6543") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with("65432")
    assert not _processes_with("65431")


PARENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lamina.sandbox import {runner}, RunSpec
    spec = RunSpec(rootfs=Path(sys.argv[1]), {layer}
                   argv=("/bin/sh", "-c", "sleep 54321 & echo ready; sleep 54320"))
    def out(chunk):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    try:
        {runner}().run(spec, on_output=out)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


def run_parent_and_signal(
    runner: str, root: Path, layer: tuple[Path, Path] | None, sig: int
) -> str:
    layer_args = f"upper=Path({str(layer[0])!r}), work=Path({str(layer[1])!r})," if layer else ""
    scratch = root.parent / "parent-tmp"  # a SIGKILLed parent cannot clean up its temp dir
    scratch.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(runner=runner, layer=layer_args), str(root)],
        stdout=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(sig)
    rest = proc.communicate(timeout=30)[0].decode()
    deadline = time.monotonic() + 10
    while _processes_with("5432") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with("54321")
    assert not _processes_with("54320")
    return rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_parent_interrupted_leaves_no_process(
    image: Path, layer: tuple[Path, Path], sig: int
) -> None:
    rest = run_parent_and_signal("NamespaceRunner", image, layer, sig)
    if sig == signal.SIGINT:
        assert rest == "interrupted\n"


def test_overlay_failure_is_a_clear_error(image: Path, tmp_path: Path) -> None:
    spec = RunSpec(
        rootfs=image, upper=tmp_path / "missing-upper", work=tmp_path / "w", argv=("true",)
    )
    with pytest.raises(BuildStepError, match="overlay mount failed") as err:
        NamespaceRunner().run(spec, on_output=lambda _: None)
    assert err.value.hint is not None
    assert "--isolation=chroot" in err.value.hint


@pytest.mark.slow
def test_snapshot_of_a_big_rootfs_is_fast(tmp_path: Path) -> None:
    """A RUN touching one file of a 100,000-file rootfs: upper holds just that file.

    The cost of the RUN (and of converting upper to a layer) does not grow with
    the rootfs; the time bound is loose because CI machines are shared.
    """
    root = make_rootfs(tmp_path / "big")
    for i in range(100):
        d = root / "data" / str(i)
        d.mkdir(parents=True)
        for j in range(1000):
            (d / str(j)).touch()
    upper, work = tmp_path / "u", tmp_path / "w"
    upper.mkdir()
    work.mkdir()
    started = time.monotonic()
    result, _ = run(root, (upper, work), "echo 1 > /data/5/5")
    elapsed = time.monotonic() - started
    assert result.ok
    changed = list(upper.rglob("*"))
    assert sorted(str(p.relative_to(upper)) for p in changed) == ["data", "data/5", "data/5/5"]
    assert elapsed < 3.0, elapsed


@pytest.mark.skipif(os.geteuid() != 0, reason="root maps every id into its user namespace")
def test_user_namespace_as_root_maps_all_ids(image: Path, layer: tuple[Path, Path]) -> None:
    out = Collected()
    spec = RunSpec(
        rootfs=image,
        upper=layer[0],
        work=layer[1],
        argv=("/bin/sh", "-c", "id -u; id -G; cat /proc/self/uid_map; touch /tmp/owned"),
        user="alice",
    )
    result = NamespaceRunner(user_namespace=True).run(spec, on_output=out)
    assert result.ok, out.text
    lines = out.text.split("\n")
    assert lines[:2] == ["1000", "1000 50"]
    assert lines[2].split() == ["0", "0", "4294967295"]
    assert (layer[0] / "tmp/owned").stat().st_uid == 1000


def test_paths_with_overlay_separators(tmp_path: Path) -> None:
    base = tmp_path / "a,b:c"
    root = make_rootfs(base / "rootfs")
    (base / "up").mkdir()
    (base / "wk").mkdir()
    (base / "src").mkdir()
    (base / "src/f").write_text("in src\n")
    result, text = run(
        root,
        (base / "up", base / "wk"),
        "cat /m/f; echo x > /m/g; touch /z",
        mounts=(BindMount(source=base / "src", target="/m", readonly=False),),
    )
    assert result.ok, text
    assert text == "in src\n"
    assert (base / "up/z").exists()
    assert not (base / "src/g").exists()
