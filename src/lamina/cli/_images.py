"""``lamina copy SRC DST`` and ``lamina inspect REF``: crane/skopeo-like helpers.

Locations use skopeo's syntax (see :mod:`lamina.cli._transports`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack

from lamina.cli._flags import ParsedFlags, parse_flags, render_flag_help
from lamina.cli._logging import configure_logging
from lamina.cli._options import registry_options
from lamina.cli._specs import IMAGE_FLAGS
from lamina.cli._transports import Location, parse_location
from lamina.errors import UsageError
from lamina.oci import Digest, Image, Platform, Reference, describe_image
from lamina.oci.docker_archive import DockerArchive, write_docker_archive
from lamina.oci.oci_layout import OCILayout
from lamina.registry import RegistryClient, default_docker_config

__all__ = ["copy_command", "inspect_command"]

log = logging.getLogger("lamina")


def _platform(parsed: ParsedFlags) -> Platform:
    text = parsed.values["custom_platform"]
    return Platform.parse(text) if text else Platform.host()


def _client(parsed: ParsedFlags, env: Mapping[str, str], stack: ExitStack) -> RegistryClient:
    client = RegistryClient(
        registry_options(parsed.values, env),
        docker_config_dir=default_docker_config(env),
    )
    stack.callback(client.close)
    return client


def open_image(loc: Location, platform: Platform, client: RegistryClient) -> Image:
    if loc.kind == "docker":
        return client.pull(Reference.parse(loc.ref), platform=platform)
    assert loc.path is not None
    if loc.kind == "oci":
        return OCILayout.open(loc.path).image(loc.ref or None, platform=platform)
    return DockerArchive(loc.path).image(loc.ref or None)


def write_image(loc: Location, image: Image, client: RegistryClient) -> Digest:
    if loc.kind == "docker":
        return client.push(image, [Reference.parse(loc.ref)])
    assert loc.path is not None
    if loc.kind == "oci":
        layout = OCILayout.create(loc.path)
        # like skopeo: an OCI layout holds OCI-typed manifests (umoci and skopeo read no others)
        desc = layout.write_image(image, ref_name=loc.ref or "latest", oci_media_types=True)
        return desc.digest
    write_docker_archive(loc.path, image, [loc.ref] if loc.ref else [])
    return image.digest()


def _parse(
    argv: Sequence[str], command: str, what: str, nargs: int, env: Mapping[str, str]
) -> ParsedFlags | None:
    if any(a in ("-h", "--help") for a in argv):
        sys.stdout.write(
            f"{what}\n\nUsage:\n  {command} [flags]\n\nFlags:\n{render_flag_help(IMAGE_FLAGS)}\n"
        )
        return None
    parsed = parse_flags(argv, IMAGE_FLAGS, command=command, allow_positional=True)
    if len(parsed.positional) != nargs:
        raise UsageError(
            f"{command} takes exactly {nargs} image location(s), got {len(parsed.positional)}",
            hint="locations: docker://REGISTRY/REPO:TAG, oci:DIR[:TAG], docker-archive:FILE[:REF]",
        )
    v = parsed.values
    configure_logging(v["verbosity"], v["log_format"], v["log_timestamp"])
    return parsed


def copy_command(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    parsed = _parse(
        argv,
        f"{command} SRC DST",
        "Copy an image between registries, layouts and archives.",
        2,
        env,
    )
    if parsed is None:
        return 0
    src, dst = (parse_location(p) for p in parsed.positional)
    with ExitStack() as stack:
        client = _client(parsed, env, stack)
        image = open_image(src, _platform(parsed), client)
        digest = write_image(dst, image, client)
    log.info("copied %s to %s", src, dst)
    sys.stdout.write(f"{digest}\n")
    return 0


def inspect_command(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    parsed = _parse(
        argv,
        f"{command} REF",
        "Print an image's digest, manifest, config and layers as JSON.",
        1,
        env,
    )
    if parsed is None:
        return 0
    loc = parse_location(parsed.positional[0])
    with ExitStack() as stack:
        client = _client(parsed, env, stack)
        image = open_image(loc, _platform(parsed), client)
        doc = describe_image(image, name=str(loc))
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0
