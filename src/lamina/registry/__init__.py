"""Distribution-spec registry client: auth, pull, push, retries, TLS options, mirrors.

    options = RegistryOptions(insecure_registries=frozenset({"127.0.0.1:5000"}))
    with RegistryClient(options, docker_config_dir=default_docker_config(os.environ)) as c:
        image = c.pull(Reference.parse("127.0.0.1:5000/app:1"), platform=Platform.host())
        c.push(image, [Reference.parse("127.0.0.1:5000/copy:1")])

Logging goes to ``logging.getLogger("lamina.registry")``; credentials never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports

if TYPE_CHECKING:
    from ._auth import (
        Credential,
        DockerConfigLocation,
        Keychain,
        default_docker_config,
        default_docker_config_dir,
    )
    from ._client import RegistryClient
    from ._options import RegistryOptions
    from ._pull import RemoteImage, RemoteIndex, RemoteLayer
    from ._tls import system_trust_context, write_trust_bundle
    from ._transport import user_agent

__all__ = [
    "Credential",
    "DockerConfigLocation",
    "Keychain",
    "RegistryClient",
    "RegistryOptions",
    "RemoteImage",
    "RemoteIndex",
    "RemoteLayer",
    "default_docker_config",
    "default_docker_config_dir",
    "system_trust_context",
    "user_agent",
    "write_trust_bundle",
]

#: what each name is imported from, on first use (``RegistryOptions`` alone must not
#: import the HTTP client)
_EXPORTS = {
    "Credential": "lamina.registry._auth",
    "DockerConfigLocation": "lamina.registry._auth",
    "Keychain": "lamina.registry._auth",
    "RegistryClient": "lamina.registry._client",
    "RegistryOptions": "lamina.registry._options",
    "RemoteImage": "lamina.registry._pull",
    "RemoteIndex": "lamina.registry._pull",
    "RemoteLayer": "lamina.registry._pull",
    "default_docker_config": "lamina.registry._auth",
    "default_docker_config_dir": "lamina.registry._auth",
    "system_trust_context": "lamina.registry._tls",
    "user_agent": "lamina.registry._transport",
    "write_trust_bundle": "lamina.registry._tls",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
