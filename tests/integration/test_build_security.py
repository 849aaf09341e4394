"""RUN --security=sandbox|insecure, the --allow entitlement, and /sys in the sandbox."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lamina.errors import UsageError
from lamina.registry import RegistryClient
from tests.integration.test_build_engine import make_context, run_build

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

#: CapBnd of BuildKit's default set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
#: SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP)
DEFAULT_CAPS = 0x00000000A80425FB

PROBE = (
    "RUN{flag} grep CapBnd /proc/self/status > /capbnd "
    "&& grep ' /sys ' /proc/mounts > /sysmount && ls /sys/kernel > /syskernel "
    "&& ls /dev > /devlist\n"
)


def _host_capbnd() -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(r"^CapBnd:\s*([0-9a-f]+)$", text, re.M)
    assert match is not None
    return int(match.group(1), 16)


def _probe(
    tmp_path: Path,
    client: RegistryClient,
    busybox_image: str,
    flag: str,
    allow: tuple[str, ...] = (),
) -> dict[str, str]:
    ctx = make_context(tmp_path / "ctx", f"FROM {busybox_image}\n" + PROBE.format(flag=flag))
    built = run_build(tmp_path, ctx, registry=client, isolation="namespace", allow=allow)
    layer = len(built.image.layers()) - 1
    names = built.layer_files(layer)
    assert not any(n == "sys" or n.startswith("sys/") for n in names), sorted(names)
    return {
        name: built.read_file(layer, name).decode()
        for name in ("capbnd", "sysmount", "syskernel", "devlist")
    }


def test_sandbox_keeps_buildkits_capabilities_and_a_read_only_sys(
    tmp_path: Path, client: RegistryClient, busybox_image: str
) -> None:
    out = _probe(tmp_path, client, busybox_image, "")
    assert int(out["capbnd"].split()[1], 16) == DEFAULT_CAPS & _host_capbnd()
    assert out["sysmount"].split()[3].split(",")[0] == "ro", out["sysmount"]
    assert out["syskernel"].split(), "tools that read /sys see the kernel's tree"
    assert "kmsg" not in out["devlist"].split()


def test_insecure_with_allow_runs_privileged(
    tmp_path: Path, client: RegistryClient, busybox_image: str
) -> None:
    out = _probe(
        tmp_path, client, busybox_image, " --security=insecure", allow=("security.insecure",)
    )
    assert int(out["capbnd"].split()[1], 16) == _host_capbnd()
    assert out["sysmount"].split()[3].split(",")[0] == "rw", out["sysmount"]
    if os.path.exists("/dev/kmsg"):
        assert "kmsg" in out["devlist"].split(), "the host's devices"


def test_insecure_without_allow_names_line_and_flag(
    tmp_path: Path, client: RegistryClient, busybox_image: str
) -> None:
    ctx = make_context(
        tmp_path / "ctx", f"FROM {busybox_image}\nRUN true\nRUN --security=insecure true\n"
    )
    with pytest.raises(UsageError) as info:
        run_build(tmp_path, ctx, registry=client, isolation="namespace")
    text = str(info.value)
    assert info.value.location is not None
    assert info.value.location.line == 3
    assert "security.insecure" in text
    assert "--allow=security.insecure" in (info.value.hint or "")
