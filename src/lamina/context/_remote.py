"""Remote build contexts and Dockerfile URLs (kaniko's ``pkg/buildcontext``).

* :func:`parse_context` classifies ``--context``: a local directory (no
  scheme, ``dir://``), ``tar://PATH``, ``tar://stdin``, ``https://`` (a plain
  GET of a tarball), ``git://host/repo.git[#ref][#commit]``, bucket
  objects (``s3://``, ``gs://``, Azure blob hosts: the providers of
  :mod:`lamina.context._buckets`: downloaded to a file, then unpacked as
  ``tar://``), other schemes refused with :class:`UsageError`.
* :func:`fetch_context` unpacks a remote context into a fresh directory
  (the builder gives each build its own ``<kaniko-dir>/lamina-context-*/buildcontext``;
  kaniko's fixed ``<kaniko-dir>/buildcontext`` was shared by concurrent builds).
  Archives are streamed through :func:`lamina.fs.extract_archive`: ``..`` names
  are skipped with a warning, absolute names and symlinks stay inside the directory.
* Git contexts are cloned over https (``GIT_PULL_METHOD=http``: plain http)
  with the git machinery of :mod:`lamina.context._git`; ``GIT_TOKEN`` or
  ``GIT_USERNAME``/``GIT_PASSWORD`` become a Basic ``Authorization`` header
  held in git's environment (never its command line, never a log).
* :func:`download_dockerfile` fetches ``--dockerfile http(s)://…`` (size
  limited, TLS verified against the system trust, ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR`` included).

Every failure is a :class:`ContextError` (exit code 3) naming the context
without credentials.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal
from urllib.parse import urlsplit

from lamina.context._buckets import bucket_provider, fetch_bucket
from lamina.context._gitopts import GitContextOptions
from lamina.context._urls import redact_url
from lamina.errors import ContextError, LaminaError, UsageError

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = [
    "AZURE_BLOB_HOST_SUFFIXES",
    "ContextSpec",
    "GitContextOptions",
    "GitContextRef",
    "check_sub_path",
    "context_subdir",
    "download_dockerfile",
    "fetch_context",
    "is_azure_blob_url",
    "is_dockerfile_url",
    "parse_context",
    "parse_git_context",
]

#: the Azure Blob Storage hosts kaniko recognises (``constants.AzureBlobStorageHostRegEx``)
AZURE_BLOB_HOST_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.cloudapi.de",
    ".blob.core.usgovcloudapi.net",
)
#: the largest Dockerfile a URL may answer with
DOCKERFILE_MAX_BYTES = 1024 * 1024
_TIMEOUT = 120.0
_CHUNK = 1024 * 1024
_HEX = re.compile(r"^[0-9a-f]{7,64}$")
_PREFIXES = (
    "dir://, tar://, https://, git://, s3://, gs://, https://<account>.blob.core.windows.net/"
)

Kind = Literal["dir", "tar", "stdin", "https", "git", "bucket"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextSpec:
    """What ``--context`` names."""

    kind: Kind
    #: the directory (dir), the archive path (tar), the URL (https), ``host/repo#…`` (git)
    location: str
    #: the context as given, credentials removed, for messages
    display: str

    @property
    def remote(self) -> bool:
        """True when the context must be fetched or unpacked first."""
        return self.kind != "dir"


def is_azure_blob_url(url: str) -> bool:
    """True for an ``https://<account>.blob.core.<cloud>/…`` URL (kaniko's AzureBlob context)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme.lower() == "https" and host.endswith(AZURE_BLOB_HOST_SUFFIXES)


def is_dockerfile_url(dockerfile: str) -> bool:
    """True when ``--dockerfile`` names an ``http://`` or ``https://`` URL (kaniko's ``isURL``)."""
    return dockerfile.lower().startswith(("http://", "https://"))


def parse_context(context: str) -> ContextSpec:
    """Classify ``--context`` as kaniko's ``GetBuildContext`` does (no I/O)."""
    display = redact_url(context)
    if "://" not in context:
        return ContextSpec(kind="dir", location=context, display=display)
    prefix, _, rest = context.partition("://")
    scheme = prefix.lower()
    if bucket_provider(context) is not None:  # s3://, ... (lamina.context._buckets)
        # a query (an Azure SAS) is a secret: never shown
        shown = display.split("?", 1)[0] + ("?<SAS>" if "?" in display else "")
        return ContextSpec(kind="bucket", location=context, display=shown)
    if scheme == "dir":
        return ContextSpec(kind="dir", location=rest, display=display)
    if scheme == "tar":
        if not rest:
            raise UsageError(
                f"the build context {display} names no archive",
                hint="write --context tar:///path/to/context.tar.gz or --context tar://stdin",
            )
        kind: Kind = "stdin" if rest == "stdin" else "tar"
        return ContextSpec(kind=kind, location=rest, display=display)
    if scheme == "https":
        return ContextSpec(kind="https", location=context, display=display)
    if scheme == "git":
        if not rest.partition("#")[0]:
            raise UsageError(
                f"the build context {display} names no repository",
                hint="write --context git://host/org/repo.git[#ref][#commit]",
            )
        return ContextSpec(kind="git", location=rest, display=display)
    raise UsageError(
        f"unknown build context prefix in {display}",
        hint=f"use a local directory or one of {_PREFIXES}",
    )


def check_sub_path(sub_path: str) -> str:
    """``--context-sub-path`` normalised; an absolute path or one with ``..`` is refused."""
    clean = posixpath.normpath(sub_path)
    if posixpath.isabs(sub_path) or ".." in sub_path.split("/"):
        raise UsageError(
            f"--context-sub-path {sub_path!r} could leave the build context",
            hint="give a relative path inside the context, without '..'",
        )
    return clean


def context_subdir(root: Path, sub_path: str) -> Path:
    """``root/sub_path`` (``--context-sub-path``), refusing a path that leaves ``root``."""
    if not sub_path:
        return root
    path = root / check_sub_path(sub_path)
    try:
        real = path.resolve(strict=True)
    except OSError:
        raise ContextError(
            f"--context-sub-path {sub_path!r}: the build context has no such directory",
            hint="check the path, relative to the root of the unpacked context",
        ) from None
    if not real.is_relative_to(root.resolve()) or not real.is_dir():
        raise ContextError(
            f"--context-sub-path {sub_path!r} is not a directory inside the build context",
            hint="a symlink in the context may point outside it",
        )
    return real


# -- git ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GitContextRef:
    """A parsed ``git://`` context: the clone URL, the ref to fetch, a commit to check out."""

    url: str
    ref: str | None
    commit: str | None


def parse_git_context(location: str, options: GitContextOptions) -> GitContextRef:
    """``host/org/repo.git[#ref][#commit]`` (the part after ``git://``) and the ``--git`` keys."""
    parts = location.split("#")
    if len(parts) > 3:
        raise UsageError(
            f"the git context git://{redact_url(location)} has more than two '#' parts",
            hint="write git://host/org/repo.git#ref#commit",
        )
    method = options.pull_method if options.pull_method in ("http", "https") else "https"
    url = f"{method}://{parts[0]}"
    ref = parts[1] if len(parts) > 1 and parts[1] else None
    commit = parts[2] if len(parts) > 2 and parts[2] else None
    if options.branch:
        if ref is None:
            ref = options.branch
        elif commit is None and _HEX.match(ref):
            ref, commit = options.branch, ref  # kaniko: the branch is cloned, the hash checked out
        elif ref != options.branch:
            raise UsageError(
                f"--git branch={options.branch} conflicts with the ref {ref!r} of the context",
                hint="give the branch once: in --git branch= or after the # of the URL",
            )
    for what, value in (("ref", ref), ("commit", commit)):
        if value is not None and (value.startswith("-") or ".." in value or not value.strip()):
            raise UsageError(
                f"invalid git {what} {value!r} in the context git://{redact_url(location)}",
                hint="name a branch, a tag, refs/… or a commit SHA after the #",
            )
    if commit is not None and not _HEX.match(commit.lower()):
        raise UsageError(
            f"the second # part of git://{redact_url(location)} must be a commit SHA",
            hint="write git://host/org/repo.git#ref#<commit sha>",
        )
    return GitContextRef(url=url, ref=ref, commit=commit.lower() if commit else None)


def _fetch_git(spec: ContextSpec, into: Path, options: GitContextOptions, timeout: float) -> None:
    from lamina.context._git import GitSource, fetch_git

    ref = parse_git_context(spec.location, options)
    source = GitSource(
        remote=ref.url,
        ref=ref.ref,
        subdir="",
        keep_git_dir=True,  # go-git's clone keeps .git in the context, as here
        checksum=None,
        submodules=options.recurse_submodules,
        mtime=None,
    )
    scratch = Path(tempfile.mkdtemp(prefix=".git-fetch-", dir=into.parent))
    try:
        checkout = fetch_git(
            source,
            scratch / "repo",
            commit_mtime=False,
            auth_header=options.auth_header(),
            timeout=timeout,
            label="build context",
            error_type=ContextError,
            insecure_skip_tls=options.insecure_skip_tls,
            checkout_commit=ref.commit,
        )
        checkout.work_tree.rename(into)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- archives ----------------------------------------------------------------------------


class _IterReader(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks (an HTTP body)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _unpack(stream: BinaryIO, into: Path, display: str, on_warning: Callable[[str], None]) -> None:
    from lamina.fs import extract_archive

    try:
        extract_archive(
            into, "/", stream, on_warning=on_warning, name=f"build context {display}", workers=1
        )
    except ContextError:
        raise
    except LaminaError as exc:
        raise ContextError(
            f"cannot unpack the build context {display}: {exc.message}",
            hint="the context must be a tar archive compressed with gzip (tar -czf)",
        ) from exc


def _open_archive(path: str, display: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ContextError(
            f"cannot open the build context archive {path}: {exc.strerror or exc}",
            hint=f"check the path after tar:// in {display} (tar:///abs/path/ctx.tar.gz)",
        ) from None


def _ssl_verify() -> ssl.SSLContext:
    """The system trust (``SSL_CERT_FILE``, every file in ``SSL_CERT_DIR``), not certifi's."""
    from lamina.registry import system_trust_context

    return system_trust_context()


def _client(timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
    """A client for :func:`~lamina.context._http.open_following` (checked redirects)."""
    import httpx

    from lamina.context._http import stop_at_redirects

    if transport is not None:
        return httpx.Client(transport=transport, event_hooks={"response": [stop_at_redirects]})
    return httpx.Client(
        verify=_ssl_verify(),
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
        trust_env=True,
        event_hooks={"response": [stop_at_redirects]},
    )


def _fail_in(message: str, hint: str) -> ContextError:
    return ContextError(f"the build context: {message}", hint=hint)


def _fail_dockerfile(message: str, hint: str) -> ContextError:
    return ContextError(f"the --dockerfile URL: {message}", hint=hint)


def _http_error(what: str, url: str, exc: Exception) -> ContextError:
    detail = redact_url(str(exc)) or type(exc).__name__
    return ContextError(
        f"cannot download {what} {redact_url(url)}: {detail}",
        hint="check the URL, the network and the server's TLS certificate "
        "(SSL_CERT_FILE / SSL_CERT_DIR add trusted CAs)",
    )


def _fetch_https(
    spec: ContextSpec,
    into: Path,
    on_warning: Callable[[str], None],
    timeout: float,
    transport: httpx.BaseTransport | None,
) -> None:
    import httpx

    from lamina.context._http import open_following

    client = _client(timeout, transport)
    try:
        with client, contextlib.closing(open_following(client, spec.location, _fail_in)) as resp:
            if resp.status_code != 200:
                raise ContextError(
                    f"cannot download the build context {spec.display}: "
                    f"HTTP status {resp.status_code} {resp.reason_phrase}".rstrip(),
                    hint="the URL must answer 200 with a .tar.gz (kaniko's HTTPSTar context)",
                )
            reader = io.BufferedReader(_IterReader(resp.iter_bytes(_CHUNK)), buffer_size=_CHUNK)
            _unpack(reader, into, spec.display, on_warning)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _http_error("the build context", spec.location, exc) from None


def _fetch_bucket(
    spec: ContextSpec, into: Path, on_warning: Callable[[str], None], timeout: float
) -> None:
    """Stream the bucket object to a file beside ``into``, then unpack it as ``tar://``."""
    fd, name = tempfile.mkstemp(prefix=".bucket-", suffix=".tar.gz", dir=into.parent)
    os.close(fd)
    try:
        archive = fetch_bucket(spec.location, Path(name), timeout=timeout)
        with _open_archive(str(archive), spec.display) as f:
            _unpack(f, into, spec.display, on_warning)
    finally:
        Path(name).unlink(missing_ok=True)


def fetch_context(
    spec: ContextSpec,
    into: Path,
    *,
    git: GitContextOptions,
    stdin: BinaryIO | None,
    on_warning: Callable[[str], None],
    timeout: float = _TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> Path:
    """Unpack or clone the remote context ``spec`` into ``into`` (replaced if it exists).

    ``stdin`` is read for ``tar://stdin`` (refused when it is a terminal).
    Returns ``into``. The caller removes it after the build.
    """
    if not spec.remote:
        raise ValueError("fetch_context needs a remote context")
    try:
        if into.is_symlink():  # removed, never followed
            into.unlink()
        elif into.exists():
            shutil.rmtree(into)
        into.parent.mkdir(parents=True, exist_ok=True)
        if spec.kind != "git":
            into.mkdir(mode=0o755)
    except OSError as exc:
        raise ContextError(
            f"cannot prepare {into} for the build context {spec.display}: {exc.strerror or exc}",
            hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
        ) from None
    if spec.kind == "git":
        _fetch_git(spec, into, git, timeout)
    elif spec.kind == "tar":
        with _open_archive(spec.location, spec.display) as f:
            _unpack(f, into, spec.display, on_warning)
    elif spec.kind == "stdin":
        if stdin is None:
            raise ContextError(
                "the build context tar://stdin: no standard input to read",
                hint="pipe the gzipped tarball in: tar -cz . | executor --context tar://stdin …",
            )
        if stdin.isatty():
            raise ContextError(
                "the build context tar://stdin: standard input is a terminal",
                hint="pipe the gzipped tarball in (docker run -i …, not -t)",
            )
        _unpack(stdin, into, spec.display, on_warning)
    elif spec.kind == "bucket":
        _fetch_bucket(spec, into, on_warning, timeout)
    else:
        _fetch_https(spec, into, on_warning, timeout, transport)
    return into


def download_dockerfile(
    url: str,
    dest: Path,
    *,
    timeout: float = _TIMEOUT,
    max_bytes: int = DOCKERFILE_MAX_BYTES,
    transport: httpx.BaseTransport | None = None,
) -> Path:
    """Download ``--dockerfile http(s)://…`` to ``dest`` (kaniko reads it with ``http.Get``)."""
    import httpx

    from lamina.context._http import open_following

    shown = redact_url(url)
    client = _client(timeout, transport)
    data = bytearray()
    try:
        with client, contextlib.closing(open_following(client, url, _fail_dockerfile)) as resp:
            if not 200 <= resp.status_code < 300:
                raise ContextError(
                    f"cannot download the Dockerfile {shown}: "
                    f"HTTP status {resp.status_code} {resp.reason_phrase}".rstrip(),
                    hint="check the --dockerfile URL (it must answer 200 with the Dockerfile)",
                )
            for chunk in resp.iter_bytes(_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise ContextError(
                        f"the Dockerfile {shown} is larger than {max_bytes} bytes",
                        hint="check that --dockerfile names a Dockerfile, not an archive",
                    )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _http_error("the Dockerfile", url, exc) from None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise ContextError(
            f"cannot write the downloaded Dockerfile to {dest}: {exc.strerror or exc}",
            hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
        ) from None
    return dest
