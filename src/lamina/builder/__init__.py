"""Build orchestration: plan, per-instruction steps, the build loop."""

from lamina.builder.options import BuildOptions, CacheOptions, GitOptions, OutputOptions

__all__ = ["BuildOptions", "CacheOptions", "GitOptions", "OutputOptions"]
