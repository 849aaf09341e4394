"""Git sources: ``ADD <git repository>`` (BuildKit's rules) and git build contexts.

* Git sources: ``http(s)://…/repo.git``, ``git://…``, and over SSH
  ``git@host:repo`` and ``ssh://`` with the keys of the ``--ssh default`` agent
  only (no ssh config, host keys not checked: BuildKit's defaults).
* ``#ref:subdir`` picks a branch, tag or commit SHA and a directory of the
  repository; the query form ``?ref=&branch=&tag=&subdir=&checksum=&commit=
  &keep-git-dir=&submodules=&mtime=`` says the same (conflicts are errors).
* ``.git`` is dropped unless ``--keep-git-dir=true``; submodules are checked
  out (``--depth=1``) unless ``submodules=false``.
* File modes are git's (0644/0755 under umask 022), files belong to root
  (the COPY machinery applies ``--chown``). Mtimes are the checkout time,
  or the commit time when ``SOURCE_DATE_EPOCH`` is set or ``mtime=commit``
  (BuildKit's ``git.mtime``).
* ``--checksum`` (or ``checksum=``/``commit=``) is a commit SHA or prefix the
  checked-out commit (or the annotated tag object) must match.
* Authentication: credentials in the URL, or the ``GIT_AUTH_TOKEN`` /
  ``GIT_AUTH_HEADER`` build secrets (optionally suffixed ``.<host>``), sent as
  an HTTP header through git's environment (never its command line, never
  a log). ``.git/config`` of a kept git directory names the URL without
  credentials.

The ``git`` binary runs with a clean environment (no system or user git
config, no terminal prompts, no ``file``/``ext`` transports), umask 022 and
a timeout. Its errors reach callers as :class:`BuildStepError` (``ADD``) or the
error type the caller names (a git build context: :class:`ContextError`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from lamina.context._urls import redact_url
from lamina.errors import (
    BuildStepError,
    DockerfileError,
    FilesystemError,
    LaminaError,
    NotSupportedError,
    SourceLocation,
)
from lamina.fs import safe_join

__all__ = [
    "GitCheckout",
    "GitSource",
    "fetch_git",
    "git_auth_header",
    "parse_git_source",
    "redact_url",
]

_SUPPORTED_SCHEMES = ("http", "https", "git", "ssh", "git+ssh")
_QUERY_KEYS = frozenset(
    {"ref", "branch", "tag", "subdir", "checksum", "commit", "keep-git-dir", "submodules", "mtime"}
)
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]{7,64}$")
_TIMEOUT = 600.0
_BOOL = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class GitSource:
    """A git source of ``ADD``: the remote, what to check out and how."""

    #: the remote URL, fragment and query removed (may hold credentials: never log it)
    remote: str
    #: branch, tag, ``refs/…`` name or commit SHA (prefix); None: the default branch
    ref: str | None
    #: the directory of the repository to copy, relative ("" for the root)
    subdir: str
    keep_git_dir: bool
    #: expected commit SHA (prefix)
    checksum: str | None
    submodules: bool
    #: "commit", "checkout" or None (commit time when SOURCE_DATE_EPOCH is set)
    mtime: str | None
    #: fetched over SSH (``git@host:path``, ``ssh://``): needs an SSH agent
    ssh: bool = False

    @property
    def display(self) -> str:
        """The remote without credentials, with the ref and subdir, for logs and errors."""
        shown = redact_url(self.remote)
        if self.ref or self.subdir:
            shown += f"#{self.ref or ''}" + (f":{self.subdir}" if self.subdir else "")
        return shown


def _bool(key: str, value: str, location: SourceLocation | None) -> bool:
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise DockerfileError(
            f"invalid value {value!r} for {key} in a git URL",
            hint=f"write {key}=true or {key}=false",
            location=location,
        ) from None


def _merge(
    what: str, first: str | None, second: str | None, location: SourceLocation | None
) -> str | None:
    if first is not None and second is not None and first != second:
        raise DockerfileError(
            f"conflicting {what} in a git source: {first!r} and {second!r}",
            hint=f"give the {what} once (in the URL fragment, its query or the ADD flag)",
            location=location,
        )
    return first if first is not None else second


def _query(
    query: str, location: SourceLocation | None
) -> tuple[dict[str, str], str | None, str | None]:
    """The query's options (one value per key), its ref and its expected commit."""
    opts: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY_KEYS:
            raise NotSupportedError(
                f"the git URL query parameter {key!r}",
                hint="use ref, branch, tag, subdir, checksum, commit, keep-git-dir, "
                "submodules or mtime",
                location=location,
            )
        _merge(key, opts.get(key), value, location)
        opts[key] = value
    ref = _merge("ref", opts.get("ref"), opts.get("branch"), location)
    ref = _merge("ref", ref, opts.get("tag"), location)
    checksum = _merge("checksum", opts.get("checksum"), opts.get("commit"), location)
    return opts, ref, checksum


def parse_git_source(
    src: str,
    *,
    keep_git_dir: bool | None,
    checksum: str | None,
    location: SourceLocation | None,
) -> GitSource:
    """Split an ``ADD`` git source into remote, ref and subdir and merge the ADD flags.

    ``git@host:path`` (scp-like) and ``ssh://`` remotes are SSH remotes; other
    schemes than http(s), git and ssh are refused with :class:`NotSupportedError`.
    """
    if src.lower().startswith("git@"):
        rest, _, fragment = src.partition("#")
        remote, _, query = rest.partition("?")
        ssh = True
    else:
        parts = urlsplit(src)
        scheme = parts.scheme.lower()
        if scheme not in _SUPPORTED_SCHEMES:
            raise NotSupportedError(
                f"ADD of a git repository with the {parts.scheme}:// transport ({redact_url(src)})",
                hint="use an https://, http://, git:// or ssh:// URL",
                location=location,
            )
        remote = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        query, fragment = parts.query, parts.fragment
        ssh = scheme in ("ssh", "git+ssh")
    opts, q_ref, q_checksum = _query(query, location)
    f_ref, _, f_subdir = fragment.partition(":")
    ref = _merge("ref", f_ref or None, q_ref, location)
    if ref == "HEAD":
        ref = None  # the remote's default branch
    subdir = _merge("subdir", f_subdir or None, opts.get("subdir") or None, location) or ""
    if ref is not None and (ref.startswith("-") or not ref.strip() or ".." in ref):
        raise DockerfileError(
            f"invalid git ref {ref!r} in {redact_url(src)}",
            hint="name a branch, a tag or a commit SHA after the #",
            location=location,
        )
    clean_subdir = posixpath.normpath("/" + subdir).lstrip("/") if subdir else ""
    if ".." in subdir.split("/"):
        raise DockerfileError(
            f"invalid git subdirectory {subdir!r} in {redact_url(src)}: it leaves the repository",
            hint="name a directory inside the repository after the ':'",
            location=location,
        )
    keep = keep_git_dir
    if "keep-git-dir" in opts:
        in_url = _bool("keep-git-dir", opts["keep-git-dir"], location)
        if keep is not None and keep != in_url:
            raise DockerfileError(
                f"conflicting keep-git-dir: --keep-git-dir={str(keep).lower()} "
                f"and keep-git-dir={opts['keep-git-dir']} in the URL",
                hint="give it once",
                location=location,
            )
        keep = in_url
    expected = _merge("checksum", checksum, q_checksum, location)
    if expected is not None:
        expected = expected.strip().lower()
        if not _HEX.match(expected):
            raise DockerfileError(
                f"invalid --checksum {expected!r} for a git source",
                hint="give the commit SHA (or at least its first 7 hex digits)",
                location=location,
            )
    mtime = opts.get("mtime")
    if mtime is not None and mtime not in ("commit", "checkout"):
        raise DockerfileError(
            f"invalid mtime={mtime} in a git URL",
            hint="write mtime=commit or mtime=checkout",
            location=location,
        )
    return GitSource(
        remote=remote,
        ref=ref,
        subdir=clean_subdir,
        keep_git_dir=bool(keep),
        checksum=expected,
        submodules=_bool("submodules", opts.get("submodules", "true"), location),
        mtime=mtime,
        ssh=ssh,
    )


def git_auth_header(remote: str, secrets: Mapping[str, bytes]) -> str | None:
    """The ``Authorization`` header BuildKit builds from the git auth secrets, or None.

    ``GIT_AUTH_HEADER[.<host>]`` is used as it is; ``GIT_AUTH_TOKEN[.<host>]``
    becomes ``basic base64(x-access-token:<token>)``. The host-suffixed secret
    wins over the plain one.
    """
    host = urlsplit(remote).hostname or ""
    for name in (f"GIT_AUTH_HEADER.{host}", "GIT_AUTH_HEADER"):
        if name in secrets:
            return secrets[name].decode("utf-8", "replace").strip()
    for name in (f"GIT_AUTH_TOKEN.{host}", "GIT_AUTH_TOKEN"):
        if name in secrets:
            token = secrets[name].decode("utf-8", "replace").strip()
            raw = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            return f"basic {raw}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class GitCheckout:
    """A checked-out git source: the directory to copy and the commit it holds."""

    #: the repository's work tree (with ``.git`` only when kept)
    work_tree: Path
    #: the directory to copy: the work tree or its subdir
    root: Path
    commit: str
    commit_time: int


class _Git:
    """The git binary with a clean environment, a timeout and redacted errors."""

    def __init__(
        self,
        source: GitSource,
        *,
        home: Path,
        auth_header: str | None,
        ssh_socket: Path | None,
        location: SourceLocation | None,
        timeout: float,
        label: str = "ADD",
        error_type: type[LaminaError] = BuildStepError,
        insecure_skip_tls: bool = False,
    ) -> None:
        self.source = source
        self.location = location
        self.timeout = timeout
        self.label = label
        self.error_type = error_type
        exe = find_git()
        if exe is None:
            raise self.fail(
                "the git program is not installed",
                hint="install git (Debian package git) on the build host",
            )
        self.exe = exe
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_SSH_COMMAND": "false",
            "GIT_PROTOCOL_FROM_USER": "0",
        }
        self.env.update(_installation_env(home))
        if source.ssh:
            if ssh_socket is None:
                raise self.fail(
                    "fetching a git repository over SSH needs an SSH agent",
                    hint="pass --ssh default (the agent of $SSH_AUTH_SOCK) or "
                    "--ssh default=/path/to/agent.sock, or use the https:// URL",
                )
            if shutil.which("ssh", path=self.env["PATH"]) is None:  # the executor images
                raise self.fail(
                    "fetching a git repository over SSH needs the ssh program, which is not "
                    "installed here",
                    hint="use the repository's https:// URL (private: the GIT_AUTH_TOKEN "
                    "secret), or install ssh (Debian package openssh-client)",
                )
            # as BuildKit: the forwarded agent's keys only, no config, no known_hosts
            self.env["SSH_AUTH_SOCK"] = str(ssh_socket)
            self.env["GIT_SSH_VARIANT"] = "ssh"
            self.env["GIT_SSH_COMMAND"] = (
                "ssh -F /dev/null -o BatchMode=yes -o IdentityFile=none "
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
            )
        config = [
            ("protocol.file.allow", "never"),
            ("protocol.ext.allow", "never"),
            ("init.defaultBranch", "main"),
            ("advice.detachedHead", "false"),
            ("core.autocrlf", "false"),
            ("core.symlinks", "true"),
        ]
        if insecure_skip_tls:
            config.append(("http.sslVerify", "false"))
        if auth_header is not None:  # for this host only (not a submodule's other host)
            parts = urlsplit(source.remote)
            scope = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"
            config.append((f"http.{scope}.extraHeader", f"Authorization: {auth_header}"))
        self.env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            self.env[f"GIT_CONFIG_KEY_{i}"] = key
            self.env[f"GIT_CONFIG_VALUE_{i}"] = value

    def __call__(self, args: Sequence[str], *, cwd: Path | None = None, what: str) -> str:
        """Run ``git args``; its stdout, or an error (``error_type``) saying ``what`` failed."""
        try:
            done = subprocess.run(
                [self.exe, *args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
                umask=0o022,
            )
        except subprocess.TimeoutExpired:
            raise self.fail(
                f"{what} took longer than {self.timeout:.0f}s",
                hint="check that the git server answers",
            ) from None
        except OSError as exc:
            raise self.fail(
                f"cannot run git: {exc.strerror or exc}", hint="check the git installation"
            ) from None
        if done.returncode != 0:
            raise self.error(what, done.stderr)
        return done.stdout.decode("utf-8", "replace")

    def fail(self, message: str, *, hint: str) -> LaminaError:
        """An error about the source: ``<label> <remote without credentials>: message``."""
        return self.error_type(
            f"{self.label} {self.source.display}: {message}", hint=hint, location=self.location
        )

    def error(self, what: str, stderr: bytes, hint: str | None = None) -> LaminaError:
        text = stderr.decode("utf-8", "replace").replace(self.source.remote, "<remote>")
        lines = [ln.strip() for ln in redact_url(text).splitlines() if ln.strip()]
        detail = "; ".join(lines[-3:]) or "git failed"
        return self.fail(
            f"{what} failed: {detail}",
            hint=hint or "check the URL, the ref and that the server is reachable",
        )


def find_git() -> str | None:
    """The git program: ``$GIT_EXEC_PATH/git`` when that is set (the executor image's
    relocated git, whose helpers live there), else ``git`` on ``PATH``."""
    exec_path = os.environ.get("GIT_EXEC_PATH")
    if exec_path:
        candidate = os.path.join(exec_path, "git")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("git")


def _installation_env(home: Path) -> dict[str, str]:
    """What git needs from lamina's environment: where its helpers and templates are
    (``GIT_EXEC_PATH``, ``GIT_TEMPLATE_DIR``), and lamina's TLS trust: ``GIT_SSL_CAINFO`` /
    ``GIT_SSL_CAPATH`` as given, else a bundle of ``SSL_CERT_FILE`` and every file of
    the ``SSL_CERT_DIR`` directories (written to git's private ``home``)."""
    from lamina.registry import write_trust_bundle

    env = {
        name: os.environ[name]
        for name in ("GIT_EXEC_PATH", "GIT_TEMPLATE_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH")
        if os.environ.get(name)
    }
    if "GIT_SSL_CAINFO" not in env:
        bundle = home / "ca-certificates.pem"
        if write_trust_bundle(bundle):
            env["GIT_SSL_CAINFO"] = str(bundle)
    return env


@dataclass(frozen=True, slots=True)
class _Target:
    #: what to fetch (a ref name or a commit SHA)
    fetch: str
    #: refspec destination kept in a kept ``.git`` (None: none)
    local_ref: str | None
    #: branch to check out (keep-git-dir), None: detached
    branch: str | None
    #: the SHA the remote advertised for the ref and its peeled commit, if any
    advertised: tuple[str, ...] = ()


def _resolve(git: _Git, source: GitSource) -> _Target | None:
    """What to fetch for ``source.ref`` (None: a short SHA, fetched with full history)."""
    remote = source.remote
    ref = source.ref
    if ref is not None and _FULL_SHA.match(ref):
        return _Target(ref, None, None)
    if ref is None:
        out = git(["ls-remote", "--symref", remote, "HEAD"], what="listing the remote HEAD")
        for line in out.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                branch = line[5:-5].strip()
                short = branch.removeprefix("refs/heads/")
                return _Target(branch, f"refs/remotes/origin/{short}", short)
        return _Target("HEAD", None, None)
    out = git(["ls-remote", remote, ref], what=f"looking up {ref!r}")
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name.strip()] = sha.strip()
    for name in (ref, f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name not in found or not name.startswith("refs/"):
            continue
        shas = (found[name], found.get(name + "^{}", found[name]))
        if name.startswith("refs/heads/"):
            short = name.removeprefix("refs/heads/")
            return _Target(name, f"refs/remotes/origin/{short}", short, shas)
        if name.startswith("refs/tags/"):
            return _Target(name, name, None, shas)
        return _Target(name, None, None, shas)
    if _HEX.match(ref):
        return None
    raise git.fail(
        f"the repository has no branch or tag named {ref!r}",
        hint="check the ref after the # (a branch, a tag or a full commit SHA)",
    )


def fetch_git(
    source: GitSource,
    into: Path,
    *,
    commit_mtime: bool,
    auth_header: str | None = None,
    ssh_socket: Path | None = None,
    location: SourceLocation | None = None,
    timeout: float = _TIMEOUT,
    label: str = "ADD",
    error_type: type[LaminaError] = BuildStepError,
    insecure_skip_tls: bool = False,
    checkout_commit: str | None = None,
    subdir_hint: str = "check the path after the ':' in the URL fragment",
) -> GitCheckout:
    """Check ``source`` out below the (new) directory ``into``; the caller deletes ``into``.

    ``commit_mtime``: give every entry the commit time unless the URL says
    ``mtime=checkout`` (without it, ``mtime=commit`` in the URL still does).
    ``label`` and ``error_type`` make the errors (``ADD`` and :class:`BuildStepError`
    by default). ``checkout_commit``: after fetching the ref with its history,
    check out this commit (SHA or prefix) instead of the ref's tip (kaniko's
    ``#ref#commit``). ``insecure_skip_tls``: do not verify the server's certificate.
    """
    home = into / "home"
    work = into / "checkout"
    try:
        home.mkdir(parents=True)
        work.mkdir()
    except OSError as exc:
        raise FilesystemError(f"cannot create {into}: {exc.strerror or exc}") from exc
    git = _Git(
        source,
        home=home,
        auth_header=auth_header,
        ssh_socket=ssh_socket,
        location=location,
        timeout=timeout,
        label=label,
        error_type=error_type,
        insecure_skip_tls=insecure_skip_tls,
    )
    target = _resolve(git, source)
    git(["init", "-q", str(work)], what="git init")
    fetch = ["-C", str(work), "fetch", "-q", "--no-tags", "--no-write-fetch-head"]
    checkout = ""
    if target is not None:
        refspec = f"+{target.fetch}:{target.local_ref or 'refs/lamina/fetched'}"
        try:
            depth = [] if checkout_commit is not None else ["--depth=1"]
            git([*fetch, *depth, source.remote, refspec], what=f"fetching {target.fetch!r}")
            checkout = target.local_ref or "refs/lamina/fetched"
        except git.error_type:
            if not _FULL_SHA.match(target.fetch):
                raise
            # a server that refuses to send a commit by SHA: fetch everything, look it up
    if not checkout:
        checkout = _fetch_history(git, source, work, fetch)
    if checkout_commit is not None:
        checkout = _find_commit(git, source, work, fetch, checkout_commit)
        target = None
    if target is not None and target.branch is not None and source.keep_git_dir:
        git(["-C", str(work), "checkout", "-q", "-B", target.branch, checkout], what="checkout")
    else:
        git(["-C", str(work), "checkout", "-q", "--detach", checkout], what="checkout")
    git(["-C", str(work), "update-ref", "-d", "refs/lamina/fetched"], what="cleanup")
    commit = git(["-C", str(work), "rev-parse", "HEAD"], what="reading HEAD").strip()
    _check_commit(git, source, commit, target)
    if source.keep_git_dir:
        git(
            [
                *("-C", str(work), "remote", "add", "origin"),
                source.remote if source.ssh else _strip_userinfo(source.remote),
            ],
            what="git remote add",
        )
    if source.submodules and (work / ".gitmodules").is_file():
        git(
            ["-C", str(work), "submodule", "update", "--init", "--recursive", "--depth=1"],
            what="updating submodules",
        )
    when = int(git(["-C", str(work), "log", "-1", "--format=%ct", "HEAD"], what="git log"))
    if source.keep_git_dir:
        git(["-C", str(work), "reflog", "expire", "--all", "--expire=now"], what="cleanup")
    else:
        _drop_git_dirs(work)
    root = work
    if source.subdir:
        root = safe_join(work, source.subdir, follow_final=True)
        if not root.is_dir():
            raise git.fail(
                f"the repository has no directory {source.subdir!r} at commit {commit[:12]}",
                hint=subdir_hint,
            )
    use_commit = source.mtime == "commit" or (commit_mtime and source.mtime != "checkout")
    if use_commit:
        _set_times(root, when)
    return GitCheckout(work_tree=work, root=root, commit=commit, commit_time=when)


def _fetch_history(git: _Git, source: GitSource, work: Path, fetch: Sequence[str]) -> str:
    """Fetch every branch and tag with their history; the commit ``source.ref`` names."""
    refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    git([*fetch, source.remote, *refspecs], what="fetching the repository")
    try:
        commit = git(
            ["-C", str(work), "rev-parse", "--verify", "-q", f"{source.ref}^{{commit}}"],
            what="looking up the commit",
        ).strip()
    except git.error_type:
        commit = ""
    if not commit:
        raise git.fail(
            f"the repository has no branch, tag or commit {source.ref!r}",
            hint="check the ref after the # (a branch, a tag or a commit SHA)",
        )
    return commit


def _find_commit(
    git: _Git, source: GitSource, work: Path, fetch: Sequence[str], commit: str
) -> str:
    """The full SHA of ``commit``: in what was fetched, else fetched by SHA."""
    if not _HEX.match(commit):
        raise git.fail(
            f"{commit!r} is not a commit SHA",
            hint="the part after the second # names a commit (at least 7 hex digits)",
        )

    def lookup() -> str:
        try:
            return git(
                ["-C", str(work), "rev-parse", "--verify", "-q", f"{commit}^{{commit}}"],
                what="looking up the commit",
            ).strip()
        except git.error_type:
            return ""

    found = lookup()
    if not found and _FULL_SHA.match(commit):
        with contextlib.suppress(LaminaError):
            git([*fetch, source.remote, commit], what=f"fetching {commit!r}")
            found = lookup()
    if not found:
        raise git.fail(
            f"the repository has no commit {commit!r} (looked in the history of "
            f"{source.ref or 'the default branch'!r})",
            hint="give a commit reachable from the ref after the first #",
        )
    return found


def _check_commit(git: _Git, source: GitSource, commit: str, target: _Target | None) -> None:
    expected = source.checksum
    if expected is None:
        return
    candidates = (commit, *(target.advertised if target is not None else ()))
    if any(c.startswith(expected) for c in candidates):
        return
    raise git.fail(
        f"checksum mismatch: expected commit {expected}, got {commit}",
        hint="the ref moved to another commit, or --checksum is wrong",
    )


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _drop_git_dirs(work: Path) -> None:
    """Remove ``.git`` (the repository's and every submodule's ``.git`` file)."""
    try:
        shutil.rmtree(work / ".git")
        for dirpath, dirnames, filenames in os.walk(work):
            if ".git" in filenames:
                os.unlink(os.path.join(dirpath, ".git"))
            if ".git" in dirnames:
                shutil.rmtree(os.path.join(dirpath, ".git"))
                dirnames.remove(".git")
    except OSError as exc:
        raise FilesystemError(
            f"cannot remove .git from the checkout in {work}: {exc.strerror or exc}"
        ) from exc


def _set_times(root: Path, when: int) -> None:
    """Give every entry below ``root`` (and ``root``) the mtime ``when``, deepest first."""
    try:
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for name in [*filenames, *dirnames]:
                os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
        os.utime(root, (when, when))
    except OSError as exc:
        raise FilesystemError(
            f"cannot set the times of the checkout in {root}: {exc.strerror or exc}"
        ) from exc
