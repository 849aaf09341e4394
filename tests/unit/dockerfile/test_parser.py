"""Low-level parser: heredocs (BuildKit's parser_heredoc_test behaviours), directives, errors."""

from __future__ import annotations

import pytest

from lamina.dockerfile import parse
from lamina.errors import DockerfileError


def test_heredoc_basic_body_and_lines() -> None:
    r = parse("FROM busybox\nRUN <<EOF\necho hi\necho there\nEOF\nRUN true\n")
    run = r.nodes[1]
    assert run.args == ("<<EOF",)
    (doc,) = run.heredocs
    assert doc.name == "EOF"
    assert doc.content == "echo hi\necho there\n"
    assert doc.expand
    assert not doc.chomp
    assert doc.file_descriptor == 0
    assert (run.start_line, run.end_line) == (2, 5)
    assert r.nodes[2].start_line == 6
    assert r.dump() == '(from "busybox")\n(run "<<EOF")\n(run "true")\n'


def test_heredoc_chomp_strips_tabs_from_body_and_terminator() -> None:
    r = parse("FROM x\nRUN <<-EOT\n\techo a\n\t\techo b\n\tEOT\n")
    (doc,) = r.nodes[1].heredocs
    assert doc.chomp
    assert doc.content == "\techo a\n\t\techo b\n"
    assert doc.body == "echo a\necho b\n"


@pytest.mark.parametrize("marker", ["<<'EOF'", '<<"EOF"', '<<E"O"F', "<<'E'OF"])
def test_quoted_delimiter_turns_expansion_off(marker: str) -> None:
    r = parse(f"FROM x\nCOPY {marker} /dest\n$HOME\nEOF\n")
    (doc,) = r.nodes[1].heredocs
    assert doc.name == "EOF"
    assert doc.expand is False
    assert doc.content == "$HOME\n"


def test_fd_prefix_and_several_heredocs_on_one_line() -> None:
    r = parse("FROM x\nRUN 3<<A cat /dev/fd/3 <<-B\na\nA\n\tb\n\tB\n")
    a, b = r.nodes[1].heredocs
    assert (a.name, a.file_descriptor, a.content) == ("A", 3, "a\n")
    assert (b.name, b.chomp, b.body) == ("B", True, "b\n")
    assert r.nodes[1].end_line == 6


def test_heredoc_with_space_after_operator() -> None:
    r = parse("FROM x\nRUN cat <<  EOF\nbody\nEOF\n")
    (doc,) = r.nodes[1].heredocs
    assert doc.name == "EOF"
    assert doc.content == "body\n"


@pytest.mark.parametrize("line", ["USER <<X", 'RUN ["<<X"]', "ENV a=<<X", "CMD <<X", "LABEL a=<<X"])
def test_heredoc_only_for_shell_form_run_copy_add(line: str) -> None:
    r = parse(f"FROM x\n{line}\nX\n")
    assert r.nodes[1].heredocs == ()
    assert len(r.nodes) == 3  # the X line is an (unknown) instruction


def test_heredoc_terminator_must_be_whole_line() -> None:
    r = parse("FROM x\nRUN <<EOF\n EOF\nEOF x\nEOF\n")
    assert r.nodes[1].heredocs[0].content == " EOF\nEOF x\n"


def test_heredoc_under_onbuild() -> None:
    r = parse("FROM x\nONBUILD RUN <<EOF\necho\nEOF\n")
    inner = r.nodes[1].inner
    assert inner is not None
    assert inner.heredocs[0].content == "echo\n"
    assert r.dump().splitlines()[1] == '(onbuild (run "<<EOF"))'


def test_heredoc_crlf_terminator() -> None:
    r = parse(b"FROM x\r\nRUN <<EOF\r\nhi\r\nEOF\r\n")
    assert r.nodes[1].heredocs[0].content == "hi\n"


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\nRUN <<EOF\necho\n", filename="app.Dockerfile")
    err = info.value
    assert "unterminated heredoc" in err.message
    assert err.location is not None
    assert (err.location.file, err.location.line) == ("app.Dockerfile", 2)
    assert err.location.text == "RUN <<EOF"
    assert err.hint
    assert "EOF" in err.hint


def test_directives() -> None:
    r = parse("# syntax=docker/dockerfile:1\n# check=skip=all\n# escape=`\nFROM x\nRUN a `\n b\n")
    assert r.syntax == "docker/dockerfile:1"
    assert r.directives["check"] == "skip=all"
    assert r.escape == "`"
    assert r.nodes[1].args == ("a  b",)


def test_directive_after_comment_is_comment() -> None:
    r = parse("# hello\n# escape=`\nFROM x\nRUN a \\\n b\n")
    assert r.escape == "\\"
    assert r.nodes[1].args == ("a  b",)


def test_repeated_directive_is_error() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("# escape=\\\n# escape=`\nFROM x\n")
    assert info.value.location is not None
    assert info.value.location.line == 2


def test_bad_escape_directive() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("# escape=x\nFROM x\n")
    assert "escape" in info.value.message
    assert info.value.hint


def test_bom_and_crlf() -> None:
    r = parse(b"\xef\xbb\xbfFROM x\r\nRUN a\r\r\n")
    assert r.dump() == '(from "x")\n(run "a")\n'


def test_empty_continuation_warning() -> None:
    r = parse("FROM x\nRUN a \\\n\n  b\n")
    assert r.nodes[1].args == ("a   b",)
    assert [w.rule for w in r.warnings] == ["NoEmptyContinuation"]


def test_bad_json_falls_back_and_nested_json_fails() -> None:
    r = parse("FROM x\nCMD ['a']\n")
    assert r.nodes[1].args == ("['a']",)
    assert not r.nodes[1].json
    with pytest.raises(DockerfileError, match="strings only"):
        parse("FROM x\nRUN [1]\n")


def test_env_kv_without_equals_is_error() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\nENV a=b c\n")
    assert "can't find =" in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 2


def test_invalid_utf8_is_kept() -> None:
    r = parse(b"FROM x\nRUN echo \xff\n")
    assert r.dump().encode("utf-8", "surrogateescape") == b'(from "x")\n(run "echo \\xff")\n'
