"""Command-line interface: kaniko-compatible flags, logging, error rendering, exit codes."""

from lamina.cli.main import executor_main, main, run, warmer_main

__all__ = ["executor_main", "main", "run", "warmer_main"]
