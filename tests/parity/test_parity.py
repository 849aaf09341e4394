"""Parity: every case under ``cases/`` built by lamina and by buildah must agree.

Both tools pull the base images from the same loopback registry (build arg
``REGISTRY``). The final filesystem trees (path, type, mode, owner, size, content,
link target, hardlink grouping) and the config fields must be identical, except
for the differences listed below, each with its reason.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.parity.harness import (
    Buildah,
    build_lamina,
    config_view,
    copy_context,
    diff_configs,
    diff_trees,
    history_problems,
    unpack_tree,
    unpack_with_umoci,
    walk_tree,
)

pytestmark = [pytest.mark.registry, pytest.mark.root]

CASES = Path(__file__).parent / "cases"

# --------------------------------------------------------------- allowed differences
#: Paths that differ because of the RUN runtime, not because of the build semantics.
#: buildah (chroot isolation) bind-mounts these over the rootfs for every RUN and, when
#: the base image lacks them, creates an *empty* placeholder file to mount onto, which
#: stays in the committed layer. lamina provides them without leaving anything behind.
#: Allowed only in that exact shape: absent from lamina, an empty regular file in buildah.
RUNTIME_PLACEHOLDERS: dict[str, str] = {
    "/etc/hostname": "buildah's mount point for the container hostname during RUN",
    "/etc/hosts": "buildah's mount point for the generated hosts file during RUN",
    "/etc/resolv.conf": "buildah's mount point for the host's resolver config during RUN",
}

#: Config fields where buildah 1.28 departs from BuildKit on purpose (§7.1).
CONFIG_ALLOWED: dict[str, str] = {
    "ArgsEscaped": "BuildKit's dispatchCmd sets ArgsEscaped: true on every CMD (any form, "
    "even on Linux; ENTRYPOINT leaves it alone), as lamina does; buildah 1.28 never sets it",
}

#: Reasons of per-case differences (used in ALL_CASES below).
VOLUME_DIRS = (
    "buildah 1.28 creates the directories of VOLUME paths in the rootfs when it "
    "commits (VOLUME paths are restored after each RUN); BuildKit only records "
    "them in the config and leaves the filesystem alone"
)
VOLUME_WRITES = (
    "a RUN writing below a VOLUME path: buildah 1.28 (like Docker's classic builder and "
    "kaniko) discards it; BuildKit keeps changes below VOLUME paths, and so does lamina, "
    "which also makes a VOLUME directory missing from the image exist for the RUN (BuildKit "
    "fails the step there; buildah and kaniko create it)"
)
LOWER_LAYER_HARDLINK = (
    "a hard link made by RUN to a file of a lower layer: BuildKit's differ (and "
    "lamina) puts both names in the new layer as one hardlink group; buildah's "
    "vfs differ only sees the new name and stores it as a separate copy "
    "(same content, mode and owner)"
)

MOUNT_STUBS = (
    "RUN --mount targets that did not exist: buildah 1.28 leaves the directories it "
    "created to mount onto (and their parents) in the layer; BuildKit removes the "
    "mount stubs it created after the RUN (moby/buildkit#3307), and so does lamina"
)

#: Cases whose images are also unpacked with umoci, to check the in-memory unpacker.
UMOCI_CROSSCHECK = frozenset(
    {"whiteouts", "hardlinks", "hardlink_modified", "add_local_tar", "special_modes"}
)

#: Labels buildah adds on its own.
BUILDAH_LABELS = ("io.buildah.version",)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    base: str = "busybox"  # or "debian": which fixture images the Dockerfile pulls
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    prepare: Callable[[Path], None] | None = None  # generates context files
    slow: bool = False
    #: path (or ``prefix/*``) -> (Entry fields allowed to differ, or ``("*",)``; reason)
    allowed_paths: Mapping[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    allowed_config: Mapping[str, str] = field(default_factory=dict)
    #: flags given to both tools; ``{context}`` stands for the context directory
    extra_args: tuple[str, ...] = ()


# ------------------------------------------------------------ generated context files
# (kept out of git: binary archives, modes git cannot store, owners, big data)


def _tar_bytes(compress: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w:gz" if compress else "w", format=tarfile.PAX_FORMAT
    ) as tar:
        top = tarfile.TarInfo("dir")  # explicit: the owner of implicit parents is unclear
        top.type, top.mode, top.uid, top.gid, top.mtime = tarfile.DIRTYPE, 0o750, 7, 7, 1
        tar.addfile(top)
        for name, data, mode, uid in (
            ("top.txt", b"top\n", 0o644, 0),
            ("dir/inner.txt", b"inner\n", 0o600, 1000),
            ("dir/exec.sh", b"#!/bin/sh\n", 0o755, 0),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, 1
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("dir/link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "inner.txt", 1
        tar.addfile(link)
        hard = tarfile.TarInfo("hard.txt")
        hard.type, hard.linkname, hard.mtime = tarfile.LNKTYPE, "top.txt", 1
        tar.addfile(hard)
        empty = tarfile.TarInfo("emptydir")
        empty.type, empty.mode, empty.mtime = tarfile.DIRTYPE, 0o711, 1
        tar.addfile(empty)
    return buf.getvalue()


def _prepare_tars(ctx: Path) -> None:
    (ctx / "plain.tar").write_bytes(_tar_bytes(False))
    (ctx / "gz.tar.gz").write_bytes(_tar_bytes(True))


def _prepare_owned(ctx: Path) -> None:
    for path in [ctx / "owned", *(ctx / "owned").rglob("*")]:
        os.lchown(path, 1000, 1000)
    (ctx / "owned" / "file").chmod(0o664)
    (ctx / "owned" / "sub").chmod(0o750)


def _prepare_suid(ctx: Path) -> None:
    (ctx / "suid-context").chmod(0o4755)


def _prepare_big(ctx: Path) -> None:
    # 50 MiB, deterministic, not compressible to nothing
    block = bytes(range(256)) * 4096  # 1 MiB
    with (ctx / "big.bin").open("wb") as fh:
        for i in range(50):
            fh.write(bytes([i]) + block[1:])


def _prepare_many(ctx: Path) -> None:
    many = ctx / "many"
    for d in range(100):
        sub = many / f"d{d:03d}"
        sub.mkdir(parents=True)
        for f in range(200):
            (sub / f"f{f:04d}").write_bytes(b"%d/%d\n" % (d, f))


ALL_CASES: list[Case] = [
    Case("run_forms"),
    Case("run_exec_no_shell"),
    Case("cmd_entrypoint_forms"),
    Case("entrypoint_resets_cmd"),
    Case("cmd_then_entrypoint"),
    Case("env_forms"),
    Case("arg_scoping", build_args={"OVERRIDDEN": "from-cli", "GLOBAL": "global-cli"}),
    Case("label_maintainer"),
    Case(
        "expose_volume",
        allowed_paths=dict.fromkeys(
            ("/logs", "/var/cache", "/var/cache/app"), (("*",), VOLUME_DIRS)
        ),
    ),
    Case(  # kaniko's Dockerfile_test_volume shape: BuildKit fails it (no /foo1)
        "volume_then_write",
        allowed_paths={"/foo1/hello": (("*",), VOLUME_WRITES)},
    ),
    Case("user_workdir"),
    Case("workdir_creation"),
    Case("stopsignal_healthcheck"),
    Case("healthcheck_exec"),
    Case("shell_instruction"),
    Case(
        "shell_form_cmd",
        allowed_config={
            "Cmd": "shell-form CMD after SHELL: BuildKit wraps it with the SHELL "
            '(["/bin/ash", "-c", ...]); buildah 1.28 always uses ["/bin/sh", "-c", ...]'
        },
    ),
    Case("onbuild"),
    Case("onbuild_trigger"),
    Case(
        "from_scratch",
        allowed_config={
            "WorkingDir": 'BuildKit sets WorkingDir "/" for FROM scratch; buildah leaves it unset'
        },
    ),
    Case("from_arg_platform", build_args={"IMAGE": "busybox"}),
    Case("copy_globs"),
    Case("copy_dir_contents"),
    Case("copy_dest_rules"),
    Case("copy_default_owner", prepare=_prepare_owned),
    Case("copy_chown_chmod"),
    Case("copy_from_stages"),
    Case("multistage_target", target="middle"),
    Case("expansion_in_instructions", build_args={"OWNER": "daemon"}),
    Case("dockerignore"),
    Case(
        "add_local_tar",
        prepare=_prepare_tars,
        allowed_paths={
            "/owned/*": (
                ("uid", "gid"),
                "ADD --chown of a local archive: BuildKit >= 0.23 (moby/buildkit#5987) gives "
                "every extracted entry the --chown owner, as lamina does; buildah 1.28 keeps "
                "the archive's owners",
            )
        },
    ),
    Case("whiteouts"),
    Case(
        "hardlinks",
        allowed_paths=dict.fromkeys(
            ("/bin/busybox", "/hardbusybox"), (("hardlinks",), LOWER_LAYER_HARDLINK)
        ),
    ),
    Case("hardlink_modified"),  # kaniko's Dockerfile_test_hardlink: one name modified later
    Case(
        "special_modes",
        prepare=_prepare_suid,
        allowed_paths={
            "/copied-suid": (
                ("mode",),
                "buildah's copier strips setuid/setgid bits of files COPYed from the build "
                "context (StripSetuidBit); BuildKit keeps the context file's mode (4755)",
            )
        },
    ),
    Case("unicode_names"),
    Case("symlinks"),
    Case("copy_symlink_source"),
    Case("large_file", prepare=_prepare_big, slow=True),
    Case("many_small_files", prepare=_prepare_many, slow=True),
    Case("debian_apt", base="debian", slow=True),
    # BuildKit features buildah 1.28 has too (issue 6); heredocs, --link, --parents,
    # --exclude, ADD --checksum/--keep-git-dir/git sources, symbolic --chmod and
    # RUN --network are refused by buildah 1.28, so they have no parity case.
    Case(
        "run_mount_cache",
        allowed_paths=dict.fromkeys(("/opt", "/tmp/anon", "/var/cache"), (("*",), MOUNT_STUBS)),
    ),
    Case("run_mount_bind", allowed_paths={"/mnt": (("*",), MOUNT_STUBS)}),
    Case(
        "run_mount_tmpfs",
        allowed_paths={
            "/new": (("*",), MOUNT_STUBS),
            **dict.fromkeys(
                ("/scratch", "/scratch/before"),
                (
                    ("*",),
                    "a tmpfs mounted over an existing directory only hides it during the "
                    "RUN in BuildKit (and lamina), so /scratch/before stays in the image; "
                    "buildah 1.28 commits the image without that directory at all",
                ),
            ),
        },
    ),
    Case(
        "run_mount_secret",
        extra_args=("--secret", "id=token,src={context}/token.txt"),
        allowed_paths={"/run/secrets": (("*",), MOUNT_STUBS)},
    ),
    Case("add_chown_chmod"),
    # shapes of kaniko's own integration Dockerfiles (integration/dockerfiles/Dockerfile_test_*)
    Case("kaniko_workdir"),
    Case("kaniko_user_run"),
    Case(
        "kaniko_volume_2",
        allowed_paths={
            **dict.fromkeys(("/foo1/hello", "/foo2/test"), (("*",), VOLUME_WRITES)),
            "/foo3": (("*",), VOLUME_DIRS),
        },
    ),
    Case("kaniko_args_quotes"),
    Case("kaniko_parent_dir_perms"),
    Case("kaniko_dangling_symlink"),
    Case("kaniko_stage_name_case"),  # FROM BUG_stage: BuildKit takes it for an image
    Case("kaniko_replaced_links"),  # symlink -> dir and dir -> symlink (kaniko #2308)
    # Dockerfile_test_copy: globs, ENV in sources ([[] escapes: test_build_kaniko_compat)
    Case("kaniko_copy"),
]


def _param(case: Case) -> object:
    marks = [pytest.mark.slow] if case.slow else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in ALL_CASES])
def test_parity(
    case: Case,
    request: pytest.FixtureRequest,
    buildah_tool: Buildah,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    if case.base == "debian":
        request.getfixturevalue("debian_image")
    registry = busybox_image.split("/", 1)[0]
    context = copy_context(CASES / case.name, tmp_path / "context")
    if case.prepare is not None:
        case.prepare(context)
    args = {"REGISTRY": registry, **case.build_args}
    tag = case.name.replace("_", "-")
    extra = [arg.format(context=context) for arg in case.extra_args]
    ours = build_lamina(
        context,
        tmp_path / "lamina-oci",
        tag,
        registry=registry,
        build_args=args,
        target=case.target,
        work=tmp_path / "lamina-work",
        extra_args=extra,
    )
    theirs = buildah_tool.build(
        context,
        tmp_path / "buildah-oci",
        tag,
        build_args=args,
        target=case.target,
        extra_args=extra,
    )
    problems = diff_configs(
        config_view(ours.config),
        config_view(theirs.config, drop_labels=BUILDAH_LABELS),
        allowed={**CONFIG_ALLOWED, **case.allowed_config},
    )
    for label, result in (("lamina", ours), ("buildah", theirs)):
        problems += history_problems(label, result.config)
    tree_ours = unpack_tree(ours)
    tree_theirs = unpack_tree(theirs)
    if case.name in UMOCI_CROSSCHECK:
        # the in-memory unpacker must agree with an independent one (umoci, on disk)
        for label, result, tree in (("lamina", ours, tree_ours), ("buildah", theirs, tree_theirs)):
            on_disk = walk_tree(unpack_with_umoci(result, tmp_path / f"umoci-{label}"))
            on_disk.pop("/", None)
            check = diff_trees(tree, on_disk, allowed={})
            assert not check, f"in-memory unpack != umoci for {label}:\n" + "\n".join(check)
    for path in RUNTIME_PLACEHOLDERS:
        placeholder = tree_theirs.get(path)
        if path not in tree_ours and placeholder is not None and placeholder.size == 0:
            del tree_theirs[path]
    allowed = {path: fields for path, (fields, _reason) in case.allowed_paths.items()}
    problems += diff_trees(tree_ours, tree_theirs, allowed=allowed)
    assert not problems, f"lamina and buildah disagree on {case.name}:\n" + "\n".join(problems)
