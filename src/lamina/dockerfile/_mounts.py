"""``RUN --mount=...`` parsing and validation with BuildKit's defaults."""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from lamina.errors import DockerfileError, SourceLocation

from ._records import fast_init
from ._text import suggest

__all__ = ["MOUNT_TYPES", "Mount", "parse_mount"]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")
_KEYS = (
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "sharing",
    "id",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
)
_KEY_SET = frozenset(_KEYS)
_BOOL_KEYS = frozenset({"readonly", "ro", "readwrite", "rw", "required"})
_VAR = re.compile(r"\$.")
_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_ALIASES = {"src": "source", "dst": "target", "destination": "target"}
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One ``--mount`` of a RUN, with BuildKit's defaults filled in.

    ``target`` is as written (relative targets are joined to WORKDIR by the builder;
    ``""`` means WORKDIR). For ``ssh`` mounts without a target, ``target`` is None
    and the builder uses ``/run/buildkit/ssh_agent.<n>``.
    """

    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = True
    id: str | None = None
    sharing: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool = False
    env: str | None = None


def _parse_bool(value: str) -> bool:
    v = value.strip()
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(value)


def _ram_in_bytes(value: str) -> int:
    m = _RAM.match(value)
    if m is None:
        raise ValueError(value)
    size = float(m.group(1))
    unit = (m.group(2) or "").lower()
    return int(size * _UNITS.get(unit, 1))


def parse_mount(
    spec: str,
    *,
    expander: Callable[[str], str] | None = None,
    location: SourceLocation | None = None,
) -> Mount:
    """Parse the value of one ``--mount=`` flag.

    With ``expander`` every option value but ``from`` is expanded first. Without it,
    a value containing ``$`` is kept unvalidated (numeric fields become None).
    """

    def fail(msg: str, hint: str) -> DockerfileError:
        return DockerfileError(f"--mount={spec}: {msg}", hint=hint, location=location)

    try:
        if spec and '"' not in spec and "\r" not in spec and "\n" not in spec and "\0" not in spec:
            fields = spec.split(",")  # what the CSV reader returns for such a line
        else:
            fields = next(csv.reader([spec]), [])
    except csv.Error as exc:
        raise fail(f"invalid CSV: {exc}", "quote option values that contain commas") from exc
    mtype = "bind"
    ro_auto = True
    readonly = False
    vals: dict[str, str] = {}
    required = False
    # the type comes first in meaning even when written later
    for fld in fields:
        key, sep, value = fld.partition("=")
        if key.strip().lower() == "type" and sep:
            v = value.lower()
            if expander is not None:
                v = expander(value).lower()
            if v not in MOUNT_TYPES and "$" not in v:
                near = suggest(v, MOUNT_TYPES)
                raise fail(
                    f"unsupported mount type {value!r}",
                    f"did you mean type={near}?"
                    if near
                    else "use one of " + ", ".join(MOUNT_TYPES),
                )
            mtype = v
    for fld in fields:
        key, sep, value = fld.partition("=")
        key = key.lower()
        if not sep:
            if key in ("readonly", "ro"):
                readonly, ro_auto = True, False
            elif key in ("readwrite", "rw"):
                readonly, ro_auto = False, False
            elif key == "required" and mtype in ("secret", "ssh"):
                required = True
            elif key == "required":
                raise fail(
                    f"unexpected key 'required' for mount type {mtype!r}",
                    "'required' applies to secret and ssh mounts",
                )
            else:
                raise fail(
                    f"invalid field {fld!r} must be a key=value pair",
                    "write options as key=value, separated by commas",
                )
            continue
        if key == "from":
            if _VAR.search(value):
                raise fail(
                    "'from' doesn't support variable expansion, define alias stage instead",
                    "declare FROM ${VAR} AS name and mount from=name",
                )
        elif expander is not None:
            value = expander(value)
        if key not in _KEY_SET:
            near = suggest(key, _KEYS)
            raise fail(
                f"unexpected key {key!r} in {fld!r}",
                f"did you mean {near}?" if near else "see the RUN --mount reference",
            )
        if key in _BOOL_KEYS:
            try:
                b = _parse_bool(value)
            except ValueError:
                if "$" in value and expander is None:
                    continue
                raise fail(
                    f"invalid boolean value {value!r} for {key}", "use true or false"
                ) from None
            if key == "required":
                if mtype not in ("secret", "ssh"):
                    raise fail(
                        f"unexpected key 'required' for mount type {mtype!r}",
                        "'required' applies to secret and ssh mounts",
                    )
                required = b
            else:
                readonly = b if key in ("readonly", "ro") else not b
                ro_auto = False
            continue
        if key == "type":
            continue
        canon = _ALIASES.get(key, key)
        vals[canon] = value

    def num(key: str, base: int) -> int | None:
        raw = vals.get(key)
        if raw is None or ("$" in raw and expander is None):
            return None
        try:
            n = int(raw, base)
        except ValueError:
            what = "an octal" if base == 8 else "a decimal"
            raise fail(f"invalid {key} {raw!r}", f"{key} must be {what} number") from None
        if n < 0 or n > 0xFFFFFFFF:
            raise fail(f"{key} {raw!r} out of range", "use a value between 0 and 2^32-1")
        return n

    if "sharing" in vals and mtype != "cache":
        raise fail(
            f"invalid key 'sharing' for mount type {mtype!r}", "'sharing' applies to cache mounts"
        )
    sharing = vals.get("sharing")
    if sharing is not None and not ("$" in sharing and expander is None):
        sharing = sharing.lower()
        if sharing not in _SHARING:
            raise fail(f"unsupported sharing value {sharing!r}", "use shared, private or locked")
    if "size" in vals and mtype != "tmpfs":
        raise fail(
            f"unexpected key 'size' for mount type {mtype!r}", "'size' applies to tmpfs mounts"
        )
    size: int | None = None
    if "size" in vals and not ("$" in vals["size"] and expander is None):
        try:
            size = _ram_in_bytes(vals["size"])
        except ValueError:
            raise fail(f"invalid size {vals['size']!r}", "use a size such as 64m or 1g") from None
    mode, uid, gid = num("mode", 8), num("uid", 10), num("gid", 10)
    if mtype not in ("cache", "secret", "ssh"):
        for k in ("mode", "uid", "gid"):
            if k in vals:
                raise fail(
                    f"{k} not allowed for {mtype!r} type mounts",
                    f"{k} applies to cache, secret and ssh mounts",
                )
    if "env" in vals and mtype != "secret":
        raise fail(
            f"unexpected key 'env' for mount type {mtype!r}", "'env' applies to secret mounts"
        )
    if ro_auto:
        readonly = mtype not in ("cache", "tmpfs")
    target = vals.get("target")
    source = vals.get("source")
    mid = vals.get("id")
    from_ = vals.get("from")
    env = vals.get("env")
    if mtype == "secret":
        if from_:
            raise fail("secret mount should not have a from", "remove from= from the secret mount")
        if source and mid:
            raise fail("both source and id can't be set", "source is an alias of id: keep one")
        if source:
            mid, source = source, None
        if not mid and target:
            mid = posixpath.basename(target)
        if not mid and not target and not env:
            raise fail(
                "one of source, target or id required for secret mount", "add id=<secret id>"
            )
        if target is None and env is None and mid:
            target = "/run/secrets/" + mid
        mode = 0o400 if mode is None and "mode" not in vals else mode
        uid = 0 if uid is None and "uid" not in vals else uid
        gid = 0 if gid is None and "gid" not in vals else gid
    elif mtype == "ssh":
        if source:
            raise fail("ssh mount should not have a source", "use id=<ssh agent id>")
        mid = mid or "default"
        mode = 0o600 if mode is None and "mode" not in vals else mode
        uid = 0 if uid is None and "uid" not in vals else uid
        gid = 0 if gid is None and "gid" not in vals else gid
    elif mtype == "cache":
        sharing = sharing or "shared"
        mode = 0o755 if mode is None and "mode" not in vals else mode
        uid = 0 if uid is None and "uid" not in vals else uid
        gid = 0 if gid is None and "gid" not in vals else gid
        if not mid:
            mid = posixpath.normpath(target or "")
    return Mount(
        type=mtype,
        target=target,
        source=source,
        from_=from_,
        readonly=readonly,
        id=mid,
        sharing=sharing,
        mode=mode,
        uid=uid,
        gid=gid,
        size=size,
        required=required,
        env=env,
    )
