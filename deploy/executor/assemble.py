"""Assemble the build context of the executor images (run by build-image.sh).

    python assemble.py REPO CONTEXT EPOCH

Writes CONTEXT (the directory the Dockerfile next to this file is built from):

    Dockerfile
    lib/       -> /kaniko/lib      the dynamic loader and every shared library the
                                   interpreter, its extension modules and git load
    python/    -> /kaniko/python   this machine's CPython 3.11 (the base interpreter of the
                                   Python running this script), stripped; its standard
                                   library without what lamina never imports; lamina and
                                   its pinned dependencies (taken from this Python's
                                   environment) in site-packages
    git/       -> /kaniko/git      Debian's git client: libexec/git-core/{git,
                                   git-remote-http(s), git-submodule ...}, a static busybox
                                   for git's shell scripts, an empty templates directory
    base/      -> /                /kaniko/{executor,warmer,.docker/,ssl/certs/,tmp/}, /tmp
    busybox/   -> /busybox         (the debug image) busybox and its applet links
    debug/     -> /                (the debug image) /bin/sh -> /busybox/sh

Every ELF file is patched (patchelf) to load its libraries and loader from /kaniko/lib.
Python modules ship as bytecode only (``module.pyc`` in place of ``module.py``), except
lamina's own (its tracebacks show source lines) and the few that read their own source.
Bytecode is compiled with unchecked hashes (no timestamps), every path gets the mtime
EPOCH and a normalised mode, so the same inputs give the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
KANIKO_LIB = "/kaniko/lib"
GIT_CORE = "/usr/lib/git-core"
#: git programs the client side needs (builtins run inside ``git`` itself)
GIT_PROGRAMS = (
    "git",
    "git-remote-http",
    "git-submodule",
    "git-sh-setup",
    "git-sh-i18n",
)
#: git's sh-i18n--envsubst (a 2 MB program) is replaced by this awk script next to this file
ENVSUBST = "git-sh-i18n--envsubst"
#: applets git's shell scripts (git-submodule, git-sh-setup, the envsubst script) call
GIT_SCRIPT_APPLETS = (
    "sh",
    "sed",
    "basename",
    "uname",
    "expr",
    "cat",
    "tr",
    "printf",
    "rm",
    "awk",
)

#: standard-library entries lamina never imports (top-level names)
STDLIB_DROP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "distutils",
    "pydoc_data",
    "pydoc.py",
    "unittest",
    "sqlite3",
    "curses",
    "dbm",
    "xmlrpc",
    # "wsgiref": azure-storage-blob formats dates with it (lamina[azure])
    "venv",
    "msilib",
    "site-packages",
    "dist-packages",
    "__phello__",
    "_pydecimal.py",  # decimal's fallback when the _decimal extension is missing
    "_pyio.py",  # io's pure-Python twin
    # mail and news protocols, old audio/data formats, the pickle disassembler
    "mailbox.py",
    "imaplib.py",
    "nntplib.py",
    "poplib.py",
    "smtpd.py",
    "telnetlib.py",
    "sunau.py",
    "xdrlib.py",
    "pickletools.py",
}
STDLIB_DROP_PREFIX = ("config-3.",)
#: extension modules lamina never loads
DYNLOAD_DROP = re.compile(
    r"^(_tkinter|_sqlite3|_curses|_curses_panel|_dbm|_gdbm|readline|xxlimited|xxlimited_35"
    r"|nis|ossaudiodev|spwd|_crypt|audioop|_test\w*|_ctypes_test|_xxsubinterpreters"
    r"|_xxtestfuzz|xxsubtype)\."
)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst, follow_symlinks=True)
    dst.chmod(0o755 if os.stat(src).st_mode & 0o111 else 0o644)


# ------------------------------------------------------------------ the interpreter
def copy_python(out: Path) -> Path:
    base = Path(sys._base_executable).resolve()  # type: ignore[attr-defined]
    stdlib = Path(sysconfig.get_path("stdlib"))
    exe = out / "bin" / "python3.11"
    copy_file(base, exe)
    target = out / "lib" / "python3.11"
    for entry in sorted(stdlib.iterdir()):
        name = entry.name
        if name in STDLIB_DROP or name.startswith(STDLIB_DROP_PREFIX) or name == "__pycache__":
            continue
        if entry.is_dir():
            shutil.copytree(
                entry,
                target / name,
                symlinks=False,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "test", "tests"),
            )
        else:
            copy_file(entry, target / name)
    for so in (target / "lib-dynload").iterdir():
        if DYNLOAD_DROP.match(so.name):
            so.unlink()
    (target / "site-packages").mkdir()
    return exe


def _requirements(dist: importlib.metadata.Distribution) -> list[str]:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
    return names


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        name, _, version = line.partition("==")
        pins[name.strip().lower()] = version.strip()
    return pins


def copy_dependencies(repo: Path, site: Path) -> None:
    """lamina's pinned dependencies and theirs, from this Python's environment (the versions
    must be the pinned ones), file by file as their RECORD lists them."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    copy_distributions(_pins(project["dependencies"]), site)
    for cffi in site.glob("zstandard/_cffi.*.so"):  # the C backend is the one loaded
        cffi.unlink()
    lamina = site / "lamina"
    shutil.copytree(repo / "src" / "lamina", lamina, ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"lamina-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: lamina\nVersion: {project['version']}\n"
    )


def copy_distributions(pins: dict[str, str], site: Path) -> None:
    """The distributions ``pins`` names (at the pinned versions) and their requirements."""
    todo = list(pins)
    seen: set[str] = set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        if name in pins and pins[name] and dist.version != pins[name]:
            sys.exit(f"assemble.py: {name} is {dist.version} here, pyproject pins {pins[name]}")
        for file in dist.files or []:
            rel = Path(str(file))
            if rel.parts[0] in ("..", "bin") or "__pycache__" in rel.parts:
                continue
            if rel.suffix == ".pyc" or rel.name in ("RECORD", "INSTALLER", "direct_url.json"):
                continue
            src = Path(str(dist.locate_file(file)))
            if src.is_file():
                copy_file(src, site / rel)
        todo.extend(_requirements(dist))


# ------------------------------------------------------------------ cloud extras: AWS
#: lamina[aws]: botocore, its service data trimmed to what lamina calls (ECR tokens, STS
#: for web identity / assume-role, SSO and sign-in for those profiles, S3 contexts)
BOTOCORE_SERVICES = frozenset({"ecr", "ecr-public", "sts", "sso", "sso-oidc", "signin", "s3"})


def copy_aws_extra(repo: Path, site: Path) -> None:
    """lamina[aws]'s pinned botocore (and its requirements), then botocore/data/ trimmed:
    the top-level files (endpoints, partitions, retry and default-config data botocore
    reads for every client) and the services above, without their examples."""
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    try:
        copy_distributions(_pins(extras["optional-dependencies"]["aws"]), site)
    except importlib.metadata.PackageNotFoundError as exc:
        sys.exit(f"assemble.py: {exc.name} is not installed here: pip install -e '.[dev]'")
    data = site / "botocore" / "data"
    for entry in sorted(data.iterdir()):
        if entry.is_dir() and entry.name not in BOTOCORE_SERVICES:
            shutil.rmtree(entry)
    for example in data.glob("*/*/examples-1.json"):
        example.unlink()


# ------------------------------------------------------------------ cloud extras: Google, Azure
#: lamina[gcp] (google-auth) and lamina[azure] (azure-identity, azure-storage-blob)
GCP_AZURE_EXTRAS = ("gcp", "azure")
#: what the relocated interpreter must import for them
GCP_AZURE_IMPORTS = "google.auth, google.auth.compute_engine, azure.identity, azure.storage.blob"


def copy_gcp_azure_extras(repo: Path, site: Path) -> None:
    """lamina[gcp]'s and lamina[azure]'s pinned distributions and their requirements."""
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    for extra in GCP_AZURE_EXTRAS:
        try:
            copy_distributions(_pins(extras["optional-dependencies"][extra]), site)
        except importlib.metadata.PackageNotFoundError as exc:
            sys.exit(f"assemble.py: {exc.name} is not installed here: pip install -e '.[dev]'")


# ------------------------------------------------------------------ end of the cloud extras


#: third-party modules that read their own source at run time keep it: anyio's packages
#: build their lazy-import table from their ``if TYPE_CHECKING`` block (inspect.getsource)
KEEP_SOURCE_MARKER = "not install_lazy_importer()"
#: what lamina never imports from its dependencies (directory names, file names, suffixes)
SITE_DROP_DIRS = frozenset({"aio", "tests"})  # the asyncio clients of google-auth, azure
SITE_DROP_NAMES = frozenset({"py.typed"})
SITE_DROP_SUFFIXES = (".pyi",)
#: whole entries of site-packages nothing in the image imports or reads: cffi's build-time
#: half (the compiled modules of cryptography and zstandard need only _cffi_backend),
#: zstandard's cffi backend (its compiled half is removed above), botocore's CA bundle
#: (botocore takes certifi's when certifi imports, and it does: requests needs it)
#: pyasn1 and pyasn1-modules (google-auth's requirements): only google-auth's pure-Python
#: RSA fallback imports them, and it needs the ``rsa`` package, which is not installed
SITE_DROP_PATHS = (
    "cffi",
    "pycparser",
    "zstandard/backend_cffi.py",
    "botocore/cacert.pem",
    "pyasn1",
    "pyasn1_modules",
)
#: the interpreter's installation path of the standard library (the bytecode names it)
IMAGE_STDLIB = "/kaniko/python/lib/python3.11"


def drop_unused(site: Path) -> None:
    """Remove the async subpackages, tests, type stubs and markers from site-packages
    (lamina's own package keeps everything), :data:`SITE_DROP_PATHS`, and the long
    descriptions in the distributions' METADATA."""
    if (site / "rsa").exists():
        sys.exit("assemble.py: rsa is installed: google-auth may import pyasn1, keep it")
    for rel in SITE_DROP_PATHS:
        path = site / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
        else:
            sys.exit(f"assemble.py: no {rel} in site-packages (update SITE_DROP_PATHS)")
    for metadata in sorted(site.glob("*.dist-info/METADATA")):
        # the headers importlib.metadata reads; the long description after them goes
        text = metadata.read_text(encoding="utf-8")
        metadata.write_text(text.partition("\n\n")[0] + "\n", encoding="utf-8")
    for path in sorted(site.rglob("*"), reverse=True):
        if not path.exists() or path.is_relative_to(site / "lamina"):
            continue
        if path.is_dir() and path.name in SITE_DROP_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and (
            path.name in SITE_DROP_NAMES or path.name.endswith(SITE_DROP_SUFFIXES)
        ):
            path.unlink()


def keeps_source(path: Path, site: Path) -> bool:
    """lamina's sources stay (tracebacks show its lines), and modules that read their own."""
    if path.is_relative_to(site / "lamina"):
        return True
    return path.is_relative_to(site) and KEEP_SOURCE_MARKER in path.read_text(errors="replace")


_COMPILE = """
import importlib.util, py_compile, sys
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for line in sys.stdin.read().splitlines():
    keep, src, dfile = line.split("\\0")
    cfile = importlib.util.cache_from_source(src) if keep == "1" else src + "c"
    py_compile.compile(src, cfile, dfile, doraise=True, invalidation_mode=mode)
"""


def compile_bytecode(tree: Path, site: Path) -> None:
    """Bytecode with unchecked hashes (no source mtime in it, never rewritten). Sourceless:
    ``module.pyc`` replaces ``module.py``, except where :func:`keeps_source` (those get
    ``__pycache__``). One process, in sorted order, PYTHONHASHSEED=0: the same bytes."""
    sources = sorted(tree.rglob("*.py"))
    keep = {src for src in sources if keeps_source(src, site)}
    lines = [
        f"{int(src in keep)}\0{src}\0{IMAGE_STDLIB}/{src.relative_to(tree)}" for src in sources
    ]
    subprocess.run(
        [sys.executable, "-I", "-c", _COMPILE],
        input="\n".join(lines),
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    for src in sources:
        if src not in keep:
            src.unlink()


# ------------------------------------------------------------------ shared libraries
def collect_libraries(elves: list[Path], lib: Path, inside: Path) -> None:
    """Copy every library ``elves`` load (ldd), and the loader, into ``lib``."""
    for elf in elves:
        for raw in run("ldd", str(elf)).splitlines():
            line = raw.strip()
            if "=> not found" in line:
                sys.exit(f"assemble.py: {elf}: {line}")
            if "=>" in line:
                parts = line.split("=>", 1)[1].split()
                path = parts[0] if parts and parts[0].startswith("/") else ""
            elif line.startswith("/"):
                path = line.split()[0]
            else:
                continue
            if not path or Path(path).resolve().is_relative_to(inside.resolve()):
                continue  # shipped with a wheel, found by its own rpath
            dest = lib / Path(path).name
            if not dest.exists():
                copy_file(Path(path), dest)


def loader_name() -> str:
    for raw in run("ldd", sys.executable).splitlines():
        line = raw.strip()
        if line.startswith("/") and "ld-linux" in line:
            return Path(line.split()[0]).name
    sys.exit("assemble.py: no dynamic loader found")


def patch(
    elves: list[Path], executables: list[Path], lib: Path, loader: str, stripped: list[Path]
) -> None:
    """Strip ``stripped`` and every ELF file; point the libraries' and ``elves``' rpath and
    the ``executables``' interpreter to /kaniko/lib (a wheel's own libraries keep theirs)."""
    for elf in [*sorted(lib.iterdir()), *elves, *stripped]:
        if is_elf(elf) and elf.name != loader:
            subprocess.run(["strip", "--strip-unneeded", str(elf)], check=True)
    for elf in [*sorted(lib.iterdir()), *elves]:
        if not is_elf(elf) or elf.name == loader:
            continue
        subprocess.run(
            ["patchelf", "--force-rpath", "--set-rpath", KANIKO_LIB, str(elf)], check=True
        )
    for exe in executables:
        subprocess.run(
            ["patchelf", "--set-interpreter", f"{KANIKO_LIB}/{loader}", str(exe)], check=True
        )


# ------------------------------------------------------------------ git and busybox
def copy_git(out: Path) -> list[Path]:
    core = out / "libexec" / "git-core"
    for name in GIT_PROGRAMS:
        copy_file(Path(GIT_CORE, name), core / name)
    (core / "git-remote-https").symlink_to("git-remote-http")
    copy_file(HERE / ENVSUBST, core / ENVSUBST)
    for script in ("git-submodule", "git-sh-setup"):
        path = core / script
        text = path.read_text()
        if text.startswith("#!/bin/sh"):  # there is no /bin/sh in the image
            path.write_text("#!/kaniko/git/libexec/git-core/sh" + text[len("#!/bin/sh") :])
    copy_file(Path(run("sh", "-c", "command -v busybox").strip()), out / "busybox")
    for applet in GIT_SCRIPT_APPLETS:
        (core / applet).symlink_to("../../busybox")
    (out / "templates").mkdir()
    return [core / name for name in GIT_PROGRAMS if is_elf(core / name)]


def busybox_tree(out: Path) -> None:
    busybox = Path(run("sh", "-c", "command -v busybox").strip())
    out.mkdir()
    copy_file(busybox, out / "busybox")
    for applet in sorted(set(run(str(busybox), "--list").split())):
        if applet != "busybox" and "/" not in applet:
            (out / applet).symlink_to("busybox")


# ------------------------------------------------------------------ the rest
def base_tree(out: Path, repo: Path) -> None:
    k = out / "kaniko"
    for d in (".docker", "ssl/certs", "tmp"):
        (k / d).mkdir(parents=True)
    for tool in ("executor", "warmer"):
        (k / tool).write_text(
            "#!/kaniko/python/bin/python3.11 -I\n"
            f'"""kaniko\'s /kaniko/{tool}: lamina in the executor image."""\n'
            f"from lamina.cli.main import {tool}_main\n\n{tool}_main()\n"
        )
        (k / tool).chmod(0o755)
    for bundle in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if os.path.isfile(bundle):
            copy_file(Path(bundle), k / "ssl" / "certs" / "ca-certificates.crt")
            break
    else:
        sys.exit("assemble.py: no CA bundle on this machine (apt-get install ca-certificates)")
    (out / "tmp").mkdir()


def normalise(tree: Path, epoch: int) -> None:
    """Modes 0755/0644 (1777 for the tmp directories), mtime ``epoch`` everywhere."""
    sticky = {tree / "base" / "tmp", tree / "base" / "kaniko" / "tmp"}
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                path.chmod(0o1777 if path in sticky else 0o755)
            elif stat.S_ISREG(st.st_mode):
                path.chmod(0o755 if st.st_mode & 0o111 else 0o644)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def main() -> None:
    repo, ctx, epoch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"assemble.py: Python {sys.version_info[0]}.{sys.version_info[1]}, need 3.11")
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    lib = ctx / "lib"
    lib.mkdir()
    py = ctx / "python"
    exe = copy_python(py)
    site = py / "lib" / "python3.11" / "site-packages"
    copy_dependencies(repo, site)
    copy_aws_extra(repo, site)
    copy_gcp_azure_extras(repo, site)
    git_elves = copy_git(ctx / "git")
    py_elves = [exe, *sorted((py / "lib" / "python3.11" / "lib-dynload").glob("*.so"))]
    wheel_elves = sorted(p for p in site.rglob("*.so*") if is_elf(p))
    collect_libraries([*py_elves, *wheel_elves, *git_elves], lib, ctx)
    loader = loader_name()
    patch([*py_elves, *git_elves], [exe, *git_elves], lib, loader, wheel_elves)
    drop_unused(site)
    compile_bytecode(py / "lib" / "python3.11", site)
    base_tree(ctx / "base", repo)
    busybox_tree(ctx / "busybox")
    (ctx / "debug" / "bin").mkdir(parents=True)
    (ctx / "debug" / "bin" / "sh").symlink_to("/busybox/sh")
    shutil.copyfile(HERE / "Dockerfile", ctx / "Dockerfile")
    normalise(ctx, epoch)
    # the interpreter must work from the tree (its loader path only exists in the image)
    check = subprocess.run(
        [
            str(lib / loader),
            "--library-path",
            str(lib),
            str(exe),
            "-I",
            "-B",
            "-c",
            "import sys, lamina.cli.main, ssl, zlib, bz2, lzma, ctypes, zstandard, isal, httpx;"
            # lamina[aws]: the trimmed botocore data still makes the clients lamina uses
            "from botocore.session import Session as S; k = dict(region_name='us-east-1',"
            " aws_access_key_id='a', aws_secret_access_key='b');"
            "[S().create_client(n, **k) for n in ('ecr', 'ecr-public', 'sts', 's3')];"
            f"import {GCP_AZURE_IMPORTS};"  # lamina[gcp], lamina[azure]
            # sourceless bytecode and drop_unused(): what lamina's cloud code paths load
            "import google.auth.transport.requests, google.oauth2.service_account;"
            "from azure.storage.blob import BlobServiceClient as B;"
            "B('https://a.blob.core.windows.net', credential=azure.identity"
            ".DefaultAzureCredential());"
            "from cryptography import x509;"
            "from cryptography.hazmat.primitives.asymmetric import ec;"
            "ec.generate_private_key(ec.SECP256R1());"
            "import os, botocore.httpsession as H; assert os.path.isfile(H.get_cert_path(True));"
            # anyio's lazy imports read its source; lamina's own source is there
            "import anyio, inspect; assert '__dir__' in vars(anyio), 'anyio: no source';"
            "assert inspect.getsource(lamina.cli.main);"
            f"assert sys.prefix == {str(py)!r}, sys.prefix",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        sys.exit(f"assemble.py: the relocated interpreter does not start:\n{check.stderr}")
    check_envsubst(ctx / "git" / "libexec" / "git-core")


def check_envsubst(core: Path) -> None:
    """The envsubst script does what git's program does for eval_gettext (with the image's
    busybox applets: they are relative links, so they work from the tree)."""
    fmt = "fatal: $prog cannot\n be used ${x}y $unset $$ $1 ${prog}"
    env = {"PATH": str(core), "prog": "git sub&\\1", "x": "a\\nb"}
    script = [str(core / "sh"), str(core / ENVSUBST)]
    names = subprocess.run(
        [*script, "--variables", fmt], env=env, capture_output=True, text=True, check=False
    )
    text = subprocess.run(
        [*script, fmt], input=fmt, env=env, capture_output=True, text=True, check=False
    )
    want = "fatal: git sub&\\1 cannot\n be used a\\nby  $$ $1 git sub&\\1"
    if names.stdout != "prog\nx\nunset\nprog\n" or text.stdout != want:
        sys.exit(f"assemble.py: {ENVSUBST} is wrong: {names!r} {text!r}")


if __name__ == "__main__":
    main()
