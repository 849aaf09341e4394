"""The registry credentials asked after config.json: the host-pattern dispatch, ECR
(against moto's in-process fake of the AWS APIs), GitLab CI's variables, and the
Keychain's order (config.json entries first, kaniko's order)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import AuthError
from lamina.registry._auth import Keychain
from lamina.registry._cloud import cloud_credential, provider_for
from lamina.registry._ecr import parse_ecr_host
from lamina.registry._gitlab import gitlab_credential

ECR = "123456789012.dkr.ecr.eu-west-3.amazonaws.com"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize(
    ("host", "parsed"),
    [
        (ECR, ("ecr", "123456789012", "eu-west-3", False)),
        (
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            ("ecr", "123456789012", "us-gov-west-1", True),
        ),
        (
            "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn",
            ("ecr", "210987654321", "cn-north-1", False),
        ),
        (
            "123456789012.DKR.ECR.us-east-1.amazonaws.com",
            ("ecr", "123456789012", "us-east-1", False),
        ),
        ("public.ecr.aws", ("ecr-public", None, "us-east-1", False)),
    ],
)
def test_ecr_hosts(host: str, parsed: tuple[str, str | None, str, bool]) -> None:
    assert parse_ecr_host(host) == parsed
    assert provider_for(host) == "lamina.registry._ecr"


@pytest.mark.parametrize(
    "host",
    [
        "12345678901.dkr.ecr.us-east-1.amazonaws.com",  # 11 digits
        "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
        "evil.example/123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "x.public.ecr.aws",
        "registry.gitlab.com",
        "127.0.0.1:5000",
    ],
)
def test_other_hosts_have_no_provider(host: str) -> None:
    assert parse_ecr_host(host) is None
    assert provider_for(host) is None
    assert cloud_credential(host, {}) is None


def test_a_port_does_not_hide_the_provider() -> None:
    assert provider_for(f"{ECR}:443") == "lamina.registry._ecr"


# -- ECR against moto's in-process fake ----------------------------------------------------


@pytest.fixture
def clean_aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No AWS credentials anywhere (botocore reads the process environment); no network:
    the metadata service is disabled."""
    pytest.importorskip("botocore")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def aws_env(clean_aws_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The clean environment under moto's fake of the AWS APIs (which sets test keys)."""
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        yield clean_aws_env


def test_ecr_token_becomes_the_basic_credential(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-key-value")
    found = cloud_credential(ECR, dict(os.environ))
    assert found is not None
    cred, source = found
    assert source.startswith("Amazon ECR's GetAuthorizationToken")
    # moto's token: base64 "AWS:<registry id>-auth-token", for the registry's own account
    assert (cred.username, cred.password) == ("AWS", "123456789012-auth-token")
    assert "auth-token" not in repr(cred)


def test_ecr_without_any_aws_credentials_is_anonymous(clean_aws_env: dict[str, str]) -> None:
    assert cloud_credential(ECR, dict(os.environ)) is None


def test_ecr_malformed_credentials_file_names_the_file(clean_aws_env: dict[str, str]) -> None:
    aws_env = clean_aws_env
    Path(aws_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text("[broken\naws_secret_access_key=s\n")
    with pytest.raises(AuthError) as info:
        cloud_credential(ECR, dict(os.environ))
    message = info.value.message
    assert message.startswith(f"Amazon ECR credentials for {ECR}: the AWS credential chain")
    assert aws_env["AWS_SHARED_CREDENTIALS_FILE"] in message
    assert info.value.hint
    assert info.value.exit_code == 4


def test_ecr_profile_without_keys_is_partial(
    clean_aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(clean_aws_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[ci]\naws_access_key_id = AKIDEXAMPLE\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "ci")
    with pytest.raises(AuthError, match="profile 'ci' of "):
        cloud_credential(ECR, dict(os.environ))


# -- GitLab CI -----------------------------------------------------------------------------


def test_docker_auth_config_entries() -> None:
    env = {
        "DOCKER_AUTH_CONFIG": json.dumps(
            {
                "auths": {
                    "https://registry.example.com/v2/": {"auth": _b64("ci:pw:with:colons")},
                    "other.example:5000": {"username": "u", "password": "p"},
                    "empty.example": {},
                }
            }
        )
    }
    found = gitlab_credential("registry.example.com", env)
    assert found is not None
    cred, source = found
    assert source == "the variable DOCKER_AUTH_CONFIG"
    assert (cred.username, cred.password) == ("ci", "pw:with:colons")
    found = gitlab_credential("other.example:5000", env)
    assert found is not None
    cred = found[0]
    assert (cred.username, cred.password) == ("u", "p")
    assert gitlab_credential("empty.example", env) is None
    assert gitlab_credential("nowhere.example", env) is None


def test_docker_auth_config_errors_name_the_variable_not_the_value() -> None:
    with pytest.raises(AuthError) as info:
        gitlab_credential("r.example", {"DOCKER_AUTH_CONFIG": '{"auths": {"r.example": tok3n'})
    assert "DOCKER_AUTH_CONFIG is not valid JSON" in info.value.message
    assert "tok3n" not in info.value.render()
    bad = json.dumps({"auths": {"r.example": {"auth": _b64("no-colon-s3cret")}}})
    with pytest.raises(AuthError) as info:
        gitlab_credential("r.example", {"DOCKER_AUTH_CONFIG": bad})
    assert "r.example in the variable DOCKER_AUTH_CONFIG" in info.value.message
    assert "s3cret" not in info.value.render()


def test_ci_registry_variables() -> None:
    env = {
        "CI_REGISTRY": "registry.gitlab.example:5050",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": "job-token",
    }
    found = gitlab_credential("registry.gitlab.example:5050", env)
    assert found is not None
    cred, source = found
    assert source == "CI_REGISTRY_USER/_PASSWORD"
    assert (cred.username, cred.password) == ("gitlab-ci-token", "job-token")
    assert gitlab_credential("registry.gitlab.example", env) is None  # another port
    assert gitlab_credential("docker.io", env) is None
    assert (
        gitlab_credential("registry.gitlab.example:5050", {**env, "CI_REGISTRY_PASSWORD": ""})
        is None
    )


# -- the Keychain's order ------------------------------------------------------------------

CI = {"CI_REGISTRY": "reg.example", "CI_REGISTRY_USER": "ci", "CI_REGISTRY_PASSWORD": "ci-pw"}


def _config(d: Path, obj: object) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(obj), encoding="utf-8")
    return d


def test_config_json_entry_wins_over_the_environment(tmp_path: Path) -> None:
    d = _config(tmp_path, {"auths": {"reg.example": {"auth": _b64("file:file-pw")}}})
    cred = Keychain(d, environ=CI).resolve("reg.example")
    assert cred is not None
    assert cred.username == "file"


def test_environment_asked_when_config_json_has_nothing(tmp_path: Path) -> None:
    d = _config(tmp_path, {"auths": {"other.example": {"auth": _b64("o:p")}}})
    keychain = Keychain(d, environ=CI)
    cred = keychain.resolve("reg.example")
    assert cred is not None
    assert (cred.username, cred.password) == ("ci", "ci-pw")
    assert keychain.describe("reg.example").summary() == (
        "credentials for reg.example from CI_REGISTRY_USER/_PASSWORD"
    )
    assert Keychain(None, environ=CI).resolve("reg.example") is not None


def test_creds_store_without_an_answer_falls_through(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-empty"
    helper.write_text("#!/bin/sh\necho 'credentials not found in native keychain'; exit 1\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    d = _config(tmp_path / "cfg", {"credsStore": "empty"})
    env = {**CI, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    cred = Keychain(d, environ=env).resolve("reg.example")
    assert cred is not None
    assert cred.username == "ci"


def test_one_exchange_per_registry(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keychain = Keychain(None, environ=dict(os.environ))
    first = keychain.resolve(ECR)
    assert first is not None
    assert keychain.resolve(ECR.upper()) is first  # the Keychain keeps it for the build


def test_ecr_public_failure_is_anonymous_with_a_warning(
    clean_aws_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    Path(clean_aws_env["AWS_SHARED_CREDENTIALS_FILE"]).write_text("[broken\n")
    with caplog.at_level("WARNING", logger="lamina.registry"):
        assert cloud_credential("public.ecr.aws", dict(os.environ)) is None
    assert "Amazon ECR Public credentials for public.ecr.aws" in caplog.text
    with pytest.raises(AuthError):  # a private registry has no anonymous access
        cloud_credential(ECR, dict(os.environ))
