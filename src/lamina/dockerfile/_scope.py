"""ARG scoping: the environment visible to FROM lines and to each step of a stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from lamina.errors import DockerfileError

from ._instructions import ArgInstruction
from ._lexer import MAX_EXPANSION, ShellLex, ShellSyntaxError
from ._pmap import PMap

__all__ = [
    "PROXY_ARGS",
    "BuildArgs",
    "MetaScope",
    "StageScope",
    "platform_args",
]

PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)


def _split_platform(platform: str) -> tuple[str, str, str]:
    parts = platform.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1] or len(parts) > 3:
        raise DockerfileError(
            f"invalid platform {platform!r}",
            hint="write a platform as os/arch[/variant], e.g. linux/amd64 or linux/arm/v7",
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def platform_args(build_platform: str, target_platform: str) -> dict[str, str]:
    """The automatic platform ARGs for a build on ``build_platform`` for ``target_platform``."""
    out: dict[str, str] = {}
    for prefix, plat in (("BUILD", build_platform), ("TARGET", target_platform)):
        os_, arch, variant = _split_platform(plat)
        out[prefix + "PLATFORM"] = plat
        out[prefix + "OS"] = os_
        out[prefix + "ARCH"] = arch
        out[prefix + "VARIANT"] = variant
    return out


class _Budget:
    """What substitutions may still add to one ARG instruction (all its defaults)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_EXPANSION


def _expand(
    lex: ShellLex, word: str, env: Mapping[str, str], instr: ArgInstruction, budget: _Budget
) -> str:
    try:
        res = lex.process(word, env, budget=budget.left)
        budget.left -= res.substituted
        return res.result
    except ShellSyntaxError as exc:
        raise DockerfileError(
            f"ARG: {exc.message}", hint=exc.hint, location=instr.location
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaScope:
    """Global scope: what FROM lines see, and the global ARG values stages may re-declare."""

    env: dict[str, str]
    declared: dict[str, str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildArgs:
    """``--build-arg`` values plus the build and target platforms (``os/arch[/variant]``).

    Nothing here reads the process environment: callers pass every value in.
    """

    values: Mapping[str, str] = field(default_factory=dict)
    build_platform: str = "linux/amd64"
    target_platform: str = "linux/amd64"
    target_stage: str | None = None

    def meta_scope(self, meta_args: Sequence[ArgInstruction], *, escape: str = "\\") -> MetaScope:
        """Evaluate the ARGs before the first FROM, in order."""
        lex = ShellLex(escape=escape)
        env = platform_args(self.build_platform, self.target_platform)
        env["TARGETSTAGE"] = self.target_stage or "default"
        for k in list(env):
            if k in self.values:
                env[k] = self.values[k]
        declared: dict[str, str | None] = {}
        for instr in meta_args:
            budget = _Budget()
            for kv in instr.args:
                value = kv.value
                if value is not None:
                    value = _expand(lex, value, env, instr, budget)
                if kv.key in self.values:
                    value = self.values[kv.key]
                declared[kv.key] = value
                if value is not None:
                    env[kv.key] = value
        return MetaScope(env=env, declared=declared)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageScope:
    """The variables of one stage at one step (immutable; methods return new scopes).

    ``config_env`` is the image config Env (ordered; ``config_env_text`` the same as
    ``KEY=value`` strings); ``args`` the ARGs declared in this stage (and inherited
    along ``FROM <stage>``) with their values (None: declared but unset). ``env`` is
    what expansion and RUN see: the later of ENV/ARG wins (BuildKit).

    The three live in persistent maps (:class:`~lamina.dockerfile._pmap.PMap`), so an
    ``ENV`` or ``ARG`` step costs what it sets, not the size of the environment: a
    Dockerfile of 100k ``ENV`` lines stays linear here.
    """

    build_args: BuildArgs
    meta: MetaScope
    config: PMap[str] = field(default_factory=PMap)
    declared: PMap[str | None] = field(default_factory=PMap)
    env: PMap[str] = field(default_factory=PMap)
    #: an ENV changed ``config`` since the stage started (its image config Env is then
    #: ``config_env_text``; else the base image's, as it was)
    config_changed: bool = False

    @property
    def config_env(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.config.items_list())

    @property
    def config_env_text(self) -> tuple[str, ...]:
        """``config`` as the image config's ``KEY=value`` strings (O(size): ask once)."""
        return tuple(f"{k}={v}" for k, v in self.config.items_list())

    @property
    def args(self) -> tuple[tuple[str, str | None], ...]:
        return tuple(self.declared.items_list())

    @classmethod
    def start(
        cls,
        build_args: BuildArgs,
        meta: MetaScope,
        base_env: Sequence[tuple[str, str]] = (),
        inherited: StageScope | None = None,
    ) -> StageScope:
        """The scope right after FROM: the base config Env (or the parent stage's scope)."""
        if inherited is not None:
            return replace(inherited, build_args=build_args, meta=meta, config_changed=False)
        return StageScope(
            build_args=build_args, meta=meta, config=PMap(base_env), env=PMap(base_env)
        )

    def with_config_env(self, pairs: Sequence[tuple[str, str]]) -> StageScope:
        """The same scope with the image config Env replaced by ``pairs`` (``env`` kept)."""
        return replace(self, config=PMap(pairs), config_changed=False)

    def with_env(self, pairs: Sequence[tuple[str, str]]) -> StageScope:
        """After ``ENV k=v ...`` (values already expanded): O(len(pairs))."""
        return replace(
            self,
            config=self.config.set_many(pairs),
            env=self.env.set_many(pairs),
            config_changed=True,
        )

    def with_arg(self, instr: ArgInstruction, *, escape: str = "\\") -> StageScope:
        """After ``ARG name[=default] ...`` inside the stage."""
        lex = ShellLex(escape=escape)
        declared, env = self.declared, self.env
        budget = _Budget()
        for kv in instr.args:
            value: str | None
            if kv.key in self.build_args.values:
                value = self.build_args.values[kv.key]
            elif kv.value is not None:
                value = _expand(lex, kv.value, env, instr, budget)
            else:
                value = self.meta.declared.get(kv.key)
                if value is None and kv.key in self.meta.env and kv.key not in self.meta.declared:
                    # automatic platform args are global: a bare ARG re-declares them
                    value = self.meta.env[kv.key]
            declared = declared.set_many([(kv.key, value)])
            if value is not None:
                env = env.set_many([(kv.key, value)])
        return replace(self, declared=declared, env=env)

    @property
    def run_env(self) -> dict[str, str]:
        """RUN's environment: ``env`` plus undeclared proxy build-args."""
        env = dict(self.env.items_list())
        declared = self.declared
        for k, v in self.build_args.values.items():
            if k in PROXY_ARGS and k not in declared and k not in env:
                env[k] = v
        return env

    @property
    def arg_values(self) -> dict[str, str]:
        """Declared ARGs that have a value (for cache keys and ``RUN |N k=v`` history)."""
        return {k: v for k, v in self.declared.items_list() if v is not None}
