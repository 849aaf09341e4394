"""SIGTERM is an interrupt with exit status 143: every clean-up of SIGINT runs for it."""

from __future__ import annotations

import io
import os
import signal
import time

from lamina.cli.main import EXIT_TERMINATED, _guarded


def test_sigterm_runs_the_clean_up_and_exits_143() -> None:
    cleaned: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second one does not cut the clean-up
            cleaned.append("build directory")

    stderr = io.StringIO()
    assert _guarded(body, [], stderr) == EXIT_TERMINATED == 143
    assert cleaned == ["build directory"]
    assert stderr.getvalue() == "error: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before
