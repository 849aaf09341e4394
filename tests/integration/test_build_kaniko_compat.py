"""Builds found by kaniko's own integration Dockerfiles and parity runs (issue 12, 16-19).

Each builds real images from the busybox fixture in the loopback registry.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from lamina.registry import RegistryClient
from tests.integration import test_build_rootless as rootless
from tests.integration.test_build_engine import Built, make_context, run_build
from tests.integration.test_sandbox_rootless import SETPRIV, UNSHARE
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

rootless_base = rootless.base  # the fixture: a directory uid 65534 owns


def _owner(member: tarfile.TarInfo) -> tuple[int, int]:
    return member.uid, member.gid


def _last_layer(built: Built) -> dict[str, tarfile.TarInfo]:
    return built.layer_files(len(built.image.layers()) - 1)


def test_workdir_owner_follows_buildkit_file_op_rule(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """Every directory WORKDIR creates: numeric USER -> uid:uid, a name -> passwd uid:gid."""
    dockerfile = f"""\
FROM {busybox_image}
RUN echo "app:x:1234:100::/:/bin/sh" >> /etc/passwd
USER 9999
WORKDIR /w/sub
USER 1234
WORKDIR /numeric-in-passwd
USER app
WORKDIR /by-name
USER 9999:www-data
WORKDIR /with-group
USER 42:7
WORKDIR /both-numeric
USER nosuchuser
WORKDIR /unknown-name
"""
    built = run_build(tmp_path, make_context(tmp_path / "ctx", dockerfile), registry=client)
    layers = built.image.layers()
    expected = [
        ({"w": (9999, 9999), "w/sub": (9999, 9999)}),
        ({"numeric-in-passwd": (1234, 1234)}),
        ({"by-name": (1234, 100)}),
        ({"with-group": (9999, 33)}),
        ({"both-numeric": (42, 7)}),
        ({"unknown-name": (0, 0)}),
    ]
    first = len(layers) - len(expected)
    for offset, owners in enumerate(expected):
        files = built.layer_files(first + offset)
        assert {name: _owner(m) for name, m in files.items()} == owners
        assert all(m.isdir() and m.mode == 0o755 for m in files.values())


def test_from_a_stage_name_in_other_case(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """kaniko's Dockerfile_test_multistage shape: ``AS BUG_stage`` then ``FROM BUG_stage``."""
    dockerfile = f"""\
FROM {busybox_image} AS BUG_stage
RUN echo stage > /from-stage
FROM BUG_stage
RUN cat /from-stage > /copied
FROM scratch
COPY --from=Bug_Stage /from-stage /again
"""
    ctx = make_context(tmp_path / "ctx", dockerfile)
    built = run_build(tmp_path, ctx, registry=client, target="bug_STAGE")
    assert built.read_file(len(built.image.layers()) - 1, "from-stage") == b"stage\n"
    last = run_build(tmp_path / "all", ctx, registry=client)
    assert last.read_file(0, "again") == b"stage\n"
    middle = run_build(tmp_path / "mid", ctx, registry=client, target="1")
    assert middle.read_file(len(middle.image.layers()) - 1, "copied") == b"stage\n"


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("exit 42", 42),  # kaniko's integration test: RUN exit 42 -> executor exits 42
        ("exit 1", 1),
        ("sh -c 'kill -KILL $$'", 128 + 9),  # killed by a signal: 128 + N
    ],
)
def test_executor_exits_with_the_failed_run_status(
    tmp_path: Path,
    busybox_image: str,
    capsys: pytest.CaptureFixture[str],
    command: str,
    status: int,
) -> None:
    from lamina.cli.main import run
    from lamina.errors import EXIT_BUILD_STEP

    ctx = make_context(tmp_path / "ctx", f"FROM {busybox_image}\nRUN true\nRUN {command}\n")
    registry = busybox_image.split("/", 1)[0]
    flags = [
        f"--context={ctx}",
        "--no-push",
        f"--insecure-registry={registry}",
        f"--kaniko-dir={tmp_path / 'kaniko'}",
    ]
    assert run(flags, {}, prog="executor") == status
    assert f"Dockerfile:3: stage '0': RUN /bin/sh -c {command}" in capsys.readouterr().err
    # lamina build keeps its own categories: 5 = a build step failed
    assert run(["build", *flags], {}) == EXIT_BUILD_STEP


#: kaniko's Dockerfile_test_hardlink shape: a link group made in one RUN, one name
#: modified in place by a later RUN, another name's metadata by a third
HARDLINK_STEPS = """\
RUN mkdir -p /hl/sub /other && echo original > /hl/link1 && ln /hl/link1 /hl/link2 \\
 && ln /hl/link1 /hl/sub/link3 && ln /hl/link1 /other/link4
RUN echo modified > /hl/link2
RUN chmod 0600 /other/link4 && cat /hl/link1 /hl/sub/link3 > /seen-by-later-run
"""


def _group_of(files: dict[str, tarfile.TarInfo], names: list[str]) -> set[str]:
    """The names of ``names`` that are one hardlink group in a layer (file + links to it)."""
    regular = [n for n in names if files[n].isreg()]
    assert len(regular) == 1, {n: files[n].type for n in names}
    assert all(
        files[n].islnk() and files[n].linkname == regular[0] for n in names if n != regular[0]
    )
    return set(names)


@pytest.mark.parametrize("isolation", ["namespace", "chroot"])
def test_a_file_modified_through_one_hardlink_name_keeps_its_group(
    tmp_path: Path, busybox_image: str, client: RegistryClient, isolation: str
) -> None:
    names = ["hl/link1", "hl/link2", "hl/sub/link3", "other/link4"]
    ctx = make_context(tmp_path / "ctx", f"FROM {busybox_image}\n{HARDLINK_STEPS}")
    built = run_build(tmp_path, ctx, registry=client, isolation=isolation)
    n = len(built.image.layers())
    modified = built.layer_files(n - 2)
    assert _group_of(modified, names) == set(names)
    first = next(name for name in names if modified[name].isreg())
    assert built.read_file(n - 2, first) == b"modified\n"
    # the rootfs kept the group too: the next RUN read the new content through other names
    assert built.read_file(n - 1, "seen-by-later-run") == b"modified\nmodified\n"
    chmodded = built.layer_files(n - 1)
    assert _group_of(chmodded, names) == set(names)
    assert all(chmodded[name].mode == 0o600 for name in names if chmodded[name].isreg())


def test_rootless_namespace_build_keeps_the_link_group(
    rootless_base: Path, registry_plain: RegistryServer, busybox_image: str
) -> None:
    """Rootless, with files of a subordinate owner: the relinking runs in the user namespace."""
    if os.geteuid() != 0 or SETPRIV is None or UNSHARE is None:
        pytest.skip("switches to uid 65534 with setpriv (util-linux)")
    steps = HARDLINK_STEPS.replace(
        "RUN echo modified", "RUN chown -R 1234:1234 /hl /other\nRUN echo modified"
    )
    layout = rootless._build_as_nobody(
        rootless_base, registry_plain, f"FROM {busybox_image}\n{steps}"
    )
    image = layout.image()
    n = len(image.layers())
    names = ["hl/link1", "hl/link2", "hl/sub/link3", "other/link4"]
    with image.layers()[n - 2].uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
        files = {}
        content = b""
        for m in tar:
            files[m.name.removeprefix("./").rstrip("/")] = m
            if m.isreg() and m.name.removeprefix("./") in names:
                data = tar.extractfile(m)
                assert data is not None
                content = data.read()
    assert _group_of(files, names) == set(names)
    assert content == b"modified\n"
    assert all(_owner(files[name]) == (1234, 1234) for name in names)


def test_in_place_build_keeps_the_link_group(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """--isolation=none (kaniko's mode), in a throw-away root the test owns."""
    import io

    from lamina.sandbox import InPlaceRunner
    from tests.integration.test_isolation_none import _build, _context

    ctx = _context(tmp_path, f"FROM {busybox_image}\n{HARDLINK_STEPS}")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    names = ["hl/link1", "hl/link2", "hl/sub/link3", "other/link4"]
    with tarfile.open(fileobj=io.BytesIO(built.blobs[-2])) as tar:
        files = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    assert _group_of(files, names) == set(names)
    assert len({os.lstat(root / name).st_ino for name in names}) == 1
    assert (root / "seen-by-later-run").read_text() == "modified\nmodified\n"


VOLUME_STEPS = """\
VOLUME /foo1
VOLUME ["/data/sub"]
RUN echo hello > /foo1/hello
RUN test -d /data/sub && touch /marker
"""


@pytest.mark.parametrize("isolation", ["namespace", "chroot"])
def test_run_writes_below_a_volume_path_missing_from_the_image(
    tmp_path: Path, busybox_image: str, client: RegistryClient, isolation: str
) -> None:
    """kaniko's Dockerfile_test_volume shape: BuildKit fails (no /foo1), kaniko builds."""
    ctx = make_context(tmp_path / "ctx", f"FROM {busybox_image}\n{VOLUME_STEPS}")
    built = run_build(tmp_path, ctx, registry=client, isolation=isolation)
    n = len(built.image.layers())
    written = built.layer_files(n - 2)
    assert sorted(written) == ["foo1", "foo1/hello"]
    assert written["foo1"].isdir()
    assert written["foo1"].mode == 0o755
    assert _owner(written["foo1"]) == (0, 0)
    assert built.read_file(n - 2, "foo1/hello") == b"hello\n"
    # a volume the step leaves alone existed for it and left no trace
    assert sorted(built.layer_files(n - 1)) == ["marker"]
    assert built.config.config.volumes == ("/foo1", "/data/sub")


def test_in_place_volume_directories_are_made_as_kaniko_does(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """--isolation=none: VOLUME makes the directory; writes below it stay out of layers."""
    from lamina.sandbox import InPlaceRunner
    from tests.integration.test_isolation_none import _build, _context

    ctx = _context(tmp_path, f"FROM {busybox_image}\n{VOLUME_STEPS}")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    assert built.names[-2:] == [[], ["marker"]]
    assert (root / "foo1" / "hello").read_text() == "hello\n"
    assert (root / "data" / "sub").is_dir()


def test_as_root_the_step_sees_posix_links_and_a_written_then_read_file_keeps_its_group(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """Root, namespace mode: the overlay has index=on, so a copy-up keeps the group for the
    step itself, and the copy's origin xattr tells keep_link_groups even after a read."""
    dockerfile = f"""\
FROM {busybox_image}
RUN mkdir /hl && echo original > /hl/link1 && ln /hl/link1 /hl/link2 && ln /hl/link1 /hl/link3
RUN echo again >> /hl/link1 && cat /hl/link1 && test "$(cat /hl/link2)" = "$(cat /hl/link1)"
RUN sed -i s/again/edited/ /hl/link3 && cat /hl/link3 && test "$(cat /hl/link2)" != edited
"""
    built = run_build(tmp_path, make_context(tmp_path / "ctx", dockerfile), registry=client)
    n = len(built.image.layers())
    names = ["hl/link1", "hl/link2", "hl/link3"]
    assert _group_of(built.layer_files(n - 2), names) == set(names)
    replaced = built.layer_files(n - 1)
    assert sorted(replaced) == ["hl", "hl/link3"]  # sed -i: link3 alone is a new file
    assert built.read_file(n - 1, "hl/link3") == b"original\nedited\n"


def test_copy_glob_with_a_bracket_class_escape(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    """kaniko's Dockerfile_test_copy: ``arr[[]0].txt`` matches the file ``arr[0].txt``
    (Go's filepath.Match, as BuildKit; buildah 1.28 matches nothing)."""
    ctx = make_context(
        tmp_path / "ctx",
        f"FROM {busybox_image}\nCOPY context/arr[[]0].txt /mydir/\n",
        {"context/arr[0].txt": "arr\n", "context/arr0.txt": "not me\n"},
    )
    built = run_build(tmp_path, ctx, registry=client)
    assert sorted(_last_layer(built)) == ["mydir", "mydir/arr[0].txt"]
