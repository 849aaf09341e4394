"""Cache entries stored as images (registry ``<repo>:<key>`` and OCI layouts).

The shape is kaniko's: an image with exactly one layer (lamina also writes zero
layers for a step that changed nothing) whose config ``created`` is the time the
entry was stored, which the TTL counts from. lamina adds two labels to the config:

* ``dev.lamina.cache.key``: the key the entry was stored under;
* ``dev.lamina.cache.inputs``: the :class:`~lamina.cache.KeyInputs` document (argument
  values only as digests, URL credentials redacted, ASCII JSON). A step
  reading many files would make it huge, so past :data:`MAX_SOURCES` source entries
  only the first ones are kept and ``dev.lamina.cache.sources`` records
  ``<count> sha256:<digest of the full source list>``; such truncated inputs are not
  returned (the explanation would name files as removed that were not).

The config stays a valid OCI/Docker image config, so ``skopeo inspect`` shows it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from lamina.cache._keys import KeyInputs
from lamina.errors import LaminaError
from lamina.oci import (
    Digest,
    Image,
    Layer,
    Platform,
    StaticImage,
    format_time,
    parse_time,
)
from lamina.oci import mediatypes as mt

__all__ = [
    "INPUTS_LABEL",
    "KEY_LABEL",
    "MAX_SOURCES",
    "SOURCES_LABEL",
    "EntryShape",
    "WrongShapeError",
    "entry_image",
    "read_entry",
    "slot_tag",
]

KEY_LABEL = "dev.lamina.cache.key"
INPUTS_LABEL = "dev.lamina.cache.inputs"
SOURCES_LABEL = "dev.lamina.cache.sources"
MAX_SOURCES = 500


class WrongShapeError(Exception):
    """The image at a key is not a lamina/kaniko cache entry."""


def slot_tag(slot: str) -> str:
    """The tag (or OCI ref name) remembering a slot's latest entry."""
    return "lamina-slot-" + hashlib.sha256(slot.encode("utf-8")).hexdigest()[:40]


def _labels(key: str, inputs: KeyInputs) -> dict[str, str]:
    doc = json.loads(inputs.document())
    labels = {KEY_LABEL: key}
    sources = doc["sources"]
    if len(sources) > MAX_SOURCES:
        full = json.dumps(sources, separators=(",", ":")).encode("utf-8")
        labels[SOURCES_LABEL] = f"{len(sources)} sha256:{hashlib.sha256(full).hexdigest()}"
        doc["sources"] = sources[:MAX_SOURCES]
    labels[INPUTS_LABEL] = json.dumps(doc, separators=(",", ":"))
    return labels


def entry_image(key: str, layer: Layer | None, inputs: KeyInputs, created: datetime) -> Image:
    """The one-layer (or empty) image storing ``layer`` under ``key``."""
    try:
        platform: Platform | None = Platform.parse(inputs.platform)
    except LaminaError:
        platform = None
    config: dict[str, object] = {
        "architecture": platform.architecture if platform else "",
        "os": platform.os if platform else "",
    }
    if platform is not None and platform.variant:
        config["variant"] = platform.variant
    config["created"] = format_time(created)
    config["config"] = {"Labels": _labels(key, inputs)}
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [str(layer.diff_id())] if layer is not None else [],
    }
    config["history"] = [
        {"created": format_time(created), "created_by": inputs.instruction[:1024]}
        | ({} if layer is not None else {"empty_layer": True})
    ]
    raw = json.dumps(config, separators=(",", ":")).encode("ascii")
    docker = layer is not None and mt.is_docker(layer.media_type())
    return StaticImage(
        raw_config=raw,
        layers=[layer] if layer is not None else [],
        media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryShape:
    """What a well-shaped entry image says."""

    created: datetime
    #: (digest, size, media type, diff_id) of its layer; None: no layer
    layer: tuple[Digest, int, str, Digest] | None
    inputs: KeyInputs | None


def read_entry(image: Image) -> EntryShape:
    """Check ``image``'s shape and read it; raises WrongShapeError or LaminaError."""
    if not mt.is_manifest(image.media_type()):
        raise WrongShapeError(f"media type {image.media_type()} is not an image manifest")
    manifest = image.manifest()
    if len(manifest.layers) > 1:
        raise WrongShapeError(f"{len(manifest.layers)} layers, a cache entry has at most one")
    config = image.config()
    if config.created is None:
        raise WrongShapeError("its config has no 'created' time")
    try:
        created = parse_time(config.created)
    except LaminaError as exc:
        raise WrongShapeError(exc.message) from None
    layer = None
    if manifest.layers:
        desc = manifest.layers[0]
        if not mt.is_layer(desc.media_type) or mt.is_foreign(desc.media_type):
            raise WrongShapeError(f"unknown layer media type {desc.media_type!r}")
        if len(config.diff_ids) != 1:
            raise WrongShapeError(f"{len(config.diff_ids)} diff_ids in its config for one layer")
        layer = (desc.digest, desc.size, desc.media_type, config.diff_ids[0])
    elif config.diff_ids:
        raise WrongShapeError("its config lists diff_ids but the manifest has no layer")
    labels = config.config.labels
    inputs = None
    text = labels.get(INPUTS_LABEL)
    if text is not None and SOURCES_LABEL not in labels:
        try:
            inputs = KeyInputs.from_document(text.encode("utf-8"))
        except LaminaError:
            inputs = None
    return EntryShape(created=created, layer=layer, inputs=inputs)


def read_inputs(image: Image) -> KeyInputs | None:
    """The complete inputs recorded in an entry image, if any (never raises)."""
    try:
        return read_entry(image).inputs
    except (LaminaError, WrongShapeError):
        return None
