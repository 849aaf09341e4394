"""Cache keys of build steps (lamina.builder._cache): what enters a key and what does not."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lamina.builder._cache import (
    CacheSession,
    StepContext,
    StepDecision,
    StepRecord,
    chain_after_layer,
    decide,
    instruction_text,
)
from lamina.builder.options import CacheOptions
from lamina.cache import CacheHit, CacheLookup, KeyInputs, cache_key
from lamina.context import LocalContext
from lamina.dockerfile import Instruction, expand_instruction, parse_dockerfile
from lamina.errors import LaminaError
from lamina.oci import Layer

LOG = logging.getLogger("lamina.tests.cachekeys")
ON = CacheOptions(enabled=True)
BASE = "sha256:" + "ab" * 32


def instr(line: str, env: Mapping[str, str] | None = None) -> Instruction:
    df = parse_dockerfile(f"FROM scratch\n{line}\n")
    raw = df.stages[0].instructions[0]
    if env is None:
        return raw
    return expand_instruction(raw, dict(env)).instruction


def ctx_for(root: Path, **kw: object) -> StepContext:
    args: dict[str, object] = {
        "parent": BASE,
        "platform": "linux/amd64",
        "layer_format": "gzip:None:0:full:oci",
        "run_env": {"PATH": "/bin"},
        "context": LocalContext.open(root),
        "ref_key": lambda name: (name, "sha256:" + "cd" * 32),
    }
    args.update(kw)
    return StepContext(**args)  # type: ignore[arg-type]


def checkout(root: Path, files: Mapping[str, str], mtime: int = 1_000_000) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o644)
        os.utime(p, (mtime, mtime))
    return root


APP = {"app/main.py": "print('hi')\n", "app/util.py": "X = 1\n", "README": "r\n"}


def copy_key(root: Path, line: str = "COPY app /srv/app", **kw: object) -> StepDecision:
    return decide(instr(line, {}), ctx_for(root, **kw), ON)


# ------------------------------------------------------------ stability matrix


def test_two_checkouts_in_different_dirs_with_different_mtimes_give_the_same_key(
    tmp_path: Path,
) -> None:
    a = checkout(tmp_path / "one", APP, mtime=1_000)
    b = checkout(tmp_path / "elsewhere" / "two", APP, mtime=2_000_000_000)
    if os.geteuid() == 0:  # another uid checked out the second copy
        for p in b.rglob("*"):
            os.lchown(p, 1234, 1234)
    ka, kb = copy_key(a), copy_key(b)
    assert ka.status == kb.status == "lookup"
    assert ka.lookup is not None
    assert kb.lookup is not None
    assert cache_key(ka.lookup) == cache_key(kb.lookup)
    assert ka.chain == kb.chain


_CHILD = """
import json, sys
from pathlib import Path
from lamina.builder._cache import StepContext, decide
from lamina.builder.options import CacheOptions
from lamina.cache import cache_key
from lamina.context import LocalContext
from lamina.dockerfile import expand_instruction, parse_dockerfile
raw = parse_dockerfile("FROM scratch\\nCOPY app /srv/app\\n").stages[0].instructions[0]
i = expand_instruction(raw, {}).instruction
ctx = StepContext(parent="sha256:" + "ab" * 32, platform="linux/amd64",
    layer_format="gzip:None:0:full:oci", run_env={"PATH": "/bin"},
    context=LocalContext.open(Path(sys.argv[1])), ref_key=lambda n: (n, ""))
d = decide(i, ctx, CacheOptions(enabled=True))
print(json.dumps([cache_key(d.lookup), d.chain]))
"""


def test_same_inputs_in_two_processes_give_the_same_key(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", APP)
    b = checkout(tmp_path / "b", APP, mtime=5)
    src = Path(__file__).resolve().parents[3] / "src"
    outs = []
    for root, seed in ((a, "1"), (b, "2")):
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1]
    here = copy_key(a)
    assert here.lookup is not None
    assert outs[0] == [cache_key(here.lookup), here.chain]


def test_a_renamed_file_changes_the_key_and_is_explained(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", APP)
    renamed = dict(APP)
    renamed["app/helpers.py"] = renamed.pop("app/util.py")
    b = checkout(tmp_path / "b", renamed)
    ka, kb = copy_key(a), copy_key(b)
    assert ka.chain != kb.chain
    assert ka.lookup is not None
    assert kb.lookup is not None
    from lamina.cache import explain_miss

    why = explain_miss(ka.lookup, kb.lookup)
    assert "source file app/helpers.py was added" in why
    assert "source file app/util.py was removed" in why


def test_a_changed_mode_changes_the_key(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", APP)
    before = copy_key(a)
    (a / "app/main.py").chmod(0o755)
    after = copy_key(a)
    assert before.chain != after.chain
    assert before.lookup is not None
    assert after.lookup is not None
    from lamina.cache import explain_miss

    assert "mode of source file app/main.py changed (644 -> 755)" in explain_miss(
        before.lookup, after.lookup
    )


def test_changed_content_names_the_file(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", APP)
    before = copy_key(a)
    (a / "app/main.py").write_text("print('bye')\n")
    after = copy_key(a)
    assert before.lookup is not None
    assert after.lookup is not None
    from lamina.cache import explain_miss

    assert explain_miss(before.lookup, after.lookup) == "source file app/main.py changed"


def test_files_the_copy_does_not_take_do_not_change_the_key(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", {**APP, "app/notes.txt": "n\n", "app/tmp.log": "x\n"})
    (a / ".dockerignore").write_text("app/*.log\n")
    line = "COPY --exclude=*.txt app /srv/app"
    before = copy_key(a, line)
    (a / "README").write_text("changed, but not copied\n")
    (a / "app/tmp.log").write_text("ignored by .dockerignore\n")
    (a / "app/notes.txt").write_text("excluded by --exclude\n")
    assert copy_key(a, line).chain == before.chain
    (a / "app/util.py").write_text("X = 2\n")
    assert copy_key(a, line).chain != before.chain


def test_the_effective_owner_is_recorded_not_the_checkout_owner(tmp_path: Path) -> None:
    a = checkout(tmp_path / "a", APP)
    plain = copy_key(a)
    assert plain.lookup is not None
    assert {(s.uid, s.gid) for s in plain.lookup.sources} == {(0, 0)}
    chowned = copy_key(a, "COPY --chown=10:20 app /srv/app")
    assert chowned.lookup is not None
    assert {(s.uid, s.gid) for s in chowned.lookup.sources} == {(10, 20)}
    assert chowned.chain != plain.chain


# --------------------------------------------------------------- RUN and args


def test_run_key_uses_the_visible_environment(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    run = instr("RUN echo $VERSION", {})
    one = decide(run, ctx_for(root, run_env={"PATH": "/bin", "VERSION": "1"}), ON)
    two = decide(run, ctx_for(root, run_env={"PATH": "/bin", "VERSION": "2"}), ON)
    same = decide(run, ctx_for(root, run_env={"PATH": "/bin", "VERSION": "1"}), ON)
    assert one.chain != two.chain
    assert one.chain == same.chain
    assert one.lookup is not None
    assert two.lookup is not None
    from lamina.cache import explain_miss

    assert explain_miss(one.lookup, two.lookup) == "build arg VERSION changed"


def test_arg_extends_the_chain_with_its_name_only(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    a = decide(instr("ARG VERSION=1"), ctx_for(root), ON)
    b = decide(instr("ARG VERSION=2"), ctx_for(root), ON)
    c = decide(instr("ARG OTHER=1"), ctx_for(root), ON)
    assert a.status == "metadata"
    assert a.chain == b.chain != c.chain


def test_metadata_instructions_extend_the_chain(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    a = decide(instr("ENV A=1", {}), ctx_for(root), ON)
    b = decide(instr("ENV A=2", {}), ctx_for(root), ON)
    assert a.status == b.status == "metadata"
    assert a.chain != b.chain
    assert a.chain != decide(instr("ENV A=1", {}), ctx_for(root, parent="scratch"), ON).chain


def test_run_bind_mount_from_the_context_includes_the_bound_files(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    run = instr("RUN --mount=type=bind,source=app,target=/src cat /src/main.py", {})
    before = decide(run, ctx_for(root), ON)
    (root / "README").write_text("not bound\n")
    assert decide(run, ctx_for(root), ON).chain == before.chain
    (root / "app/main.py").write_text("changed\n")
    assert decide(run, ctx_for(root), ON).chain != before.chain


def test_run_secret_mount_keys_on_its_id_only(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    a = decide(instr("RUN --mount=type=secret,id=tok cat /run/secrets/tok", {}), ctx_for(root), ON)
    b = decide(instr("RUN --mount=type=secret,id=pw cat /run/secrets/tok", {}), ctx_for(root), ON)
    assert a.chain != b.chain
    assert a.lookup is not None
    assert a.lookup.sources == ()


def test_cache_run_layers_false_runs_but_keeps_the_chain(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    run = instr("RUN true", {})
    off = decide(run, ctx_for(root), CacheOptions(enabled=True, run_layers=False))
    on = decide(run, ctx_for(root), ON)
    assert off.status == "uncacheable"
    assert off.reason == "--cache-run-layers=false"
    assert off.chain == on.chain
    copy = decide(instr("COPY app /a", {}), ctx_for(root), CacheOptions(copy_layers=False))
    assert (copy.status, copy.reason) == ("uncacheable", "--cache-copy-layers=false")


def test_layer_format_is_part_of_layer_steps_keys(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    gz = copy_key(root)
    zst = copy_key(root, layer_format="zstd:None:0:full:oci")
    assert gz.chain != zst.chain


# ---------------------------------------------------------------- --from, ADD, --link


def test_copy_from_a_stage_keys_on_that_stage_key(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    line = "COPY --from=builder /out /app"
    a = copy_key(root, line, ref_key=lambda n: (n, "k1"))
    b = copy_key(root, line, ref_key=lambda n: (n, "k2"))
    assert a.chain != b.chain
    assert a.lookup is not None
    assert b.lookup is not None
    from lamina.cache import explain_miss

    assert explain_miss(a.lookup, b.lookup) == "source file --from=builder changed"


def test_add_url_without_checksum_is_never_cached(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    plain = copy_key(root, "ADD https://example.invalid/f.tgz /f.tgz")
    assert plain.status == "uncacheable"
    assert plain.reason == "ADD of a URL without --checksum is never cached"
    assert plain.chain_on_layer
    summed = copy_key(root, f"ADD --checksum=sha256:{'0' * 64} https://example.invalid/f /f")
    assert summed.status == "lookup"


def test_uncacheable_steps_chain_on_the_layer_they_made(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    d = copy_key(root, "ADD https://example.invalid/f.tgz /f.tgz")

    class L:
        def __init__(self, diff_id: str) -> None:
            self._d = diff_id

        def diff_id(self) -> str:
            return self._d

    one = chain_after_layer(d, L("sha256:1"))  # type: ignore[arg-type]
    assert one == chain_after_layer(d, L("sha256:1"))  # type: ignore[arg-type]
    assert one != chain_after_layer(d, L("sha256:2"))  # type: ignore[arg-type]
    assert one != chain_after_layer(d, None)


def test_link_copy_is_looked_up_without_the_parent_but_the_chain_keeps_it(
    tmp_path: Path,
) -> None:
    root = checkout(tmp_path / "c", APP)
    line = "COPY --link app /srv/app/"
    a = copy_key(root, line, parent="p1")
    b = copy_key(root, line, parent="p2")
    assert a.lookup is not None
    assert b.lookup is not None
    assert cache_key(a.lookup) == cache_key(b.lookup)
    assert a.chain != b.chain
    # a destination that may be a file or a directory depends on the parent
    c = copy_key(root, "COPY --link app /srv/app", parent="p1")
    d = copy_key(root, "COPY --link app /srv/app", parent="p2")
    assert c.lookup is not None
    assert d.lookup is not None
    assert cache_key(c.lookup) != cache_key(d.lookup)


def test_instruction_text_has_flags_but_no_location() -> None:
    a = instruction_text(instr("COPY --chmod=755 a /b", {}))
    df = parse_dockerfile("FROM scratch\n\n\nCOPY   --chmod=755 a /b\n")
    b = instruction_text(expand_instruction(df.stages[0].instructions[0], {}).instruction)
    assert a == b
    assert '"chmod":"755"' in a


# ---------------------------------------------------------------------- session


class FakeCache:
    """In-memory LayerCache."""

    description = "memory"

    def __init__(self, *, fail_store: bool = False, fail_lookup: bool = False) -> None:
        self.entries: dict[str, tuple[Layer | None, KeyInputs]] = {}
        self.slots: dict[str, KeyInputs] = {}
        self.fail_store = fail_store
        self.fail_lookup = fail_lookup
        self.closed = 0

    def lookup(self, key: str) -> CacheLookup:
        if self.fail_lookup:
            raise RuntimeError("boom")
        if key not in self.entries:
            return CacheLookup(hit=None, reason="no entry")
        layer, inputs = self.entries[key]
        hit = CacheHit(
            key=key, layer=layer, inputs=inputs, created=datetime.now(tz=UTC), source="memory"
        )
        return CacheLookup(hit=hit)

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        if self.fail_store:
            raise LaminaError("registry said no")
        self.entries[key] = (layer, inputs)
        self.slots[slot] = inputs

    def previous(self, slot: str) -> KeyInputs | None:
        return self.slots.get(slot)

    def close(self) -> None:
        self.closed += 1


def test_session_explains_misses_against_the_slot(tmp_path: Path) -> None:
    fake = FakeCache()
    s = CacheSession(fake, ON, log=LOG, dockerfile="Dockerfile")
    slot = s.slot("0", 3, "RUN")
    assert slot == "Dockerfile:0:3:RUN"
    old = KeyInputs(parent="p", instruction="RUN x", platform="linux/amd64", args={"V": "1"})
    new = replace(old, args={"V": "2"})
    first = s.lookup(cache_key(old))
    assert s.explain(slot, old, first) == "no earlier build of this step is known"
    s.store_later(cache_key(old), None, old, slot)
    s.close()
    s.close()
    assert fake.closed == 1
    s = CacheSession(fake, ON, log=LOG, dockerfile="Dockerfile")
    assert s.lookup(cache_key(old)).hit is not None
    assert s.explain(slot, new, s.lookup(cache_key(new))) == "build arg V changed"
    expired = CacheLookup(hit=None, reason="expired (written 2026-01-01T00:00:00Z, ttl 1h)")
    assert s.explain(slot, new, expired).startswith("expired")
    s.close()


def test_session_never_fails_the_build(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = CacheSession(FakeCache(fail_store=True, fail_lookup=True), ON, log=LOG, dockerfile="D")
    inputs = KeyInputs(parent="p", instruction="RUN x", platform="linux/amd64")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        miss = s.lookup(cache_key(inputs))
        s.store_later(cache_key(inputs), None, inputs, "slot")
        s.close()
    assert miss.hit is None
    assert "boom" in miss.reason
    assert "storing key" in caplog.text
    assert "registry said no" in caplog.text


def test_report_has_one_record_per_step(tmp_path: Path) -> None:
    s = CacheSession(FakeCache(), ON, log=LOG, dockerfile="D")
    s.record(StepRecord(stage="0", step=1, instruction="RUN x", key="k", status="hit"))
    s.record(
        StepRecord(
            stage="0",
            step=2,
            instruction="COPY a /b",
            key="k2",
            status="miss",
            reason="source file a changed",
            layer_digest="sha256:00",
            size=10,
            seconds=0.1234,
        )
    )
    out = tmp_path / "r" / "report.json"
    s.write_report(out)
    doc = json.loads(out.read_text())
    assert [r["status"] for r in doc["steps"]] == ["hit", "miss"]
    assert doc["steps"][1] == {
        "stage": "0",
        "step": 2,
        "instruction": "COPY a /b",
        "key": "k2",
        "status": "miss",
        "reason": "source file a changed",
        "layer_digest": "sha256:00",
        "size": 10,
        "seconds": 0.123,
    }
    s.close()


def test_prefetched_lookups_are_used_once(tmp_path: Path) -> None:
    fake = FakeCache()
    calls: list[str] = []
    inner = fake.lookup

    def counting(key: str) -> CacheLookup:
        calls.append(key)
        return inner(key)

    fake.lookup = counting  # type: ignore[method-assign]
    s = CacheSession(fake, ON, log=LOG, dockerfile="D")
    s.prefetch(["a" * 64, "b" * 64, "a" * 64])
    assert s.lookup("a" * 64).reason == "no entry"
    assert s.lookup("b" * 64).reason == "no entry"
    assert sorted(calls) == ["a" * 64, "b" * 64]
    s.lookup("a" * 64)  # not prefetched any more: asked again
    assert calls.count("a" * 64) == 2
    s.close()


def test_sources_are_described_once_per_build(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c", APP)
    memo: dict[object, object] = {}
    first = copy_key(root, memo=memo)
    (root / "app/main.py").write_text("changed after the first description\n")
    assert copy_key(root, memo=memo).chain == first.chain
    assert copy_key(root).chain != first.chain
