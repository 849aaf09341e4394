from __future__ import annotations

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import Digest, Reference

D = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "index.docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "index.docker.io", "library/busybox", "1.36", None),
        ("docker.io/busybox", "index.docker.io", "library/busybox", "latest", None),
        ("docker.io/library/busybox:x", "index.docker.io", "library/busybox", "x", None),
        ("index.docker.io/user/app", "index.docker.io", "user/app", "latest", None),
        ("registry-1.docker.io/user/app:v1", "index.docker.io", "user/app", "v1", None),
        ("user/app", "index.docker.io", "user/app", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None),
        ("127.0.0.1:5000/a/b:tag", "127.0.0.1:5000", "a/b", "tag", None),
        ("GHCR.io/org/app", "ghcr.io", "org/app", "latest", None),
        (f"x@{D}", "index.docker.io", "library/x", None, D),
        (f"x:tag@{D}", "index.docker.io", "library/x", "tag", D),
        (f"quay.io/a/b/c:v_1.2-rc@{D}", "quay.io", "a/b/c", "v_1.2-rc", D),
        ("[::1]:5000/app:v", "[::1]:5000", "app", "v", None),
        ("ab__c-d--e/f.g", "index.docker.io", "ab__c-d--e/f.g", "latest", None),
        ("Registry:5000/app", "registry:5000", "app", "latest", None),
    ],
)
def test_parse_valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == (Digest.parse(digest) if digest else None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "it is empty"),
        ("Busybox", "repository name must be lowercase"),
        ("docker.io/User/app", "repository name must be lowercase"),
        ("busy box", "whitespace"),
        ("busybox:", "invalid tag ''"),
        ("busybox:-x", "invalid tag '-x'"),
        ("busybox:caf\u00e9", "invalid tag"),
        ("busybox:" + "a" * 129, "invalid tag"),
        ("busybox@sha256:abc", "exactly 64"),
        ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
        ("a//b", "empty component"),
        ("a/b_/c", "invalid repository path component 'b_'"),
        ("-bad.io/app", "invalid registry host '-bad.io'"),
        (":tag", "repository name is empty"),
        ("x" * 256, "longer than 255"),
        ("localhost:5000/", "repository name is empty"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        Reference.parse(text)
    msg = info.value.message
    assert msg.startswith(f"invalid image reference {text!r}")
    assert fragment in msg
    assert info.value.hint


def test_properties_and_forms() -> None:
    ref = Reference.parse("busybox")
    assert ref.name == "index.docker.io/library/busybox"
    assert str(ref) == "index.docker.io/library/busybox:latest"
    assert ref.identifier == "latest"
    assert ref.familiar == "busybox:latest"
    assert str(ref.repository_ref) == "index.docker.io/library/busybox"
    d = Digest.parse(D)
    pinned = ref.with_digest(d)
    assert pinned.identifier == D
    assert str(pinned) == f"index.docker.io/library/busybox:latest@{D}"
    assert str(pinned.with_tag("v2")) == "index.docker.io/library/busybox:v2"
    assert Reference.parse("localhost:5000/a/b:t").familiar == "localhost:5000/a/b:t"
    assert Reference.parse("user/app:v").familiar == "user/app:v"
    with pytest.raises(ImageFormatError, match="invalid tag"):
        ref.with_tag("bad tag")


def test_str_parses_back() -> None:
    for text in ["busybox", f"ghcr.io/a/b:c@{D}", "localhost:5000/x"]:
        ref = Reference.parse(text)
        assert Reference.parse(str(ref)) == ref
