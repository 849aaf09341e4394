"""``gs://bucket/object`` contexts: the GCS JSON API's ``alt=media`` download over httpx.

The object defaults to ``context.tar.gz`` when the path is empty (kaniko's
``GetBucketAndItem``) or ends in ``/`` (a "directory"; kaniko would ask for the object
named ``dir/``). Credentials are Application Default Credentials
(:mod:`lamina.registry._gar`); none found means an anonymous request (public buckets).
``STORAGE_EMULATOR_HOST`` (``host:port`` or a URL) replaces
``https://storage.googleapis.com``, as in Google's client libraries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import httpx

from lamina.errors import ContextError

__all__ = ["DEFAULT_OBJECT", "download", "split_gs_url"]

DEFAULT_OBJECT = "context.tar.gz"
_API = "https://storage.googleapis.com"
_CHUNK = 1024 * 1024


def split_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/path`` -> ``(bucket, object)``, the default object filled in."""
    rest = url.split("://", 1)[1]
    bucket, _, name = rest.partition("/")
    if not bucket:
        raise ContextError(
            f"the build context {url} names no bucket",
            hint="write --context gs://BUCKET/path/context.tar.gz (or --bucket BUCKET)",
        )
    if not name or name.endswith("/"):
        name += DEFAULT_OBJECT
    return bucket, name


def _endpoint(environ: Mapping[str, str]) -> str:
    emulator = environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not emulator:
        return _API
    return emulator if "://" in emulator else f"http://{emulator}"


def _service_message(resp: httpx.Response) -> str:
    """GCS's JSON error message (first 300 characters), or the status phrase."""
    try:
        body = resp.read()[:4096]
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError, httpx.HTTPError):
        return resp.reason_phrase or "no message"
    return str(message)[:300]


def download(url: str, dest: Path, *, environ: Mapping[str, str], timeout: float) -> None:
    """Stream the object ``url`` names into the file ``dest``."""
    from lamina.registry import system_trust_context
    from lamina.registry._gar import HttpxRequest, google_token

    bucket, name = split_gs_url(url)
    shown = f"gs://{bucket}/{name}"
    client = httpx.Client(
        verify=system_trust_context(), timeout=httpx.Timeout(timeout), follow_redirects=True
    )
    with client:
        token = google_token(
            environ, what=f"the build context {shown}", error=ContextError,
            request=HttpxRequest(client),
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {token.token}"} if token is not None else {}
        api = f"{_endpoint(environ)}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
        try:
            with client.stream("GET", api, params={"alt": "media"}, headers=headers) as resp:
                if resp.status_code != 200:
                    answer = _service_message(resp)
                    who = f"with {token.source}" if token is not None else "anonymously"
                    if resp.status_code == 404:
                        hint = f"check that the bucket {bucket} and the object {name} exist"
                    elif resp.status_code in (401, 403):
                        hint = (
                            "the credentials need storage.objects.get on the bucket "
                            "(GOOGLE_APPLICATION_CREDENTIALS names a service-account key)"
                        )
                    else:
                        hint = "retry later, or download the tarball and pass --context tar://"
                    raise ContextError(
                        f"cannot download the build context {shown} ({who}): "
                        f"HTTP {resp.status_code}: {answer}",
                        hint=hint,
                    )
                with dest.open("wb") as out:
                    for chunk in resp.iter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ContextError(
                f"cannot download the build context {shown}: {type(exc).__name__}: {exc}",
                hint="check the network (and STORAGE_EMULATOR_HOST when it is set)",
            ) from None
        except OSError as exc:
            raise ContextError(
                f"cannot write the build context {shown} to {dest}: {exc.strerror or exc}",
                hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
            ) from None
