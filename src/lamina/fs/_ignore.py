"""The ignore list: in-image paths never extracted, snapshotted or deleted."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lamina.errors import FilesystemError

__all__ = [
    "IgnoreList",
    "default_ignore_list",
    "mount_points_from_mountinfo",
    "read_mountinfo",
]


def _norm(path: str | PurePosixPath) -> str:
    parts = [p for p in str(path).split("/") if p and p != "."]
    if ".." in parts:
        raise FilesystemError(
            f"the ignore path {str(path)!r} contains '..'",
            hint="give ignore paths as absolute paths inside the image, e.g. /var/cache",
        )
    return "/" + "/".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoreList:
    """Paths (with everything below them) and plain string prefixes to leave alone.

    ``paths`` match a path and its descendants (``/proc`` matches ``/proc`` and
    ``/proc/1`` but not ``/procfoo``). ``prefixes`` match any path whose string
    starts with them (``/tmp/apt-key-gpghome`` also matches
    ``/tmp/apt-key-gpghome.XYZ``), as kaniko does.
    """

    paths: frozenset[str] = field(default_factory=frozenset)
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        paths: Iterable[str | PurePosixPath] = (),
        prefixes: Iterable[str | PurePosixPath] = (),
    ) -> IgnoreList:
        """Build a list from in-image paths (normalised, must not contain ``..``)."""
        return cls(
            paths=frozenset(_norm(p) for p in paths if _norm(p) != "/"),
            prefixes=tuple(sorted({_norm(p) for p in prefixes if _norm(p) != "/"})),
        )

    def with_paths(self, *paths: str | PurePosixPath) -> IgnoreList:
        """A new list with ``paths`` added (e.g. a VOLUME declared during the build)."""
        return IgnoreList(
            paths=self.paths | {_norm(p) for p in paths if _norm(p) != "/"},
            prefixes=self.prefixes,
        )

    def with_prefixes(self, *prefixes: str | PurePosixPath) -> IgnoreList:
        """A new list with string ``prefixes`` added."""
        return IgnoreList(
            paths=self.paths,
            prefixes=tuple(sorted(set(self.prefixes) | {_norm(p) for p in prefixes})),
        )

    def matches(self, path: str | PurePosixPath) -> bool:
        """Whether the in-image ``path`` (absolute or relative to ``/``) is ignored."""
        p = _norm(path)
        if p == "/":
            return False
        if any(p.startswith(pre) for pre in self.prefixes):
            return True
        if not self.paths:
            return False
        if p in self.paths:
            return True
        # any ancestor ignored?
        idx = p.rfind("/")
        while idx > 0:
            if p[:idx] in self.paths:
                return True
            idx = p.rfind("/", 0, idx)
        return False

    def has_ignored_below(self, path: str | PurePosixPath) -> bool:
        """Whether something strictly below the in-image directory ``path`` is ignored."""
        p = _norm(path)
        base = "/" if p == "/" else p + "/"
        return any(q.startswith(base) for q in self.paths) or any(
            pre.startswith(base) for pre in self.prefixes
        )

    def __bool__(self) -> bool:
        return bool(self.paths or self.prefixes)


def _unescape_mountinfo(field_text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal)
    out: list[str] = []
    i = 0
    while i < len(field_text):
        ch = field_text[i]
        chunk = field_text[i + 1 : i + 4]
        if ch == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def mount_points_from_mountinfo(text: str) -> list[str]:
    """The mount points (field 5) listed in a ``/proc/<pid>/mountinfo`` text, in order."""
    points: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        points.append(_unescape_mountinfo(fields[4]))
    return points


def read_mountinfo(path: Path = Path("/proc/self/mountinfo")) -> str:
    """The text of this process's mountinfo (for :func:`default_ignore_list`)."""
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise FilesystemError(
            f"cannot read {path}: {exc.strerror}",
            hint="lamina needs /proc mounted to find the mount points to leave alone",
        ) from exc


def default_ignore_list(
    *,
    mountinfo: str,
    kaniko_dir: str | PurePosixPath = "/kaniko",
    ignore_var_run: bool = True,
    extra_paths: Iterable[str | PurePosixPath] = (),
) -> IgnoreList:
    """kaniko's default ignore list.

    The kaniko directory, ``/etc/mtab``, the ``/tmp/apt-key-gpghome`` prefix,
    ``/var/run`` when ``ignore_var_run``, every mount point of ``mountinfo``
    except ``/``, and ``extra_paths`` (``--ignore-path``). VOLUME paths are
    added later with :meth:`IgnoreList.with_paths`.
    """
    paths: list[str | PurePosixPath] = [kaniko_dir, "/etc/mtab"]
    if ignore_var_run:
        paths.append("/var/run")
    paths.extend(p for p in mount_points_from_mountinfo(mountinfo) if p != "/")
    paths.extend(extra_paths)
    return IgnoreList.of(paths, prefixes=["/tmp/apt-key-gpghome"])
