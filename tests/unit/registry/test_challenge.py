from __future__ import annotations

import pytest

from lamina.registry._challenge import TokenCache, parse_challenge, parse_token_response
from lamina.registry._errors import TransientRegistryError, retry_after_seconds, with_retries


def test_parse_bearer() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert c is not None
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.example/token"
    assert c.service == "registry.example"
    assert c.params["scope"] == "repository:a/b:pull,push"


def test_parse_basic_and_escapes() -> None:
    c = parse_challenge('Basic realm="say \\"hi\\""')
    assert c is not None
    assert c.scheme == "basic"
    assert c.realm == 'say "hi"'
    assert parse_challenge("") is None
    bare = parse_challenge("Bearer realm=https://x/t, service=svc")
    assert bare is not None
    assert bare.service == "svc"


def test_token_response() -> None:
    assert parse_token_response({"token": "t", "expires_in": 300}) == ("t", 300.0)
    assert parse_token_response({"access_token": "a"}) == ("a", 60.0)
    with pytest.raises(ValueError, match="no token"):
        parse_token_response({"nothing": 1})


def test_token_cache() -> None:
    cache = TokenCache()
    cache.put(("s",), "tok", 100)
    assert cache.get(("s",)) == "tok"
    assert cache.get(("other",)) is None
    cache.drop(("s",))
    assert cache.get(("s",)) is None
    cache.put(("s",), "short", 0)
    assert cache.get(("s",)) is None


def test_retry_after() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_with_retries_backoff_and_retry_after() -> None:
    delays: list[float] = []
    calls = {"n": 0}

    def op() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientRegistryError("boom")
        if calls["n"] == 2:
            raise TransientRegistryError("slow down", retry_after=5)
        return "ok"

    assert with_retries(op, retries=3, backoff=1, max_delay=60, sleep=delays.append) == "ok"
    assert delays == [1, 5]


def test_with_retries_gives_up() -> None:
    delays: list[float] = []

    def op() -> str:
        raise TransientRegistryError("always")

    with pytest.raises(TransientRegistryError, match="always"):
        with_retries(op, retries=2, backoff=0.5, max_delay=60, sleep=delays.append)
    assert delays == [0.5, 1.0]
    with pytest.raises(TransientRegistryError):
        with_retries(op, retries=0, backoff=1, max_delay=60, sleep=delays.append)
    assert len(delays) == 2
