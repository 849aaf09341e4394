"""``python -m lamina.dockerfile PATH``: print the parse tree in BuildKit's test format."""

from __future__ import annotations

import sys

from lamina.errors import DockerfileError, LaminaError

from ._parser import parse


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m lamina.dockerfile PATH\n")
        return 2
    path = args[0]
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        err: LaminaError = DockerfileError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the path to the Dockerfile"
        )
        sys.stderr.write(err.render() + "\n")
        return err.exit_code
    try:
        result = parse(data, filename=path)
    except LaminaError as exc:
        sys.stderr.write(exc.render() + "\n")
        return exc.exit_code
    out = result.dump().encode("utf-8", "surrogateescape")
    sys.stdout.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
