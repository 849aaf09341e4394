"""RUN heredoc → argv (BuildKit's dispatchRun rules)."""

from __future__ import annotations

from lamina.builder._runcmd import heredoc_command
from lamina.dockerfile import RunInstruction, ShellCommand, parse_dockerfile

SH = ("/bin/sh", "-c")


def _run(text: str) -> RunInstruction:
    instr = parse_dockerfile("FROM scratch\n" + text).stages[0].instructions[0]
    assert isinstance(instr, RunInstruction)
    return instr


def _argv(text: str, shell: tuple[str, ...] = SH) -> tuple[tuple[str, ...], object]:
    instr = _run(text)
    assert isinstance(instr.command, ShellCommand)
    hd = heredoc_command(instr.command.text, instr.heredocs, shell)
    return hd.argv, hd.script


def test_single_heredoc_is_the_shell_script() -> None:
    argv, script = _argv("RUN <<EOF\necho $A\necho b\nEOF\n")
    assert argv == (*SH, "echo $A\necho b\n")
    assert script is None


def test_quoted_delimiter_still_goes_to_the_shell() -> None:
    argv, _ = _argv("RUN <<'EOF'\necho $A\nEOF\n")
    assert argv == (*SH, "echo $A\n")


def test_chomp_strips_tabs() -> None:
    argv, _ = _argv("RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n")
    assert argv == (*SH, "echo a\necho b\n")


def test_custom_shell() -> None:
    argv, _ = _argv("RUN <<EOF\necho a\nEOF\n", ("/bin/bash", "-eu", "-c"))
    assert argv == ("/bin/bash", "-eu", "-c", "echo a\n")


def test_shebang_becomes_a_pipes_file() -> None:
    argv, script = _argv("RUN <<EOF\n#!/bin/sh\nset -e\necho hi\nEOF\n")
    assert argv == (*SH, "/dev/pipes/EOF")
    assert script == ("EOF", b"#!/bin/sh\nset -e\necho hi\n")


def test_heredoc_with_a_command_is_reconstituted() -> None:
    argv, script = _argv("RUN <<-EOF1 cat > /a && <<'EOF2' cat > /b\n\tone\n\tEOF1\ntwo\nEOF2\n")
    assert argv == (*SH, "<<-EOF1 cat > /a && <<'EOF2' cat > /b\n\tone\nEOF1\ntwo\nEOF2")
    assert script is None


def test_heredoc_piped_to_a_program() -> None:
    argv, _ = _argv("RUN python3 <<EOF\nprint(1)\nEOF\n")
    assert argv == (*SH, "python3 <<EOF\nprint(1)\nEOF")
