"""One checked way to GET a URL with redirects (ADD <url>, https contexts, Dockerfile URLs).

httpx follows any redirect it can parse and raises its own ``InvalidURL`` (not an
``HTTPError``) for one it cannot, such as ``data:``. Here redirects are followed by hand:

* to ``http://`` and ``https://`` only (``data:``, ``file:``, ``ftp:`` are errors);
* at most :data:`MAX_REDIRECTS` (Go's http client stops at 10 too);
* never to a URL carrying credentials (a server may not hand them out);
* the URL's own user-info becomes Basic auth for its own origin only, and is not part
  of any request URL (so not of httpx's logs either).

Every failure is the caller's error type (``fail(message, hint)``) naming the URL
without its credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lamina.context._urls import redact_url
from lamina.errors import LaminaError

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_REDIRECTS", "Fail", "open_following", "stop_at_redirects"]

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: builds the caller's error from a message and a hint
Fail = Callable[[str, str], LaminaError]


class _RedirectError(Exception):
    """A redirect answer, raised by :func:`stop_at_redirects` (a response event hook)
    before httpx parses its Location."""

    def __init__(self, location: str | None) -> None:
        super().__init__(location)
        self.location = location


def stop_at_redirects(response: httpx.Response) -> None:
    """The ``response`` event hook a client given to :func:`open_following` must have."""
    if response.status_code in _REDIRECTS:
        response.close()
        raise _RedirectError(response.headers.get("location"))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _next_url(current: httpx.URL, location: str | None, shown: str, fail: Fail) -> httpx.URL:
    import httpx

    if not location:
        raise fail(
            f"cannot download {shown}: a redirect without a Location",
            "the server answered a redirect status without saying where to",
        )
    try:
        target: httpx.URL | None = current.join(location)
        scheme = target.scheme.lower() if target is not None else ""
    except (httpx.InvalidURL, ValueError, TypeError):
        target, scheme = None, ""
    if target is None or scheme not in ("http", "https"):
        raise fail(
            f"cannot download {shown}: it redirects to {redact_url(location)[:200]!r}, "
            "not an http(s) URL",
            "redirects are followed to http:// and https:// only",
        )
    if target.userinfo:
        raise fail(
            f"cannot download {shown}: it redirects to a URL with credentials "
            f"({redact_url(str(target))[:200]})",
            "a server may not hand out credentials in a redirect; put them in the URL "
            "you give (they are redacted everywhere)",
        )
    return target


def open_following(client: httpx.Client, url: str, fail: Fail) -> httpx.Response:
    """The streaming GET of ``url`` after its checked redirects (the caller closes it).

    ``client`` must not follow redirects itself and must carry the
    :func:`stop_at_redirects` hook; httpx errors other than those are the caller's to
    translate.
    """
    import httpx

    shown = redact_url(url)
    try:
        first = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise fail(f"cannot download {shown}: {redact_url(str(exc))}", "check the URL") from None
    auth = httpx.BasicAuth(first.username, first.password) if first.userinfo else None
    current = first.copy_with(userinfo=b"") if first.userinfo else first
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request("GET", current)
        same = _origin(current) == _origin(first)
        try:
            return client.send(request, stream=True, auth=auth if same else None)
        except _RedirectError as redirect:
            current = _next_url(current, redirect.location, shown, fail)
    raise fail(
        f"cannot download {shown}: more than {MAX_REDIRECTS} redirects",
        "the server redirects in a loop; check the URL",
    )
