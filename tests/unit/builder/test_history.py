"""created_by strings and Go-style formatting helpers."""

from __future__ import annotations

from lamina.builder._history import (
    go_duration,
    go_list,
    go_quoted_list,
    healthcheck_created_by,
    run_created_by,
)


def test_run_created_by_like_buildkit() -> None:
    assert run_created_by(["/bin/sh", "-c", "echo hi"], []) == "RUN /bin/sh -c echo hi # buildkit"
    assert (
        run_created_by(["/bin/sh", "-c", "ls"], [("foo", "bar2"), ("bar", "123")])
        == "RUN |2 foo=bar2 bar=123 /bin/sh -c ls # buildkit"
    )


def test_go_lists() -> None:
    assert go_quoted_list(["/bin/sh", "-c", 'echo "hi"']) == '["/bin/sh" "-c" "echo \\"hi\\""]'
    assert go_list(["/bin/bash", "-c"]) == "[/bin/bash -c]"
    assert go_quoted_list([]) == "[]"


def test_go_duration() -> None:
    assert go_duration(0) == "0s"
    assert go_duration(30 * 10**9) == "30s"
    assert go_duration(90 * 10**9) == "1m30s"
    assert go_duration(500 * 10**6) == "500ms"
    assert go_duration(3600 * 10**9) == "1h0m0s"
    assert go_duration(1500 * 10**6) == "1.5s"


def test_healthcheck_created_by() -> None:
    text = healthcheck_created_by(
        {"Test": ["CMD-SHELL", "curl -f http://x/"], "Interval": 30 * 10**9}
    )
    assert text == (
        "HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:30s Timeout:0s "
        "StartPeriod:0s StartInterval:0s Retries:0}"
    )
