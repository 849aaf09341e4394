"""Bucket contexts: the backend chosen by scheme or host, and the object names."""

from __future__ import annotations

import pytest

from lamina.context._azblob import split_blob_url
from lamina.context._buckets import bucket_provider
from lamina.context._gcs import split_gs_url
from lamina.errors import ContextError


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("gs://b/ctx.tar.gz", "lamina.context._gcs"),
        ("GS://b", "lamina.context._gcs"),
        ("https://acct.blob.core.windows.net/c/ctx.tar.gz", "lamina.context._azblob"),
        ("https://acct.blob.core.chinacloudapi.cn/c/x", "lamina.context._azblob"),
        ("https://example.com/ctx.tar.gz", None),
        ("tar:///ctx.tar.gz", None),
    ],
)
def test_backend_by_scheme_or_host(url: str, backend: str | None) -> None:
    assert bucket_provider(url) == backend


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://bucket", ("bucket", "context.tar.gz")),
        ("gs://bucket/", ("bucket", "context.tar.gz")),
        ("gs://bucket/dir/", ("bucket", "dir/context.tar.gz")),
        ("gs://bucket/dir/ctx.tgz", ("bucket", "dir/ctx.tgz")),
    ],
)
def test_gs_object_defaults_to_context_tar_gz(url: str, expected: tuple[str, str]) -> None:
    assert split_gs_url(url) == expected


def test_gs_url_without_bucket() -> None:
    with pytest.raises(ContextError, match="names no bucket"):
        split_gs_url("gs:///x")


def test_blob_url_parts() -> None:
    url = "https://acct.blob.core.windows.net/ctr/dir/ctx%20a.tar.gz?sv=1&sig=S"
    assert split_blob_url(url) == ("acct", "ctr", "dir/ctx a.tar.gz", "sv=1&sig=S")
    with pytest.raises(ContextError, match="names no blob") as err:
        split_blob_url("https://acct.blob.core.windows.net/ctr?sig=SECRET")
    assert "SECRET" not in err.value.message
