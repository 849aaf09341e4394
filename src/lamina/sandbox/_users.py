"""``USER`` resolution through the image's ``/etc/passwd`` and ``/etc/group``.

Follows Docker/runc: ``name``, ``name:group``, ``uid``, ``uid:gid``. A name
that is not in the passwd file is an error; a numeric uid without an entry
runs with gid 0 and ``HOME=/``. Supplementary groups, when no group is given
explicitly, are the primary gid followed by the group file's member lists.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import BuildStepError, FilesystemError
from lamina.fs import safe_join

__all__ = ["ResolvedUser", "read_image_file", "resolve_user"]

_MAX_ID = 2**31 - 1
_MAX_FILE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedUser:
    """A ``USER`` value resolved against an image."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str | None = None


def _is_whiteout(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def read_image_file(rootfs: Path, path: str, *, upper: Path | None = None) -> bytes | None:
    """Read a small file of the image; ``None`` when it does not exist.

    With ``upper`` (an overlay upper directory over ``rootfs``) a copy there
    wins, and an overlay whiteout there hides the file.
    """
    candidates: list[Path] = []
    if upper is not None:
        in_upper = safe_join(upper, path, follow_final=True)
        if _is_whiteout(in_upper):
            return None
        candidates.append(in_upper)
    candidates.append(safe_join(rootfs, path, follow_final=True))
    for host_path in candidates:
        try:
            st = os.lstat(host_path)
            if not stat.S_ISREG(st.st_mode):
                # a device node or FIFO a RUN made (inert in its nodev root) would open
                # the host device here, or block: never opened
                raise FilesystemError(
                    f"{path} of the image is not a regular file",
                    hint=f"the image's {path} must be a file (a step replaced it with "
                    "a device node, FIFO or directory?)",
                )
            fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise FilesystemError(f"{path} of the image is not a regular file")
                return fh.read(_MAX_FILE)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise FilesystemError(
                f"cannot read {path} of the image ({host_path}): {exc.strerror or exc}"
            ) from exc
    return None


def _parse_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    if value > _MAX_ID:
        raise BuildStepError(f"user or group id {text} is out of range (max {_MAX_ID})")
    return value


def _entries(data: bytes | None, min_fields: int) -> list[list[str]]:
    if data is None:
        return []
    rows = []
    for raw in data.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= min_fields:
            rows.append(fields)
    return rows


def resolve_user(rootfs: Path, user: str, *, upper: Path | None = None) -> ResolvedUser:
    """Resolve a raw ``USER`` value against the image at ``rootfs``.

    Raises :class:`BuildStepError` for a name that is in neither file, with
    Docker's wording (``unable to find user foo: no matching entries in passwd
    file``).
    """
    user_part, _, group_part = (user or "0").partition(":")
    if not user_part:
        user_part = "0"
    passwd = _entries(read_image_file(rootfs, "/etc/passwd", upper=upper), 7)
    groups_file = _entries(read_image_file(rootfs, "/etc/group", upper=upper), 3)

    uid_arg = _parse_id(user_part)
    entry = next(
        (e for e in passwd if e[0] == user_part or (uid_arg is not None and e[2] == user_part)),
        None,
    )
    if entry is not None:
        name: str | None = entry[0]
        uid = _parse_id(entry[2])
        gid = _parse_id(entry[3])
        if uid is None or gid is None:
            raise BuildStepError(f"malformed /etc/passwd entry for user {entry[0]!r} in the image")
        home = entry[5] or "/"
    elif uid_arg is not None:
        name, uid, gid, home = None, uid_arg, 0, "/"
    else:
        raise BuildStepError(
            f"unable to find user {user_part}: no matching entries in passwd file",
            hint="create the user in an earlier RUN (useradd/adduser) or use a numeric uid",
        )

    supplementary: tuple[int, ...] = ()
    if group_part:
        gid_arg = _parse_id(group_part)
        group = next(
            (
                g
                for g in groups_file
                if g[0] == group_part or (gid_arg is not None and g[2] == group_part)
            ),
            None,
        )
        if group is not None:
            found = _parse_id(group[2])
            if found is None:
                raise BuildStepError(f"malformed /etc/group entry for group {group[0]!r}")
            gid = found
        elif gid_arg is not None:
            gid = gid_arg
        else:
            raise BuildStepError(
                f"unable to find group {group_part}: no matching entries in group file",
                hint="create the group in an earlier RUN (groupadd/addgroup) or use a numeric gid",
            )
    elif name is not None:
        # like runc under Docker/BuildKit: the primary group comes first in the
        # supplementary list (`id` in busybox as root: groups=0(root),10(wheel))
        found_ids = [gid]
        for g in groups_file:
            members = [m.strip() for m in g[3].split(",")] if len(g) > 3 else []
            gid_value = _parse_id(g[2])
            if name in members and gid_value is not None and gid_value not in found_ids:
                found_ids.append(gid_value)
        supplementary = tuple(found_ids)
    return ResolvedUser(uid=uid, gid=gid, groups=supplementary, home=home, name=name)
