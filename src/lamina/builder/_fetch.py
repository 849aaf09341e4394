"""``ADD <http(s) URL>``: classify sources and download one file (BuildKit's rules).

* The file name is the last segment of the URL path (``__unnamed__`` when
  there is none), as the Dockerfile frontend names it, before any redirect.
* The body is streamed to a file (memory stays bounded) and hashed on the way;
  ``--checksum`` is compared before anything reaches the rootfs.
* The file gets mode 0600 and, when the server sends ``Last-Modified``, that
  time as its mtime (BuildKit's ``httpsource``).
* Redirects are followed by hand: to http(s) only (a ``data:``, ``file:`` or ``ftp:``
  target is refused), at most :data:`MAX_REDIRECTS`, never to a URL carrying
  credentials; the URL's own user-info authenticates requests to its origin only.
* httpx errors are translated here: callers see :class:`BuildStepError` only, and no
  message (nor :attr:`Fetched.url`) holds the URL's user-info.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from lamina.context import redact_url
from lamina.context._http import MAX_REDIRECTS, open_following, stop_at_redirects
from lamina.dockerfile import AddInstruction
from lamina.errors import BuildStepError, DockerfileError, NotSupportedError, SourceLocation

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_REDIRECTS",
    "Fetched",
    "check_add_sources",
    "fetch_url",
    "is_git_source",
    "is_url_source",
    "parse_checksum",
    "redact_url",
    "url_file_name",
]

#: BuildKit's name for a URL whose path has no last segment
UNNAMED = "__unnamed__"
_CHUNK = 1024 * 1024
_CHECKSUM = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_GIT_PREFIXES = ("git@", "git://", "ssh://", "git+ssh://", "git+https://", "git+http://")


def is_url_source(src: str) -> bool:
    """True for an ``http://`` or ``https://`` source (git repositories included)."""
    lower = src.lower()
    return lower.startswith(("http://", "https://"))


def is_git_source(src: str) -> bool:
    """True for what BuildKit treats as a git repository (``ADD <git ref> <dest>``)."""
    lower = src.lower()
    if lower.startswith(_GIT_PREFIXES):
        return True
    if not is_url_source(src):
        return False
    path = urlsplit(src).path.rstrip("/")
    return path.endswith(".git")


def url_file_name(url: str) -> str:
    """The file name BuildKit gives a download: the URL path's last segment."""
    base = posixpath.basename(unquote(urlsplit(url).path).rstrip("/"))  # Go path.Base
    if base in ("", ".", "/", ".."):
        return UNNAMED
    return base


def parse_checksum(value: str, location: SourceLocation | None) -> tuple[str, str]:
    """``sha256:<hex>`` (also sha384/sha512) → ``(algorithm, hex)``."""
    m = _CHECKSUM.match(value.strip().lower())
    if m is None or len(m.group(2)) != _HEX_LEN[m.group(1)]:
        raise DockerfileError(
            f"invalid --checksum value {value!r}",
            hint="write --checksum=sha256:<64 hex digits>",
            location=location,
        )
    return m.group(1), m.group(2)


def check_add_sources(instr: AddInstruction) -> list[str]:
    """Check an expanded ``ADD``'s sources and flags; return its http(s) file URLs.

    Git sources (see :func:`is_git_source`) are not in the result: the caller
    checks them out (``lamina.builder._git``). Other URL schemes are refused;
    ``--checksum`` needs exactly one http(s) or git source (for git it is a
    commit SHA, checked by the git fetch).
    """
    loc = instr.location
    urls: list[str] = []
    gits = 0
    for src in instr.sources:
        if is_git_source(src):
            gits += 1
        elif is_url_source(src):
            urls.append(src)
        elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src):
            raise NotSupportedError(
                f"ADD of a URL ({src}): only http:// and https:// are supported",
                hint="download it in a RUN step instead",
                location=loc,
            )
    if instr.checksum is not None:
        if len(instr.sources) != 1:
            raise DockerfileError(
                "ADD --checksum can't be specified for multiple sources",
                hint="write one ADD per URL",
                location=loc,
            )
        if not urls and not gits:
            raise DockerfileError(
                "ADD --checksum can't be specified for non-HTTP(S) sources",
                hint="remove --checksum, or give an http(s) URL",
                location=loc,
            )
        if urls:
            parse_checksum(instr.checksum, loc)
    return urls


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """A downloaded file: where it is, its URL-derived name and its digest."""

    #: the URL without its user-info (for messages)
    url: str
    host: Path
    name: str
    digest: str
    size: int
    mtime: float | None


def _last_modified(value: str | None) -> float | None:
    if not value:
        return None
    from email.utils import parsedate_to_datetime  # slow to import; only ADD <url> needs it

    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def fetch_url(
    url: str,
    into: Path,
    *,
    checksum: str | None = None,
    location: SourceLocation | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 60.0,
) -> Fetched:
    """Download ``url`` to a new file in the directory ``into``.

    ``checksum`` (``sha256:<hex>``) is verified before returning; on any
    failure the partial file is deleted and :class:`BuildStepError` names the
    URL without its credentials (and ``location``, the Dockerfile line).
    Redirects are followed to http(s) URLs only (at most :data:`MAX_REDIRECTS`).
    """
    import httpx  # a cached ADD never downloads

    from lamina.registry import system_trust_context

    algorithm, expected = (
        parse_checksum(checksum, location) if checksum is not None else ("sha256", None)
    )
    hasher = hashlib.new(algorithm)
    name = url_file_name(url)
    shown = redact_url(url)

    def fail(message: str, hint: str) -> BuildStepError:
        return BuildStepError(f"ADD: {message}", hint=hint, location=location)

    fd, tmp_name = _mkstemp(into, location, shown)
    target = Path(tmp_name)
    size = 0
    try:
        try:
            with (
                os.fdopen(fd, "wb") as out,
                httpx.Client(
                    verify=system_trust_context(),
                    follow_redirects=False,
                    timeout=httpx.Timeout(timeout),
                    transport=transport,
                    event_hooks={"response": [stop_at_redirects]},
                ) as client,
                contextlib.closing(open_following(client, url, fail)) as resp,
            ):
                if resp.status_code >= 400:
                    raise BuildStepError(
                        f"ADD: cannot download {shown}: HTTP {resp.status_code} "
                        f"{resp.reason_phrase}".rstrip(),
                        hint="check the URL; the server must answer 200 to a plain GET",
                        location=location,
                    )
                for chunk in resp.iter_bytes(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                mtime = _last_modified(resp.headers.get("last-modified"))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = redact_url(str(exc))[:300] or type(exc).__name__
            raise BuildStepError(
                f"ADD: cannot download {shown}: {detail}",
                hint="check the URL, the network and any HTTP(S)_PROXY settings",
                location=location,
            ) from None
        except OSError as exc:
            raise BuildStepError(
                f"ADD: cannot save the download of {shown} to {target}: {exc.strerror or exc}",
                hint="check free space in the build directory",
                location=location,
            ) from None
        actual = hasher.hexdigest()
        if expected is not None and actual != expected:
            raise BuildStepError(
                f"ADD {shown}: checksum mismatch: expected {algorithm}:{expected}, "
                f"got {algorithm}:{actual}",
                hint="the file on the server changed, or --checksum is wrong",
                location=location,
            )
        try:
            os.chmod(target, 0o600)
            if mtime is not None:
                os.utime(target, (mtime, mtime))
        except OSError as exc:
            raise BuildStepError(
                f"ADD {shown}: cannot set the mode of {target}: {exc.strerror or exc}",
                location=location,
            ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    return Fetched(
        url=shown,
        host=target,
        name=name,
        digest=f"{algorithm}:{actual}",
        size=size,
        mtime=mtime,
    )


def _mkstemp(into: Path, location: SourceLocation | None, url: str) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix="add-", dir=into)
    except OSError as exc:
        raise BuildStepError(
            f"ADD {url}: cannot create a download file in {into}: {exc.strerror or exc}",
            hint="check free space and permissions of the build directory",
            location=location,
        ) from exc
