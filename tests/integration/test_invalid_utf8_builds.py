"""Builds of Dockerfiles that are not valid UTF-8 end in a clear error or a valid image,
never an internal error (issue 12, item 12). ``python -m lamina build`` with the cache."""

from __future__ import annotations

from pathlib import Path

from lamina.oci.oci_layout import OCILayout
from tests.integration.test_remote_context import lamina_build


def test_invalid_utf8_names_fail_clearly_and_values_build(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_bytes(b"f\n")
    cache = [
        "--cache=true",
        f"--cache-repo=oci:{tmp_path / 'cacherepo'}",
        f"--cache-report={tmp_path / 'report.json'}",
    ]
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\nARG A\xff=1\nCOPY f /f\n")
    proc = lamina_build(tmp_path, f"--context={ctx}", *cache, expect=3)
    assert "Dockerfile:2: ARG name" in proc.stderr.decode()
    (ctx / "Dockerfile").write_bytes(
        b"FROM scratch\nARG A=\xfe\nENV B=\xfe\nLABEL l=\xff\nCOPY f /f\xfe\n"
    )
    for _ in range(2):  # cold, then from the cache
        lamina_build(tmp_path, f"--context={ctx}", *cache, "--reproducible")
    config = OCILayout.open(tmp_path / "out").image().config()
    assert "B=\ufffd" in config.config.env
    assert config.config.labels["l"] == "\ufffd"
