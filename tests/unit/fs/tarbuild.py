"""Building small layer tars in tests."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field


@dataclass
class E:
    """One tar entry to build."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_000_000
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes = b"x", **kw: object) -> E:
    return E(name, tarfile.REGTYPE, data, **kw)  # type: ignore[arg-type]


def d(name: str, **kw: object) -> E:
    kw.setdefault("mode", 0o755)
    return E(name, tarfile.DIRTYPE, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str) -> E:
    return E(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hard(name: str, target: str) -> E:
    return E(name, tarfile.LNKTYPE, linkname=target)


def build_tar(entries: list[E]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = dict(e.pax)
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    buf.seek(0)
    return buf
