"""User namespace id maps and which USER values a rootless sandbox can run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import BuildStepError
from lamina.sandbox import IdMap, ResolvedUser
from lamina.sandbox._runners import _check_mapped, _subordinate

ROOTLESS = IdMap(uids=((0, 1000, 1), (1, 100000, 65536)), gids=((0, 1000, 1), (1, 100000, 65536)))


def test_maps_and_inside_ids() -> None:
    assert ROOTLESS.maps_uid(0)
    assert ROOTLESS.maps_uid(65536)
    assert not ROOTLESS.maps_uid(65537)
    assert ROOTLESS.to_inside_uid(1000) == 0
    assert ROOTLESS.to_inside_uid(100000) == 1
    assert ROOTLESS.to_inside_gid(100999) == 1000
    assert ROOTLESS.to_inside_uid(5) is None


def test_subordinate_file(tmp_path: Path) -> None:
    sub = tmp_path / "subuid"
    sub.write_text("other:1:2\nbad:x:3\nalice:100000:0\nalice:200000:65536\n1000:300000:10\n")
    assert _subordinate(sub, "alice", 1000) == (200000, 65536)
    assert _subordinate(sub, "bob", 1000) == (300000, 10)
    assert _subordinate(sub, "bob", 1) is None
    assert _subordinate(tmp_path / "missing", "alice", 1000) is None


def test_for_current_user_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("identity map is for root")
    full = IdMap.for_current_user()
    assert full is not None
    assert full.maps_uid(1000)
    assert not full.use_tools


def _user(uid: int, gid: int, groups: tuple[int, ...] = ()) -> ResolvedUser:
    return ResolvedUser(uid=uid, gid=gid, groups=groups, home="/", name=None)


def test_only_root_without_subordinate_ids() -> None:
    assert _check_mapped("", _user(0, 0, (10,)), None).groups == ()
    with pytest.raises(BuildStepError, match="not mapped") as err:
        _check_mapped("alice", _user(1000, 1000), None)
    assert "subuids" in (err.value.hint or "")


def test_mapped_user_keeps_mapped_groups() -> None:
    user = _check_mapped("alice", _user(1000, 1000, (50, 70000)), ROOTLESS)
    assert (user.uid, user.gid, user.groups) == (1000, 1000, (50,))
    with pytest.raises(BuildStepError):
        _check_mapped("x", _user(70000, 0), ROOTLESS)


def test_effective_id_map() -> None:
    from lamina.sandbox import NamespaceRunner

    assert NamespaceRunner(user_namespace=False).effective_id_map() is None
    assert NamespaceRunner(user_namespace=True, id_map=ROOTLESS).effective_id_map() == ROOTLESS
    if os.geteuid() == 0:
        # root's map through a user namespace is the identity: host ids are image ids
        assert NamespaceRunner(user_namespace=True).effective_id_map() is None
