"""The build entry points: ``build_image`` (plan + loop) and ``write_outputs``."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lamina.builder._cache import CacheSession
from lamina.builder._plan import BuildPlan, make_plan
from lamina.builder._stage import BuildEnv, ImageSource, StageBuilder, StageResult
from lamina.builder.options import BuildOptions, CacheOptions, OutputOptions
from lamina.cache import (
    BaseImageCache,
    CorruptedCacheError,
    DirLayerCache,
    LayerCache,
    fetch_all,
)
from lamina.context import LocalContext, redact_url
from lamina.errors import (
    ContextError,
    FilesystemError,
    ImageFormatError,
    LaminaError,
    NotSupportedError,
    UsageError,
)
from lamina.fs import BuildDir
from lamina.oci import (
    Digest,
    Image,
    Platform,
    Reference,
    canonical,
    digest_file_text,
    image_name_tag_with_digest_text,
    image_name_with_digest_text,
    mediatypes,
)
from lamina.oci.oci_layout import OCILayout

if TYPE_CHECKING:
    from lamina.builder._inplace import InPlace
    from lamina.sandbox import Runner

__all__ = [
    "DUMMY_DESTINATION",
    "BuildResult",
    "build_and_output",
    "build_image",
    "plan_build",
    "write_outputs",
]

#: the tag of a ``--tar-path`` archive when there is no ``--destination`` (kaniko wrote
#: ``unset-repo/unset-image-name``); ``podman load`` / ``docker load`` name it
#: ``docker.io/library/lamina-build:latest``, as ``docker build -t lamina-build`` would
DUMMY_DESTINATION = "lamina-build:latest"


@dataclass(slots=True, kw_only=True)
class BuildResult:
    """The built image and what it took.

    New layers are blob files inside ``build_dir``: call :meth:`cleanup` only
    after :func:`write_outputs` (or use :func:`build_and_output`).
    """

    image: Image
    digest: Digest
    stages: tuple[StageResult, ...]
    plan: BuildPlan
    build_dir: BuildDir | None = field(default=None, repr=False)
    #: the layer cache session (``--cache``): its background stores read layer blobs
    cache: CacheSession | None = field(default=None, repr=False)

    def cleanup(self) -> None:
        """Wait for the cache stores, close the cache, delete the build directory."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self.build_dir is not None:
            self.build_dir.cleanup()
            self.build_dir = None


def _read_dockerfile(build: BuildOptions) -> tuple[str, Path, Path]:
    from lamina.context import (
        context_subdir,
        is_dockerfile_url,
        parse_context,
        read_context_text,
    )

    spec = parse_context(build.context or ".")
    if spec.remote or is_dockerfile_url(build.dockerfile):
        raise ContextError(
            f"the build context {spec.display} or the Dockerfile {build.dockerfile} must be "
            "fetched first",
            hint="build_image fetches remote contexts and Dockerfile URLs; "
            "plan_build reads local files only",
        )
    context_dir = context_subdir(Path(spec.location or "."), build.context_sub_path)
    dockerfile = Path(build.dockerfile or "Dockerfile")
    if not dockerfile.is_absolute() and not dockerfile.exists():
        dockerfile = context_dir / dockerfile
    # inside the context, symlinks are followed inside it only (as BuildKit)
    found = read_context_text(context_dir, dockerfile, what="Dockerfile")
    if found is None:
        raise ContextError(
            f"the Dockerfile {dockerfile} does not exist",
            hint="pass its path with --dockerfile (relative to the current directory "
            "or to the context); a symlink inside the context must point inside it",
        )
    return found[0], dockerfile, context_dir


def _platform_text(p: Platform) -> str:
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def plan_build(build: BuildOptions) -> BuildPlan:
    """Read the Dockerfile and plan the build (no filesystem changes, no network)."""
    text, dockerfile, _ = _read_dockerfile(build)
    host = Platform.host()
    target = Platform.parse(build.platform) if build.platform else host
    return make_plan(
        text,
        filename=dockerfile.name,
        build_args=dict(build.build_args),
        target=build.target,
        build_platform=_platform_text(host),
        target_platform=_platform_text(target),
        skip_unused_stages=build.skip_unused_stages,
    )


def _epoch(build: BuildOptions) -> int | None:
    if build.source_date_epoch is not None:
        return build.source_date_epoch
    if build.reproducible:
        return 0
    return None


def _private_dir(kaniko_dir: Path, prefix: str, what: str) -> Path:
    """A new directory of this build's own under ``kaniko_dir`` (mode 0700)."""
    try:
        kaniko_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=kaniko_dir))
    except OSError as exc:
        raise ContextError(
            f"cannot create a directory for {what} under {kaniko_dir}: {exc.strerror or exc}",
            hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
        ) from None


def _fetch_sources(
    build: BuildOptions, stdin: BinaryIO | None, log: logging.Logger, fetched: list[Path]
) -> BuildOptions:
    """``build`` with a remote context unpacked and a Dockerfile URL downloaded (kaniko's
    ``resolveSourceContext`` and ``resolveDockerfilePath``); what was written is added to
    ``fetched``. A local build is returned as it is."""
    from lamina.context import (
        context_path,
        context_subdir,
        download_dockerfile,
        fetch_context,
        is_dockerfile_url,
        parse_context,
    )

    spec = parse_context(build.context or ".")
    url_dockerfile = is_dockerfile_url(build.dockerfile)
    if not spec.remote and not url_dockerfile:
        return build
    context = build.context
    sub_path = build.context_sub_path
    if spec.remote:
        # a private, fresh directory per build: concurrent builds never share one, and
        # nothing already at a fixed path (a planted symlink) is followed or removed
        holder = _private_dir(build.kaniko_dir, "lamina-context-", "the build context")
        fetched.append(holder)
        into = holder / "buildcontext"
        log.info("fetching the build context %s into %s", spec.display, into)
        fetch_context(
            spec,
            into,
            git=build.git,
            stdin=stdin,
            on_warning=log.warning,
        )
        context = str(context_subdir(into, build.context_sub_path))
        sub_path = ""
        log.debug("build context located at %s", context)
    context_dir = context_subdir(Path(parse_context(context).location or "."), sub_path)
    if url_dockerfile:
        holder = _private_dir(build.kaniko_dir, "lamina-dockerfile-", "the Dockerfile")
        fetched.append(holder)
        log.info("downloading the Dockerfile %s", redact_url(build.dockerfile))
        dockerfile = str(download_dockerfile(build.dockerfile, holder / "Dockerfile"))
    else:  # kaniko: the path as given, else relative to the (unpacked) context
        given = Path(build.dockerfile or "Dockerfile")
        found, inside = context_path(context_dir, given if given.is_file() else context_dir / given)
        if not found.is_file():
            raise ContextError(
                f"the Dockerfile {build.dockerfile or 'Dockerfile'} is not in the build "
                f"context {spec.display}",
                hint=f"looked for {given} and {context_dir / given}; pass --dockerfile "
                "relative to the root of the context (or of --context-sub-path)",
            )
        dockerfile = str(found if inside else found.resolve())
    return replace(build, context=str(context_dir), context_sub_path="", dockerfile=dockerfile)


def build_image(
    build: BuildOptions,
    cache: CacheOptions,
    output: OutputOptions,
    *,
    registry: ImageSource | None,
    runner: Runner | None,
    log: logging.Logger,
    layer_cache: LayerCache | None = None,
    stdin: BinaryIO | None = None,
) -> BuildResult:
    """Build the image the Dockerfile describes (nothing is written or pushed yet).

    ``registry`` pulls base images (and later pushes); ``runner`` runs RUN
    steps (None: chosen from ``build.isolation`` on the first RUN). With
    ``cache.enabled``, steps are looked up in ``layer_cache`` (default: the
    directory cache under ``cache.dir``), which the result then owns: it is
    closed by :meth:`BuildResult.cleanup`. A remote context is first unpacked
    into a fresh ``<kaniko-dir>/lamina-context-*/buildcontext`` (``stdin`` is read for
    ``tar://stdin``) and a Dockerfile URL downloaded; both are deleted with the build directory.
    Raises :class:`~lamina.errors.LaminaError` subclasses only.
    """
    if output.compression not in ("gzip", "zstd", "none"):
        raise UsageError(
            f"unknown --compression {output.compression!r}", hint="use gzip, zstd or none"
        )
    fetched: list[Path] = []
    try:
        build = _fetch_sources(build, stdin, log, fetched)
        result = _build_local(
            build,
            cache,
            output,
            registry=registry,
            runner=runner,
            log=log,
            layer_cache=layer_cache,
        )
    except BaseException:
        for path in reversed(fetched):
            shutil.rmtree(path, ignore_errors=True)
        raise
    if result.build_dir is not None:
        result.build_dir.extra.extend(fetched)
    else:
        for path in reversed(fetched):
            shutil.rmtree(path, ignore_errors=True)
    return result


def _build_local(
    build: BuildOptions,
    cache: CacheOptions,
    output: OutputOptions,
    *,
    registry: ImageSource | None,
    runner: Runner | None,
    log: logging.Logger,
    layer_cache: LayerCache | None,
) -> BuildResult:
    plan = plan_build(build)
    for name in plan.unused_build_args:
        log.warning("build argument %s is not consumed by any stage that is built", name)
    _, dockerfile, context_dir = _read_dockerfile(build)
    context = LocalContext.open(context_dir, dockerfile=dockerfile)
    epoch = _epoch(build)
    created = (
        datetime.fromtimestamp(epoch, tz=UTC)
        if epoch is not None
        else datetime.now(tz=UTC).replace(microsecond=0)
    )
    platform = Platform.parse(build.platform) if build.platform else Platform.host()
    build_dir = BuildDir.create(build.kaniko_dir)
    compression: mediatypes.Compression = output.compression  # type: ignore[assignment]
    # choosing the runner probes the kernel (a subprocess) and the registry is asked for
    # push permission, both meanwhile; the base images are resolved in the meantime. Where
    # --isolation=auto cannot end up in place, the choice waits for the first RUN that runs
    # (a fully cached build never probes at all). The permission answer is awaited before
    # the first step does real work (StageBuilder.ensure_fs) and before the result is
    # returned, so a build that may not push still fails before it builds anything.
    setup = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lamina-setup")
    preflight: Future[None] | None = None
    if (
        output.destinations
        and not output.no_push
        and not output.skip_push_permission_check
        and registry is not None
    ):
        refs = [Reference.parse(d) for d in output.destinations]
        preflight = setup.submit(registry.check_push_permission, refs)
    if runner is None and build.isolation == "auto" and not _in_place_possible(build):
        chosen: Future[tuple[Runner | None, InPlace | None]] = Future()
        chosen.set_result((None, None))
    else:
        from lamina.builder._inplace import prepare_inplace

        chosen = setup.submit(
            prepare_inplace,
            build,
            plan,
            runner,
            keep=[build_dir.path, context_dir, dockerfile],
            environ=dict(build.container_env),
            log=log,
        )
    setup.shutdown(wait=False)

    def abandon_setup() -> None:
        for future in (chosen, preflight):
            if future is not None:
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result()

    try:
        if registry is not None:
            registry = _Prepulled(registry, plan, platform, log)
        runner, inplace = chosen.result()
    except BaseException:
        abandon_setup()
        build_dir.cleanup()
        raise
    session: CacheSession | None = None
    if cache.enabled:
        store = layer_cache or DirLayerCache(cache.dir, cache.ttl, log)
        log.info("layer cache: %s", store.description)
        session = CacheSession(store, cache, log=log, dockerfile=dockerfile.name)
    base_images = None
    if cache.enabled and cache.dir.is_dir():
        base_images = BaseImageCache(cache.dir, cache.ttl, log)
    env = BuildEnv(
        plan=plan,
        context=context,
        registry=registry,
        runner=runner,
        isolation=build.isolation,
        force=build.force,
        log=log,
        build_dir=build_dir,
        platform=platform,
        custom_platform=bool(build.platform),
        created=created,
        clamp_epoch=epoch if build.reproducible else None,
        compression=compression,
        compression_level=output.compression_level if output.compression_level >= 0 else None,
        snapshot_mode=build.snapshot_mode,
        labels=build.labels,
        cache_mount_dir=build.cache_mount_dir or build.kaniko_dir / "cache-mounts",
        secrets=build.secrets,
        ssh=build.ssh,
        git_commit_mtime=build.source_date_epoch is not None,
        allow=build.allow,
        single_snapshot=build.single_snapshot,
        inplace=inplace,
        cache=session,
        base_images=base_images,
        preflight=preflight,
    )
    try:
        local_outputs = bool(output.oci_layout_path or output.tar_path)
        image = _build_stages(env, plan, session, log, local_outputs=local_outputs)
        env.await_preflight()
        if build.cleanup and env.inplace is not None:
            from lamina.builder._inplace import wipe_root

            log.info("--cleanup: emptying %s", env.inplace.root)
            wipe_root(env.inplace)  # kaniko's DeleteFilesystem; the layers are in build_dir
        if build.reproducible:
            image = canonical(image, epoch=epoch or 0)
        digest = image.digest()
    except BaseException:
        abandon_setup()
        if session is not None:
            _report(session, cache, log)
            session.close()
        build_dir.cleanup()
        raise
    log.info("built image %s", digest)
    if session is not None:
        _summary(session, log)
        _report(session, cache, log)
    return BuildResult(
        image=image,
        digest=digest,
        stages=tuple(env.results[i] for i in plan.order),
        plan=plan,
        build_dir=build_dir,
        cache=session,
    )


def _in_place_possible(build: BuildOptions) -> bool:
    """Could ``--isolation=auto`` choose to build in place (a kaniko-like container)?"""
    from lamina.sandbox import detect_container  # lamina.sandbox._detect alone

    root = Path("/")
    return (
        detect_container(dict(build.container_env), root=root) is not None
        and (root / "kaniko").is_dir()
    )


class _Prepulled:
    """The registry, with the plan's base images already resolved (manifest and config).

    Pulled while the runner is being chosen; a failure is left for the stage that
    needs the image to report, with its Dockerfile line.
    """

    def __init__(
        self, inner: ImageSource, plan: BuildPlan, platform: Platform, log: logging.Logger
    ) -> None:
        self._inner = inner
        self._images: dict[tuple[str, str], Image] = {}
        for index in plan.order:
            sp = plan.stages[index]
            if sp.base_stage is not None or sp.is_scratch:
                continue
            try:
                want = Platform.parse(sp.platform) if sp.platform else platform
                ref = Reference.parse(sp.base)
                key = (str(ref), str(want))
                if key not in self._images:
                    image = inner.pull(ref, platform=want)
                    image.config()
                    self._images[key] = image
            except LaminaError as exc:
                log.debug("pulling %s ahead failed: %s", sp.base, exc.message)

    def pull(self, ref: Reference, *, platform: Platform) -> Image:
        found = self._images.get((str(ref), str(platform)))
        return found if found is not None else self._inner.pull(ref, platform=platform)

    def push(self, image: Image, refs: Sequence[Reference]) -> Digest:
        return self._inner.push(image, refs)

    def check_push_permission(self, refs: Sequence[Reference]) -> None:
        self._inner.check_push_permission(refs)


#: how often corrupted cache entries may restart the stage loop (each restart marks at
#: least one more key bad, so this only bounds a pathological cache)
_MAX_REBUILDS = 20


def _build_stages(
    env: BuildEnv,
    plan: BuildPlan,
    session: CacheSession | None,
    log: logging.Logger,
    *,
    local_outputs: bool = False,
) -> Image:
    """Build the planned stages in order; the target stage's image, its layers verified.

    A cache hit's layer that turns out corrupted when read (materialising a stage,
    ``COPY --from``, the final verification of the output's layers) marks its key bad
    and rebuilds from the first stage that used it: that stage's and every later
    stage's results are discarded, and the bad key misses from then on.
    """
    order = list(plan.order)
    pos = 0
    rebuilds = 0
    while True:
        try:
            while pos < len(order):
                _build_stage(env, plan, order[pos], session)
                pos += 1
            image = env.results[plan.target].image
            if session is not None:
                # the outputs read these layers: lazy cache hits are fetched and verified now
                _fetch_output_layers(env, image, local_outputs=local_outputs)
            return image
        except CorruptedCacheError as exc:
            if session is None or rebuilds >= _MAX_REBUILDS:
                raise
            session.mark_bad(exc.keys, exc.message)
            used = [order.index(i) for k in exc.keys for i in session.hit_stages.get(k, ())]
            if not used:
                raise
            rebuilds += 1
            pos = min(used)
            log.warning(
                "layer cache: rebuilding from stage %s without the corrupted entries",
                plan.stages[order[pos]].display,
            )
            _discard(env, order[pos:], session)


def _fetch_output_layers(env: BuildEnv, image: Image, *, local_outputs: bool) -> None:
    """Fetch and verify the image's lazy cache hits; with a tarball or layout output also
    download its registry layers meanwhile (the writers then read local files)."""
    layers = image.layers()
    if not local_outputs:
        fetch_all(layers)
        return
    from lamina.registry import RegistryClient, RemoteLayer

    if not any(isinstance(layer, RemoteLayer) for layer in layers):
        fetch_all(layers)
        return
    blobs = env.build_dir.path / "base-blobs"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-base-blobs") as pool:
        base = pool.submit(RegistryClient.download_layers, image, blobs)
        try:
            fetch_all(layers)
        except BaseException:
            base.cancel()
            with contextlib.suppress(Exception):
                base.result()
            raise
        base.result()


def _build_stage(env: BuildEnv, plan: BuildPlan, index: int, session: CacheSession | None) -> None:
    sp = plan.stages[index]
    env.log.info("building stage %s (FROM %s)", sp.display, sp.base)
    builder = StageBuilder(env, sp, is_target=index == plan.target)
    result = builder.build()
    if session is not None and result.rootfs is None:
        # materialised only if a later step that misses reads it
        env.stage_rootfs[index] = builder.materialise
    elif result.rootfs is None and any(
        index in plan.stages[d].copy_from_stages for d in plan.dependents(index)
    ):
        if env.inplace is not None:
            # one shared root: COPY --from reads a private copy of the stage
            rootfs = env.build_dir.path / f"stage-{index}"
            rootfs.mkdir(mode=0o755)
            env.extract(result.image, rootfs)
        else:
            rootfs = builder.ensure_fs()
        result = StageResult(
            index=result.index,
            name=result.name,
            image=result.image,
            rootfs=rootfs,
            scope=result.scope,
            layers_added=result.layers_added,
        )
    env.results[index] = result
    _drop_unneeded_rootfs(env, plan, index)


def _discard(env: BuildEnv, stages: Sequence[int], session: CacheSession) -> None:
    """Forget the results of ``stages`` so they are built again."""
    for index in stages:
        env.results.pop(index, None)
        env.stage_rootfs.pop(index, None)
        old = env.build_dir.path / f"stage-{index}"
        if old.exists() or old.is_symlink():
            # renamed, not removed: rootless trees go with the build directory's removers
            try:
                old.rename(env.build_dir.path / f"stage-{index}.discarded-{env.next_id()}")
            except OSError as exc:
                raise FilesystemError(
                    f"cannot set {old} aside to rebuild the stage: {exc.strerror or exc}"
                ) from exc
    session.discard(set(stages))
    # earlier stages whose rootfs was already dropped: extracted again if a rebuilt
    # stage reads them
    for index, result in env.results.items():
        if result.rootfs is None and index not in env.stage_rootfs:
            env.stage_rootfs[index] = partial(_extract_again, env, result)


def _extract_again(env: BuildEnv, result: StageResult) -> Path:
    root = env.build_dir.path / f"stage-{result.index}.again-{env.next_id()}"
    try:
        root.mkdir(mode=0o755)
    except OSError as exc:
        raise FilesystemError(f"cannot create {root}: {exc.strerror or exc}") from exc
    env.extract(result.image, root)
    return root


def _summary(session: CacheSession, log: logging.Logger) -> None:
    counts = dict.fromkeys(("hit", "miss", "uncacheable"), 0)
    for r in session.records:
        if r.status in counts:
            counts[r.status] += 1
    log.info(
        "layer cache: %d hit, %d miss, %d not cached",
        counts["hit"],
        counts["miss"],
        counts["uncacheable"],
    )


def _report(session: CacheSession, cache: CacheOptions, log: logging.Logger) -> None:
    if cache.report is None:
        return
    try:
        session.write_report(cache.report)
    except LaminaError as exc:
        log.warning("%s", exc.message)


def _drop_unneeded_rootfs(env: BuildEnv, plan: BuildPlan, done: int) -> None:
    """Delete stage rootfs trees no later stage will read (bounded disk use)."""
    later = [i for i in plan.order if i > done]
    for index, result in list(env.results.items()):
        if result.rootfs is None:
            continue
        if any(plan.stages[i].base_stage == index for i in later) or any(
            index in plan.stages[i].copy_from_stages for i in later
        ):
            continue
        shutil.rmtree(result.rootfs, ignore_errors=True)
        env.results[index] = StageResult(
            index=result.index,
            name=result.name,
            image=result.image,
            rootfs=None,
            scope=result.scope,
            layers_added=result.layers_added,
        )


def _write_text(path: str, text: str, what: str) -> None:
    if "://" in path:
        raise NotSupportedError(f"{what} as a URL ({path})", hint="give a local file path")
    try:
        p = Path(path)
        if p.parent != Path():
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FilesystemError(
            f"cannot write {what} {path}: {exc.strerror}",
            hint="check that the directory exists and is writable",
        ) from exc


def write_outputs(result: BuildResult, output: OutputOptions, registry: ImageSource | None) -> None:
    """Write the digest files, the OCI layout and the tarball, then push (kaniko's order)."""
    image = result.image
    digest = result.digest
    try:
        destinations = [Reference.parse(d) for d in output.destinations]
    except LaminaError as exc:
        raise UsageError(f"--destination: {exc.message}", hint=exc.hint) from exc
    if output.digest_file:
        _write_text(output.digest_file, digest_file_text(digest), "--digest-file")
    if output.image_name_with_digest_file:
        _write_text(
            output.image_name_with_digest_file,
            image_name_with_digest_text(destinations, digest),
            "--image-name-with-digest-file",
        )
    if output.image_name_tag_with_digest_file:
        _write_text(
            output.image_name_tag_with_digest_file,
            image_name_tag_with_digest_text(destinations, digest),
            "--image-name-tag-with-digest-file",
        )
    if output.oci_layout_path:
        layout = OCILayout.create(Path(output.oci_layout_path))
        ref_name = destinations[0].tag if destinations and destinations[0].tag else None
        layout.write_image(image, ref_name=ref_name or "latest")
    if output.tar_path:
        tags: list[Reference | str] = list(destinations) or [DUMMY_DESTINATION]
        try:
            Path(output.tar_path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FilesystemError(f"cannot create the directory of {output.tar_path}") from exc
        from lamina.oci.docker_archive import write_docker_archive  # only for --tar-path

        write_docker_archive(Path(output.tar_path), image, tags)
    if output.no_push or not destinations:
        return
    if registry is None:
        raise UsageError(
            "cannot push: no registry client was given",
            hint="this is a bug in the caller of lamina.builder.write_outputs",
        )
    pushed = registry.push(image, destinations)
    if pushed != digest:
        raise ImageFormatError(
            f"the registry reports digest {pushed} for the pushed image, expected {digest}",
            hint="the registry may have rewritten the manifest",
        )


def build_and_output(
    build: BuildOptions,
    cache: CacheOptions,
    output: OutputOptions,
    *,
    registry: ImageSource | None,
    runner: Runner | None,
    log: logging.Logger,
    layer_cache: LayerCache | None = None,
    stdin: BinaryIO | None = None,
) -> BuildResult:
    """``build_image`` + ``write_outputs``, then close the cache and delete the build directory."""
    result = build_image(
        build,
        cache,
        output,
        registry=registry,
        runner=runner,
        log=log,
        layer_cache=layer_cache,
        stdin=stdin,
    )
    try:
        write_outputs(result, output, registry)
    finally:
        result.cleanup()
    return result
