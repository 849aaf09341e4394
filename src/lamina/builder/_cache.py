"""The layer cache in the build loop: per-instruction keys, lookups, explanations, report.

**Key chain.** Every stage carries a running key. It starts at the base image's manifest
digest (``scratch`` for ``FROM scratch``; the final key of the stage for ``FROM <stage>``).
Every instruction, metadata ones included, extends it: the next running key is
:func:`lamina.cache.cache_key` of the step's :class:`~lamina.cache.KeyInputs`, whose
``instruction`` is :func:`instruction_text` (the *expanded* instruction as canonical JSON:
every field and flag, no line number, no original text) plus, for steps that write a
layer, the layer format (effective compression, level, timestamp clamp, snapshot mode and
the base's media-type family), since those change the layer's bytes. ``ARG`` adds only the
declared names: an ARG's value reaches a layer only through RUN's environment or through
a later instruction's expansion, and both are in those steps' own inputs; so a changed
value invalidates exactly the steps that see it, and an undeclared ``--build-arg`` never
changes a key.

**Per instruction.**

* RUN: ``args`` = the variables in its environment (ENV and declared ARGs, as BuildKit;
  the undeclared proxy variables are left out as BuildKit does). ``--mount=type=bind``
  from the context adds the bound files as sources (after ``.dockerignore``), from a stage
  or image that stage's key or image's digest; secret, ssh, cache and tmpfs mounts enter
  only through their spec in the instruction (never a secret's value).
* COPY/ADD from the context: one :class:`~lamina.cache.SourceEntry` per file the copy
  takes (after ``.dockerignore`` and ``--exclude``): its context-relative path, type, mode
  and content digest, never its mtime or location. The recorded owner is the *effective*
  owner, the one the file gets in the image: COPY writes 0:0 unless ``--chown`` (which is
  in the instruction), so a checkout by another uid on another machine gives the same
  key; a numeric ``--chown`` is recorded as numbers, a named one as -1:-1 (its resolution
  reads the image's ``/etc/passwd``, which the parent key covers). ``--from=<stage>``:
  that stage's final key (the stage need not be materialised); ``--from=<image>``: the
  image's manifest digest. ADD of a URL is cached only with ``--checksum`` (the checksum
  and the URL are in the instruction); without one the step always runs and the chain
  continues from the *layer it produced* (its diff_id), so later steps can still hit.
  ADD of a git repository is cached only when its ref is a full commit sha.
* ``COPY --link`` whose result cannot depend on the earlier filesystem (an absolute
  destination written as a directory, ``--chown`` absent or numeric, no ``--chmod``) is
  looked up under a key that leaves the parent out, so it can hit after an earlier
  change; the running key after it still chains on the parent (what follows sees the
  whole filesystem).
* WORKDIR is cached (it may create directories). Other metadata instructions only extend
  the chain.

``--cache-run-layers=false`` / ``--cache-copy-layers=false`` (and ``--single-snapshot``
in the target stage) make those steps run without lookup or store; their key still
extends the chain.

**Slot.** A step's stable name for "the previous build of this step", used to explain a
miss: ``<Dockerfile name>:<stage name or index>:<step number>:<keyword>``.

**Hits.** A hit appends the cached layer with the history entry the step would have
written and leaves the root filesystem alone: the layer is *pending*, and the stage's
filesystem is only built (base extracted, pending layers applied in order, whiteouts
included) when a later step misses or a later stage reads it. A stage whose steps all hit
is never extracted. Lookups of a stage start together (lookahead): a dry pass assuming
every step hits gives exactly the keys the real pass asks for. A registry hit's layer is
lazy (:class:`~lamina.cache.LazyLayer`): downloaded and verified when a stage is
materialised, or before the outputs are written (the target stage's hits start
downloading as soon as they hit). One found corrupted then raises
:class:`~lamina.cache.CorruptedCacheError`: :meth:`CacheSession.mark_bad` makes its key
miss from then on and the build loop rebuilds from the first stage that used it.

**Hits and misses.** A lookup never fails the build (the back end turns trouble into a
miss with a reason). A miss's reason is the back end's when it has one (expired,
corrupted), else :func:`lamina.cache.explain_miss` against the slot's previous inputs,
else "no earlier build of this step is known". Stores go through
:class:`~lamina.cache.BackgroundCache` (one writer thread); a failed store is a warning.
:meth:`CacheSession.close` waits for them. ``--no-push-cache``
is the back end's business (it keeps the local tier writable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, is_dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from lamina.builder._copy import resolve_sources
from lamina.builder._fetch import is_git_source, is_url_source
from lamina.builder.options import CacheOptions
from lamina.cache import (
    BackgroundCache,
    CacheLookup,
    KeyInputs,
    LayerCache,
    LazyLayer,
    SourceEntry,
    cache_key,
)
from lamina.cache import explain_miss as _explain
from lamina.context import LocalContext, redact_url
from lamina.dockerfile import (
    AddInstruction,
    ArgInstruction,
    CopyInstruction,
    IgnoreRules,
    Instruction,
    RunInstruction,
    WorkdirInstruction,
    parse_dockerignore,
)
from lamina.errors import DockerfileError, FilesystemError, LaminaError
from lamina.oci import Layer

__all__ = [
    "CacheSession",
    "StepContext",
    "StepDecision",
    "StepRecord",
    "StepStatus",
    "chain_after_layer",
    "decide",
    "instruction_text",
]

StepStatus = Literal["hit", "miss", "uncacheable", "metadata"]
_SHA1 = frozenset("0123456789abcdef")
_LAYERED = (RunInstruction, CopyInstruction, AddInstruction, WorkdirInstruction)


def _canon(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {"_": type(value).__name__}
        for f in fields(value):
            if f.name in ("location", "original"):
                continue
            out[f.name] = _canon(getattr(value, f.name))
        return out
    if isinstance(value, tuple | list):
        return [_canon(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def instruction_text(instr: Instruction) -> str:
    """The expanded instruction as canonical JSON (fields and flags; no location).

    The user-info of a URL in it is redacted: the text is stored in cache entries, and
    credentials do not change what ``ADD --checksum`` of a URL gives.
    """
    text = json.dumps(_canon(instr), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return redact_url(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDecision:
    """How the cache treats one step.

    ``inputs`` make the running key after the step (``chain``); ``lookup`` (when the step
    is looked up) are the inputs of the key it is looked up and stored under (they
    differ for a parent-independent ``--link`` COPY).
    """

    status: Literal["lookup", "uncacheable", "metadata"]
    inputs: KeyInputs
    lookup: KeyInputs | None = None
    #: for "uncacheable": why
    reason: str = ""
    #: "uncacheable" steps chain on the layer they produce, not on ``inputs`` alone
    chain_on_layer: bool = False

    @property
    def chain(self) -> str:
        return cache_key(self.inputs)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """One line of the ``--cache-report``."""

    stage: str
    step: int
    instruction: str
    key: str
    status: StepStatus
    reason: str = ""
    layer_digest: str | None = None
    size: int | None = None
    seconds: float = 0.0
    #: the stage's index in the Dockerfile (not reported; a rebuilt stage drops its records)
    stage_index: int = -1

    def as_json(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "step": self.step,
            "instruction": redact_url(self.instruction),
            "key": self.key,
            "status": self.status,
            "reason": self.reason,
            "layer_digest": self.layer_digest,
            "size": self.size,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------- sources


def _owner_of(chown: str | None) -> tuple[int, int]:
    if not chown:
        return (0, 0)
    user, _, group = chown.partition(":")
    group = group or user
    if user.isdigit() and group.isdigit():
        return (int(user), int(group))
    return (-1, -1)


def _entry(path: str, st_mode: int, host: Path, owner: tuple[int, int]) -> SourceEntry:
    mode = stat.S_IMODE(st_mode)
    content = ""
    kind = "other"
    try:
        if stat.S_ISLNK(st_mode):
            kind, content = "symlink", str(host.readlink())
        elif stat.S_ISDIR(st_mode):
            kind = "dir"
        elif stat.S_ISREG(st_mode):
            kind, content = "file", _file_digest(host)
    except OSError as exc:
        raise FilesystemError(
            f"cannot read {host} for the cache key: {exc.strerror}",
            hint="the file changed or vanished during the build; check its permissions",
        ) from exc
    return SourceEntry(path=path, type=kind, mode=mode, uid=owner[0], gid=owner[1], content=content)


def _file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _below(path: str, base: str) -> str:
    if not base:
        return path
    return path[len(base) + 1 :] if path.startswith(base + "/") else ""


def tree_sources(
    tree: LocalContext,
    patterns: Sequence[str],
    *,
    owner: tuple[int, int],
    parents: bool = False,
    excludes: IgnoreRules | None = None,
    prefix: str = "",
) -> tuple[SourceEntry, ...]:
    """The files a COPY of ``patterns`` from ``tree`` takes, described for a key.

    Mirrors :func:`lamina.builder._copy.copy_into`'s selection: ``.dockerignore`` through
    ``tree``, ``--exclude`` below each directory source or wildcard base (with
    ``--parents`` every file is described: more inputs can only cause a miss).
    """
    import os

    def excluded(rel: str) -> bool:
        return excludes is not None and not parents and bool(rel) and excludes.matches(rel)

    sources, bases = resolve_sources(tree, list(patterns), parents=parents)
    out: dict[str, SourceEntry] = {}
    for src, base in zip(sources, bases, strict=True):
        top = _below(src.path, base) if base is not None else ""
        if excluded(top):
            continue
        name = prefix + (src.path or ".")
        try:
            st = os.lstat(src.host)
        except OSError as exc:
            raise FilesystemError(
                f"cannot read {src.host} for the cache key: {exc.strerror}"
            ) from exc
        out[name] = _entry(name, st.st_mode, src.host, owner)
        if src.kind != "dir":
            continue
        for entry in tree.walk(src):
            if excluded(entry.rel):
                continue
            rel = posixpath.join(name, entry.rel)
            out[rel] = _entry(rel, entry.st.st_mode, entry.host, owner)
    return tuple(out[k] for k in sorted(out))


def _memo(
    ctx: StepContext, key: object, describe: Callable[[], tuple[SourceEntry, ...]]
) -> tuple[SourceEntry, ...]:
    if ctx.memo is None:
        return describe()
    found = ctx.memo.get(key)
    if found is None:
        found = ctx.memo[key] = describe()
    return found


def _ref_entry(what: str, digest: str) -> SourceEntry:
    """A stage or image a step reads, as a source entry (its key or manifest digest)."""
    return SourceEntry(path=what, type="ref", mode=0, uid=0, gid=0, content=digest)


# ------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """What :func:`decide` needs to know about the stage at this step."""

    parent: str
    platform: str
    #: the layer format (see the module docstring)
    layer_format: str
    #: RUN's environment as the key sees it (ENV and declared ARGs)
    run_env: Mapping[str, str]
    context: LocalContext
    #: the key of an earlier stage or the manifest digest of an image, by ``--from`` name
    ref_key: Callable[[str], tuple[str, str]]
    #: ``--single-snapshot`` stage: steps make no layers, nothing is cached
    single_snapshot: bool = False
    #: descriptions of sources already hashed in this build (see CacheSession.memo)
    memo: dict[object, tuple[SourceEntry, ...]] | None = None


def _meta(ctx: StepContext, text: str) -> StepDecision:
    return StepDecision(
        status="metadata",
        inputs=KeyInputs(parent=ctx.parent, instruction=text, platform=ctx.platform),
    )


def decide(instr: Instruction, ctx: StepContext, options: CacheOptions) -> StepDecision:
    """The keys of one (expanded) step and whether it is looked up."""
    if isinstance(instr, ArgInstruction):
        return _meta(ctx, "ARG " + " ".join(kv.key for kv in instr.args))
    text = instruction_text(instr)
    if not isinstance(instr, _LAYERED):
        return _meta(ctx, text)
    layered = f"{text} layers={ctx.layer_format}"
    if isinstance(instr, WorkdirInstruction):
        inputs = KeyInputs(parent=ctx.parent, instruction=layered, platform=ctx.platform)
        return _lookup_or_not(inputs, ctx, "")
    if isinstance(instr, RunInstruction):
        sources: list[SourceEntry] = []
        for m in instr.mounts:
            if m.type != "bind":
                continue
            if m.from_ is not None:
                what, digest = ctx.ref_key(m.from_)
                sources.append(_ref_entry(f"--mount from={what}", digest))
            else:
                src = m.source or "."
                key = ("mount", src, m.target)
                describe = partial(
                    tree_sources, ctx.context, [src], owner=(0, 0), prefix=f"mount:{m.target}:"
                )
                sources.extend(_memo(ctx, key, describe))
        inputs = KeyInputs(
            parent=ctx.parent,
            instruction=layered,
            platform=ctx.platform,
            args=dict(ctx.run_env),
            sources=tuple(sources),
        )
        off = "" if options.run_layers else "--cache-run-layers=false"
        return _lookup_or_not(inputs, ctx, off)
    return _decide_copy(instr, ctx, options, layered)


def _lookup_or_not(inputs: KeyInputs, ctx: StepContext, off: str) -> StepDecision:
    if ctx.single_snapshot:
        return StepDecision(status="uncacheable", inputs=inputs, reason="--single-snapshot")
    if off:
        return StepDecision(status="uncacheable", inputs=inputs, reason=off)
    return StepDecision(status="lookup", inputs=inputs, lookup=inputs)


def _decide_copy(
    instr: CopyInstruction | AddInstruction,
    ctx: StepContext,
    options: CacheOptions,
    layered: str,
) -> StepDecision:
    from_ = instr.from_ if isinstance(instr, CopyInstruction) else None
    parents = instr.parents if isinstance(instr, CopyInstruction) else False
    owner = _owner_of(instr.chown)
    excludes = None
    if instr.excludes:
        try:
            excludes = parse_dockerignore("\n".join(instr.excludes), filename="--exclude")
        except DockerfileError:
            excludes = None  # do_copy reports it; describe every file meanwhile
    reason = ""
    urls: list[str] = []
    if isinstance(instr, AddInstruction):
        for src in instr.sources:
            if is_git_source(src):
                ref = src.rpartition("#")[2].partition(":")[0]
                if not (len(ref) == 40 and set(ref) <= _SHA1):
                    reason = "ADD of a git URL is cached only when its ref is a full commit sha"
                urls.append(src)
            elif is_url_source(src):
                urls.append(src)
                if instr.checksum is None:
                    reason = "ADD of a URL without --checksum is never cached"
    local = [s for s in instr.sources if s not in urls]
    sources: list[SourceEntry] = []
    if from_ is not None:
        what, digest = ctx.ref_key(from_)
        sources.append(_ref_entry(f"--from={what}", digest))
    elif local:
        key = ("copy", tuple(local), owner, parents, instr.excludes)
        sources.extend(
            _memo(
                ctx,
                key,
                lambda: tree_sources(
                    ctx.context, local, owner=owner, parents=parents, excludes=excludes
                ),
            )
        )
    inputs = KeyInputs(
        parent=ctx.parent, instruction=layered, platform=ctx.platform, sources=tuple(sources)
    )
    if reason:
        return StepDecision(status="uncacheable", inputs=inputs, reason=reason, chain_on_layer=True)
    off = "" if options.copy_layers else "--cache-copy-layers=false"
    decision = _lookup_or_not(inputs, ctx, off)
    dest_is_dir = instr.dest.endswith("/") or instr.dest.endswith("/.") or instr.dest == "."
    if (
        decision.status == "lookup"
        and instr.link
        and not instr.chmod
        and dest_is_dir
        and owner != (-1, -1)
        and posixpath.isabs(instr.dest)
    ):
        # relative destinations depend on WORKDIR, which the parent key covers
        link = KeyInputs(
            parent="--link",
            instruction=layered,
            platform=ctx.platform,
            sources=tuple(sources),
        )
        inputs = KeyInputs(
            parent=ctx.parent,
            instruction=f"--link {cache_key(link)}",
            platform=ctx.platform,
        )
        return StepDecision(status="lookup", inputs=inputs, lookup=link)
    return decision


def chain_after_layer(decision: StepDecision, layer: Layer | None) -> str:
    """The running key after an uncacheable step: its inputs plus the layer it made."""
    made = layer.diff_id() if layer is not None else "no layer"
    inputs = KeyInputs(
        parent=decision.chain,
        instruction=f"produced {made}",
        platform=decision.inputs.platform,
    )
    return cache_key(inputs)


# --------------------------------------------------------------------- session


def _quietly(layer: LazyLayer) -> None:
    with contextlib.suppress(LaminaError):
        layer.fetch()


class CacheSession:
    """The build-wide side of the cache: lookups, background stores, records, the report."""

    def __init__(
        self,
        cache: LayerCache,
        options: CacheOptions,
        *,
        log: logging.Logger,
        dockerfile: str,
    ) -> None:
        self.options = options
        self.log = log
        self.dockerfile = dockerfile
        if not isinstance(cache, BackgroundCache):
            cache = BackgroundCache(cache, log)
        self.cache: LayerCache = cache
        self.stage_keys: dict[int, str] = {}
        self.records: list[StepRecord] = []
        #: source descriptions by what was described (the context does not change mid-build)
        self.memo: dict[object, tuple[SourceEntry, ...]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._fetcher: ThreadPoolExecutor | None = None
        self._prefetched: dict[str, Future[CacheLookup]] = {}
        self._closed = False
        #: keys whose entry turned out corrupted when read: they miss from then on
        self.bad: dict[str, str] = {}
        #: the stages that used each hit, by key (where a rebuild starts)
        self.hit_stages: dict[str, set[int]] = {}
        #: hits already given (a rebuilt stage asks again)
        self._answers: dict[str, CacheLookup] = {}

    def slot(self, stage: str, step: int, keyword: str) -> str:
        return f"{self.dockerfile}:{stage}:{step}:{keyword}"

    def prefetch(self, keys: Sequence[str]) -> None:
        """Start looking ``keys`` up in parallel; :meth:`lookup` then waits for the answer."""
        if self._closed:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-lookup")
        for key in keys:
            if key not in self._prefetched and key not in self._answers and key not in self.bad:
                self._prefetched[key] = self._pool.submit(self._lookup, key)

    def lookup(self, key: str) -> CacheLookup:
        if key in self.bad:
            return CacheLookup(hit=None, reason=self.bad[key])  # "corrupted: ..." etc.
        found = self._answers.get(key)
        if found is not None:
            return found
        future = self._prefetched.pop(key, None)
        found = future.result() if future is not None else self._lookup(key)  # never raises
        if found.hit is not None:
            self._answers[key] = found
        return found

    def fetch_ahead(self, layer: Layer | None) -> None:
        """Start downloading a lazy hit's layer that the output will need anyway.

        A failure is remembered by the layer and raised where it is read (the final
        verification at the latest), so it is not reported here.
        """
        if not isinstance(layer, LazyLayer) or layer.fetched or self._closed:
            return
        if self._fetcher is None:
            self._fetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-fetch")
        self._fetcher.submit(_quietly, layer)

    def note_hit(self, key: str, stage: int) -> None:
        self.hit_stages.setdefault(key, set()).add(stage)

    def mark_bad(self, keys: Sequence[str], why: str) -> None:
        """Entries found corrupted when read: warn, and make them miss from now on."""
        for key in keys:
            if key in self.bad:
                continue
            self.bad[key] = why
            self._answers.pop(key, None)
            self.log.warning(
                "layer cache %s: entry %s unusable, %s; treated as a miss",
                self.cache.description,
                key[:12],
                why,
            )

    def discard(self, stages: set[int]) -> None:
        """Forget what ``stages`` did (they are rebuilt): their keys and report lines."""
        for index in stages:
            self.stage_keys.pop(index, None)
        self.records = [r for r in self.records if r.stage_index not in stages]

    def _lookup(self, key: str) -> CacheLookup:
        try:
            return self.cache.lookup(key)
        except Exception as exc:  # a back end broke its contract: never fail the build
            self.log.warning("cache lookup of %s failed: %s", key[:12], exc)
            return CacheLookup(hit=None, reason=f"lookup failed: {exc}")

    def explain(self, slot: str, inputs: KeyInputs, lookup: CacheLookup) -> str:
        if lookup.reason and lookup.reason != "no entry":
            return lookup.reason
        try:
            previous = self.cache.previous(slot)
        except Exception as exc:
            self.log.warning("cache: cannot read the previous inputs of %s: %s", slot, exc)
            previous = None
        if previous is None:
            return "no earlier build of this step is known"
        return _explain(previous, inputs)

    def store_later(self, key: str, layer: Layer | None, inputs: KeyInputs, slot: str) -> None:
        """Queue the entry (:class:`~lamina.cache.BackgroundCache` writes it off-thread)."""
        try:
            self.cache.store(key, layer, inputs, slot=slot)
        except LaminaError as exc:
            self.log.warning("layer cache: could not store %s: %s", key[:12], exc.message)
        except Exception as exc:
            self.log.warning("layer cache: could not store %s: %s", key[:12], exc)

    def record(self, rec: StepRecord) -> None:
        self.records.append(rec)

    def close(self) -> None:
        """Wait for the queued stores, then release the back end (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._fetcher is not None:
            self._fetcher.shutdown(wait=True, cancel_futures=True)
        try:
            self.cache.close()
        except Exception as exc:
            self.log.warning("cache: closing %s failed: %s", self.cache.description, exc)

    def write_report(self, path: Path) -> None:
        doc = {"steps": [r.as_json() for r in self.records]}
        try:
            if path.parent != Path():
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise FilesystemError(
                f"cannot write the --cache-report {path}: {exc.strerror}",
                hint="check that the directory is writable",
            ) from exc
