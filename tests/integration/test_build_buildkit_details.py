"""Where lamina follows BuildKit's dockerfile2llb in detail: WORKDIR layers,
ArgsEscaped, and ADD --chown of local archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.integration.test_build_engine import make_context, run_build

pytestmark = [pytest.mark.root]

#: diff_id of an empty layer: a tar of nothing but its two zero end blocks
EMPTY_DIFF_ID = "sha256:" + hashlib.sha256(b"\0" * 1024).hexdigest()


def _owned_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo("pkg")
        top.type, top.mode, top.uid, top.gid = tarfile.DIRTYPE, 0o750, 7, 8
        tar.addfile(top)
        for name, uid in (("pkg/a.txt", 1000), ("pkg/b.txt", 0)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = 2, 0o640, uid, uid
            tar.addfile(info, io.BytesIO(b"x\n"))
        link = tarfile.TarInfo("pkg/link")
        link.type, link.linkname, link.uid, link.gid = tarfile.SYMTYPE, "a.txt", 5, 5
        tar.addfile(link)
    return buf.getvalue()


def test_workdir_always_has_a_layer_except_for_root(tmp_path: Path) -> None:
    text = (
        "FROM scratch\nCOPY d/ /d/\n"
        "WORKDIR /d\n"  # exists: BuildKit still commits its (empty) mkdir layer
        "WORKDIR /\n"  # no layer
        "WORKDIR /new/sub\n"  # created, 0755 root
    )
    built = run_build(tmp_path, make_context(tmp_path / "ctx", text, {"d/f": "f\n"}))
    history = built.config.history
    assert [(h.created_by, h.empty_layer) for h in history] == [
        ("COPY d/ /d/ # buildkit", False),
        ("WORKDIR /d", False),
        ("WORKDIR /", True),
        ("WORKDIR /new/sub", False),
    ]
    assert len(built.config.diff_ids) == 3
    assert str(built.config.diff_ids[1]) == EMPTY_DIFF_ID
    assert built.layer_files(1) == {}
    created = built.layer_files(2)
    assert sorted(created) == ["new", "new/sub"]
    assert all(m.isdir() and m.mode == 0o755 and m.uid == 0 for m in created.values())


def test_args_escaped_is_set_by_cmd_not_entrypoint(tmp_path: Path) -> None:
    only_entrypoint = run_build(
        tmp_path / "a",
        make_context(tmp_path / "a" / "ctx", "FROM scratch\nENTRYPOINT echo hi\n"),
    )
    assert only_entrypoint.config.config.args_escaped is None
    for form in ('CMD ["echo", "hi"]', "CMD echo hi"):
        built = run_build(
            tmp_path / form[:5].strip(),
            make_context(tmp_path / form[:5].strip() / "ctx", f"FROM scratch\n{form}\n"),
        )
        assert built.config.config.args_escaped is True, form


def test_add_chown_applies_to_extracted_archive_entries(tmp_path: Path) -> None:
    text = "FROM scratch\nADD --chown=42:43 pkg.tar /opt/\nADD pkg.tar /keep/\n"
    built = run_build(tmp_path, make_context(tmp_path / "ctx", text, {"pkg.tar": _owned_tar()}))
    chowned = built.layer_files(0)
    for name in ("opt", "opt/pkg", "opt/pkg/a.txt", "opt/pkg/b.txt", "opt/pkg/link"):
        assert (chowned[name].uid, chowned[name].gid) == (42, 43), name
    assert chowned["opt/pkg"].mode == 0o750  # modes stay the archive's
    assert chowned["opt/pkg/a.txt"].mode == 0o640
    kept = built.layer_files(1)
    assert (kept["keep/pkg"].uid, kept["keep/pkg"].gid) == (7, 8)
    assert (kept["keep/pkg/a.txt"].uid, kept["keep/pkg/a.txt"].gid) == (1000, 1000)
    assert (kept["keep/pkg/link"].uid, kept["keep/pkg/link"].gid) == (5, 5)
