"""Pure mutations: each returns a new image wrapping the old one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from lamina.errors import ImageFormatError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest
from lamina.oci._image import _find_layer
from lamina.oci._json import format_time
from lamina.oci._protocols import Image, Layer
from lamina.oci._records import Descriptor, History, ImageConfig, Manifest

__all__ = [
    "Addendum",
    "append_layers",
    "canonical",
    "with_config",
    "with_created",
    "with_media_types",
]

Flavour = Literal["oci", "docker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Addendum:
    """One build step to append: a layer (None for a metadata-only step) and its history."""

    layer: Layer | None
    history: History
    annotations: dict[str, str] | None = None


def _flavour_of(media_type: str) -> Flavour:
    return "docker" if mt.is_docker(media_type) else "oci"


def _convert_layer_type(media_type: str, flavour: Flavour, where: str) -> str:
    if _flavour_of(media_type) == flavour:
        return media_type
    compression = mt.check_layer_media_type(media_type, where)
    if flavour == "docker" and compression == "zstd":
        raise ImageFormatError(
            f"{where} is zstd-compressed, which a Docker schema2 manifest cannot describe",
            hint="keep OCI media types (the default for OCI bases) or use --compression=gzip",
        )
    return mt.layer_media_type(flavour, compression)


class _RetypedLayer:
    """The same layer bytes under another media type."""

    def __init__(self, inner: Layer, media_type: str) -> None:
        self._inner = inner
        self._media_type = media_type

    def digest(self) -> Digest:
        return self._inner.digest()

    def diff_id(self) -> Digest:
        return self._inner.diff_id()

    def size(self) -> int:
        return self._inner.size()

    def media_type(self) -> str:
        return self._media_type

    def compressed(self) -> AbstractContextManager[BinaryIO]:
        return self._inner.compressed()

    def uncompressed(self) -> AbstractContextManager[BinaryIO]:
        return self._inner.uncompressed()


class _Mutated:
    """An image derived from ``base``; everything computed once, on demand."""

    def __init__(
        self,
        base: Image,
        *,
        addenda: Sequence[Addendum] = (),
        config_update: Callable[[ImageConfig], ImageConfig] | None = None,
        flavour: Flavour | None = None,
    ) -> None:
        self._base = base
        self._addenda = tuple(addenda)
        self._config_update = config_update
        self._flavour = flavour
        self._config: ImageConfig | None = None
        self._raw_config: bytes | None = None
        self._manifest: Manifest | None = None
        self._raw_manifest: bytes | None = None
        self._layers: list[Layer] | None = None

    def _target_flavour(self) -> Flavour:
        return self._flavour or _flavour_of(self._base.media_type())

    def media_type(self) -> str:
        if self._flavour is None:
            return self._base.media_type()
        return mt.DOCKER_MANIFEST if self._flavour == "docker" else mt.OCI_MANIFEST

    def config(self) -> ImageConfig:
        if self._config is None:
            cfg = self._base.config()
            if self._addenda:
                diff_ids = list(cfg.diff_ids)
                history = list(cfg.history)
                for add in self._addenda:
                    h = add.history
                    if add.layer is None:
                        h = replace(h, empty_layer=True)
                    else:
                        diff_ids.append(add.layer.diff_id())
                        h = replace(h, empty_layer=False)
                    history.append(h)
                cfg = replace(cfg, diff_ids=tuple(diff_ids), history=tuple(history))
            if self._config_update is not None:
                cfg = self._config_update(cfg)
            self._config = cfg
        return self._config

    def raw_config(self) -> bytes:
        if self._raw_config is None:
            if not self._addenda and self._config_update is None:
                self._raw_config = self._base.raw_config()
            else:
                self._raw_config = self.config().to_json()
        return self._raw_config

    def layers(self) -> Sequence[Layer]:
        if self._layers is None:
            flavour = self._target_flavour()
            out: list[Layer] = []
            base_layers = list(self._base.layers())
            new_layers = [a.layer for a in self._addenda if a.layer is not None]
            for i, layer in enumerate(base_layers + new_layers):
                want = _convert_layer_type(layer.media_type(), flavour, f"layer {i}")
                out.append(layer if want == layer.media_type() else _RetypedLayer(layer, want))
            self._layers = out
        return self._layers

    def manifest(self) -> Manifest:
        if self._manifest is None:
            base = self._base.manifest()
            flavour = self._target_flavour()
            raw_config = self.raw_config()
            config_type = base.config.media_type
            if self._flavour is not None:
                config_type = mt.DOCKER_CONFIG if flavour == "docker" else mt.OCI_CONFIG
            layers: list[Descriptor] = []
            for i, desc in enumerate(base.layers):
                where = f"layer {i} ({desc.digest})"
                want = _convert_layer_type(desc.media_type, flavour, where)
                layers.append(replace(desc, media_type=want))
            for j, add in enumerate(a for a in self._addenda if a.layer is not None):
                assert add.layer is not None
                i = len(base.layers) + j
                where = f"new layer {i} ({add.layer.digest()})"
                layers.append(
                    Descriptor(
                        media_type=_convert_layer_type(add.layer.media_type(), flavour, where),
                        digest=add.layer.digest(),
                        size=add.layer.size(),
                        annotations=add.annotations or {},
                    )
                )
            self._manifest = replace(
                base,
                media_type=self.media_type(),
                config=Descriptor(
                    media_type=config_type,
                    digest=Digest.of_bytes(raw_config),
                    size=len(raw_config),
                ),
                layers=tuple(layers),
                subject=None,  # a derived image is not the base's referrer
            )
        return self._manifest

    def raw_manifest(self) -> bytes:
        if self._raw_manifest is None:
            self._raw_manifest = self.manifest().to_json()
        return self._raw_manifest

    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw_manifest())

    def layer_by_digest(self, digest: Digest) -> Layer:
        return _find_layer(self, digest, "image")


def append_layers(image: Image, *addenda: Addendum) -> Image:
    """A new image with ``addenda`` appended (layers, diff_ids and history).

    New layers take the base's manifest flavour (an OCI gzip layer on a Docker
    base becomes ``rootfs.diff.tar.gzip``; zstd on a Docker base is refused).
    """
    if not addenda:
        return image
    return _Mutated(image, addenda=addenda)


def with_config(image: Image, config: ImageConfig) -> Image:
    """A new image with ``config`` as its configuration (layers unchanged)."""
    return _Mutated(image, config_update=lambda _old: config)


def with_created(image: Image, when: datetime) -> Image:
    """A new image whose config ``created`` time is ``when``."""
    text = format_time(when)
    return _Mutated(image, config_update=lambda cfg: replace(cfg, created=text))


def _epoch_time(epoch: int | datetime) -> str:
    if isinstance(epoch, datetime):
        return format_time(epoch)
    return format_time(datetime.fromtimestamp(epoch, tz=UTC))


def canonical(image: Image, *, epoch: int | datetime = 0) -> Image:
    """``--reproducible``: normalise config and history timestamps to ``epoch``.

    Also drops host-dependent fields (``container``, ``docker_version``,
    ``config.Hostname``). Layers — base layers included — are left untouched:
    new layers are expected to be written reproducibly already.
    """
    text = _epoch_time(epoch)

    def update(cfg: ImageConfig) -> ImageConfig:
        history = tuple(replace(h, created=text) for h in cfg.history)
        return replace(
            cfg.without("container", "docker_version"),
            created=text,
            history=history,
            config=replace(cfg.config, hostname=None),
        )

    return _Mutated(image, config_update=update)


def with_media_types(image: Image, flavour: Flavour) -> Image:
    """The same image described with OCI or Docker schema2 media types.

    Layer bytes are unchanged (gzip and uncompressed layers map one to one);
    zstd layers cannot be described in Docker form and are refused.
    """
    if flavour not in ("oci", "docker"):
        raise ImageFormatError(f"unknown manifest format {flavour!r}", hint="use oci or docker")
    return _Mutated(image, flavour=flavour)
