"""``--allow``: BuildKit's entitlements; only ``security.insecure`` is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.cli._flags import parse_flags
from lamina.cli._options import executor_config
from lamina.cli._specs import BUILD_FLAGS
from lamina.errors import UsageError


def _config(tmp_path: Path, *flags: str) -> tuple[str, ...]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    parsed = parse_flags([f"--context={ctx}", "--no-push", *flags], BUILD_FLAGS, command="executor")
    return executor_config(parsed, {}).build.allow


def test_allow_defaults_to_nothing(tmp_path: Path) -> None:
    assert _config(tmp_path) == ()


@pytest.mark.parametrize(
    "flags",
    [
        ("--allow=security.insecure",),
        ("--allow", "security.insecure"),
        ("--allow=security.insecure", "--allow=security.insecure"),
        ("--allow=security.insecure,security.insecure",),
    ],
)
def test_allow_security_insecure(tmp_path: Path, flags: tuple[str, ...]) -> None:
    assert _config(tmp_path, *flags) == ("security.insecure",)


@pytest.mark.parametrize("value", ["network.host", "security.insecure,device", "", "SECURITY"])
def test_unknown_entitlements_are_usage_errors(tmp_path: Path, value: str) -> None:
    with pytest.raises(UsageError, match="--allow") as info:
        _config(tmp_path, f"--allow={value}")
    assert "security.insecure" in (info.value.hint or "")
