"""ARG scoping: the environment visible to FROM lines and to each step of a stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lamina.errors import DockerfileError

from ._instructions import ArgInstruction
from ._lexer import ShellLex, ShellSyntaxError

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


def _expand(lex: ShellLex, word: str, env: Mapping[str, str], instr: ArgInstruction) -> str:
    try:
        return lex.process(word, env).result
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
            for kv in instr.args:
                value = kv.value
                if value is not None:
                    value = _expand(lex, value, env, instr)
                if kv.key in self.values:
                    value = self.values[kv.key]
                declared[kv.key] = value
                if value is not None:
                    env[kv.key] = value
        return MetaScope(env=env, declared=declared)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageScope:
    """The variables of one stage at one step (immutable; methods return new scopes).

    ``config_env`` is the image config Env (ordered); ``args`` the ARGs declared in
    this stage (and inherited along ``FROM <stage>``) with their values (None:
    declared but unset). ``env`` is what expansion and RUN see: the later of
    ENV/ARG wins (BuildKit).
    """

    build_args: BuildArgs
    meta: MetaScope
    config_env: tuple[tuple[str, str], ...] = ()
    args: tuple[tuple[str, str | None], ...] = ()
    env: dict[str, str] = field(default_factory=dict)

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
            return StageScope(
                build_args=build_args,
                meta=meta,
                config_env=inherited.config_env,
                args=inherited.args,
                env=dict(inherited.env),
            )
        return StageScope(
            build_args=build_args,
            meta=meta,
            config_env=tuple(base_env),
            env=dict(base_env),
        )

    def with_env(self, pairs: Sequence[tuple[str, str]]) -> StageScope:
        """After ``ENV k=v ...`` (values already expanded)."""
        cfg = list(self.config_env)
        env = dict(self.env)
        for k, v in pairs:
            for i, (ck, _) in enumerate(cfg):
                if ck == k:
                    cfg[i] = (k, v)
                    break
            else:
                cfg.append((k, v))
            env[k] = v
        return StageScope(
            build_args=self.build_args,
            meta=self.meta,
            config_env=tuple(cfg),
            args=self.args,
            env=env,
        )

    def with_arg(self, instr: ArgInstruction, *, escape: str = "\\") -> StageScope:
        """After ``ARG name[=default] ...`` inside the stage."""
        lex = ShellLex(escape=escape)
        args = list(self.args)
        env = dict(self.env)
        for kv in instr.args:
            value: str | None
            if kv.key in self.build_args.values:
                value = self.build_args.values[kv.key]
            elif kv.value is not None:
                value = _expand(lex, kv.value, env, instr)
            else:
                value = self.meta.declared.get(kv.key)
                if value is None and kv.key in self.meta.env and kv.key not in self.meta.declared:
                    # automatic platform args are global: a bare ARG re-declares them
                    value = self.meta.env[kv.key]
            for idx, (k, _) in enumerate(args):
                if k == kv.key:
                    args[idx] = (k, value)
                    break
            else:
                args.append((kv.key, value))
            if value is not None:
                env[kv.key] = value
        return StageScope(
            build_args=self.build_args,
            meta=self.meta,
            config_env=self.config_env,
            args=tuple(args),
            env=env,
        )

    @property
    def run_env(self) -> dict[str, str]:
        """RUN's environment: ``env`` plus undeclared proxy build-args."""
        env = dict(self.env)
        declared = {k for k, _ in self.args}
        for k, v in self.build_args.values.items():
            if k in PROXY_ARGS and k not in declared and k not in env:
                env[k] = v
        return env

    @property
    def arg_values(self) -> dict[str, str]:
        """Declared ARGs that have a value (for cache keys and ``RUN |N k=v`` history)."""
        return {k: v for k, v in self.args if v is not None}
