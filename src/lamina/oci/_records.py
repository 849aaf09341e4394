"""Spec records: descriptors, manifests, indexes and image configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from lamina.errors import ImageFormatError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest
from lamina.oci._json import dumps, format_time, load_object, parse_time
from lamina.oci._platform import Platform

__all__ = [
    "ContainerConfig",
    "Descriptor",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "detect_manifest_media_type",
]


def _fail(what: str, why: str) -> ImageFormatError:
    return ImageFormatError(
        f"malformed {what}: {why}",
        hint="the image was written by a broken tool or the blob is corrupt",
    )


def _str(d: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _fail(what, f"missing {key!r}")
        return None
    if not isinstance(v, str):
        raise _fail(what, f"{key!r} must be a string, got {type(v).__name__}")
    return v


def _str_map(d: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise _fail(what, f"{key!r} must be an object of strings")
    return dict(v)


def _str_list(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(what, f"{key!r} must be a list of strings")
    return tuple(v)


def _digest(v: Any, what: str, key: str = "digest") -> Digest:
    if not isinstance(v, str):
        raise _fail(what, f"{key!r} must be a digest string")
    try:
        return Digest.parse(v)
    except ImageFormatError as exc:
        raise _fail(what, exc.message) from None


# ---------------------------------------------------------------------------
# Descriptor


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """A typed pointer to content: media type, digest, size and optional extras."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], what: str = "descriptor") -> Descriptor:
        d = load_object(data, what)
        media_type = _str(d, "mediaType", what, required=True)
        assert media_type is not None
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _fail(what, f"'size' must be a non-negative integer, got {size!r}")
        platform = None
        if d.get("platform") is not None:
            platform = Platform.from_dict(d["platform"], where=what)
        return cls(
            media_type=media_type,
            digest=_digest(d.get("digest"), what),
            size=size,
            urls=_str_list(d, "urls", what) or (),
            annotations=_str_map(d, "annotations", what),
            platform=platform,
            artifact_type=_str(d, "artifactType", what),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def with_annotations(self, **more: str) -> Descriptor:
        return replace(self, annotations={**self.annotations, **more})


def _descriptors(d: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _fail(what, f"{key!r} must be a list")
    return tuple(Descriptor.from_json(x, f"{what}, {key}[{i}]") for i, x in enumerate(v))


def _check_schema_version(d: Mapping[str, Any], what: str) -> None:
    sv = d.get("schemaVersion")
    if sv == 1:
        raise ImageFormatError(
            f"{what} uses the Docker schema1 format, which is not supported",
            hint="schema1 images are deprecated; re-push the image with a current Docker or skopeo",
        )
    if sv != 2:
        raise _fail(what, f"'schemaVersion' must be 2, got {sv!r}")


# ---------------------------------------------------------------------------
# Manifest and Index


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """An OCI image manifest or Docker schema2 manifest."""

    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_MANIFEST
    schema_version: int = 2
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], what: str = "manifest") -> Manifest:
        d = load_object(data, what)
        _check_schema_version(d, what)
        media_type = _str(d, "mediaType", what) or mt.OCI_MANIFEST
        if mt.is_index(media_type):
            raise _fail(what, f"it is an index ({media_type}), not an image manifest")
        if not mt.is_manifest(media_type):
            raise ImageFormatError(
                f"{what} has unknown media type {media_type!r}",
                hint="lamina reads OCI image manifests and Docker schema2 manifests",
            )
        if "manifests" in d and "config" not in d:
            raise _fail(what, "it looks like an index (has 'manifests'), not an image manifest")
        if not isinstance(d.get("config"), dict):
            raise _fail(what, "missing 'config' descriptor")
        if not isinstance(d.get("layers", []), list):
            raise _fail(what, "'layers' must be a list")
        subject = None
        if d.get("subject") is not None:
            subject = Descriptor.from_json(d["subject"], f"{what}, subject")
        return cls(
            schema_version=2,
            media_type=media_type,
            config=Descriptor.from_json(d["config"], f"{what}, config"),
            layers=_descriptors(d, "layers", what),
            annotations=_str_map(d, "annotations", what),
            subject=subject,
            artifact_type=_str(d, "artifactType", what),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    """An OCI image index or Docker manifest list."""

    manifests: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_INDEX
    schema_version: int = 2
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], what: str = "index") -> Index:
        d = load_object(data, what)
        _check_schema_version(d, what)
        media_type = _str(d, "mediaType", what) or mt.OCI_INDEX
        if not mt.is_index(media_type):
            raise ImageFormatError(
                f"{what} has media type {media_type!r}, not an image index or manifest list",
                hint="lamina reads OCI image indexes and Docker manifest lists",
            )
        if not isinstance(d.get("manifests"), list):
            raise _fail(what, "missing 'manifests' list")
        subject = None
        if d.get("subject") is not None:
            subject = Descriptor.from_json(d["subject"], f"{what}, subject")
        return cls(
            media_type=media_type,
            manifests=_descriptors(d, "manifests", what),
            annotations=_str_map(d, "annotations", what),
            subject=subject,
            artifact_type=_str(d, "artifactType", what),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [m.to_dict() for m in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def select(self, platform: Platform) -> Descriptor:
        """The first image manifest whose platform matches ``platform``."""
        for desc in self.manifests:
            if desc.platform is not None and platform.matches(desc.platform):
                return desc
        available = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
        raise ImageFormatError(
            f"no image for platform {platform} in the index (available: {available})",
            hint="pick one of the available platforms with --custom-platform",
        )


# ---------------------------------------------------------------------------
# Image config


def _overlay(raw: Mapping[str, Any], typed: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The typed keys in spec order (None omits), then ``raw``'s other keys as they were."""
    out = {key: value for key, value in typed if value is not None}
    known = {key for key, _ in typed}
    out.update((k, v) for k, v in raw.items() if k not in known)
    return out


def _set_of_keys(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _fail(what, f"{key!r} must be an object")
    return tuple(v)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerConfig:
    """The ``config`` member of an image config (runtime defaults).

    ``exposed_ports`` and ``volumes`` are the keys of the JSON objects; ``None``
    and ``()`` differ for ``entrypoint``/``cmd``/``shell`` only in that () is
    written as ``[]``. Unknown members are kept in ``raw`` and written back.
    """

    user: str | None = None
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    args_escaped: bool | None = None
    shell: tuple[str, ...] | None = None
    healthcheck: Mapping[str, Any] | None = None
    on_build: tuple[str, ...] | None = None
    hostname: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(
        cls, data: bytes | str | dict[str, Any], what: str = "container config"
    ) -> ContainerConfig:
        d = load_object(data, what)
        args_escaped = d.get("ArgsEscaped")
        if args_escaped is not None and not isinstance(args_escaped, bool):
            raise _fail(what, "'ArgsEscaped' must be a boolean")
        hc = d.get("Healthcheck")
        if hc is not None and not isinstance(hc, dict):
            raise _fail(what, "'Healthcheck' must be an object")
        return cls(
            user=_str(d, "User", what),
            exposed_ports=_set_of_keys(d, "ExposedPorts", what) or (),
            env=_str_list(d, "Env", what) or (),
            entrypoint=_str_list(d, "Entrypoint", what),
            cmd=_str_list(d, "Cmd", what),
            volumes=_set_of_keys(d, "Volumes", what) or (),
            working_dir=_str(d, "WorkingDir", what),
            labels=_str_map(d, "Labels", what),
            stop_signal=_str(d, "StopSignal", what),
            args_escaped=args_escaped,
            shell=_str_list(d, "Shell", what),
            healthcheck=hc,
            on_build=_str_list(d, "OnBuild", what),
            hostname=_str(d, "Hostname", what),
            raw=d,
        )

    def to_dict(self) -> dict[str, Any]:
        def lst(v: tuple[str, ...] | None) -> list[str] | None:
            return None if v is None else list(v)

        return _overlay(
            self.raw,
            [
                ("Hostname", self.hostname or None),
                ("User", self.user or None),
                ("ExposedPorts", {p: {} for p in self.exposed_ports} or None),
                ("Env", list(self.env) or None),
                ("Entrypoint", lst(self.entrypoint)),
                ("Cmd", lst(self.cmd)),
                ("Volumes", {v: {} for v in self.volumes} or None),
                ("WorkingDir", self.working_dir or None),
                ("Labels", dict(self.labels) or None),
                ("StopSignal", self.stop_signal or None),
                ("ArgsEscaped", self.args_escaped or None),
                ("Shell", lst(self.shell)),
                ("Healthcheck", dict(self.healthcheck) if self.healthcheck else None),
                ("OnBuild", lst(self.on_build)),
            ],
        )

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    def env_dict(self) -> dict[str, str]:
        """``Env`` as a mapping (later entries win)."""
        out: dict[str, str] = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """One ``history`` entry of an image config.

    ``created`` is kept as the RFC 3339 text it was read as (so base configs
    survive unchanged); build new ones with :meth:`at` or ``format_time``.
    """

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def at(
        cls,
        when: datetime | None,
        *,
        created_by: str | None = None,
        author: str | None = None,
        comment: str | None = None,
        empty_layer: bool = False,
    ) -> History:
        return cls(
            created=None if when is None else format_time(when),
            created_by=created_by,
            author=author,
            comment=comment,
            empty_layer=empty_layer,
        )

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], what: str = "history entry") -> History:
        d = load_object(data, what)
        empty = d.get("empty_layer", False)
        if empty is None:
            empty = False
        if not isinstance(empty, bool):
            raise _fail(what, "'empty_layer' must be a boolean")
        return cls(
            created=_str(d, "created", what),
            created_by=_str(d, "created_by", what),
            author=_str(d, "author", what),
            comment=_str(d, "comment", what),
            empty_layer=empty,
            raw=d,
        )

    @property
    def created_at(self) -> datetime | None:
        return None if self.created is None else parse_time(self.created)

    def to_dict(self) -> dict[str, Any]:
        return _overlay(
            self.raw,
            [
                ("created", self.created or None),
                ("created_by", self.created_by or None),
                ("author", self.author or None),
                ("comment", self.comment or None),
                ("empty_layer", True if self.empty_layer else None),
            ],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """The image configuration JSON (OCI ``config.v1`` / Docker ``container.image.v1``).

    Members lamina does not model (``container``, ``docker_version``,
    ``container_config``...) live in ``raw`` and survive :meth:`to_json`; the
    typed fields are overlaid on top of it.
    """

    architecture: str = ""
    os: str = ""
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    created: str | None = None
    author: str | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    rootfs_type: str = "layers"
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(
        cls, data: bytes | str | dict[str, Any], what: str = "image config"
    ) -> ImageConfig:
        d = load_object(data, what)
        rootfs = d.get("rootfs")
        if not isinstance(rootfs, dict):
            raise _fail(what, "missing 'rootfs' object")
        rootfs_type = rootfs.get("type")
        if rootfs_type != "layers":
            raise _fail(what, f"'rootfs.type' must be 'layers', got {rootfs_type!r}")
        diff_ids_raw = rootfs.get("diff_ids")
        if diff_ids_raw is None:
            diff_ids_raw = []
        if not isinstance(diff_ids_raw, list):
            raise _fail(what, "'rootfs.diff_ids' must be a list")
        diff_ids = tuple(
            _digest(x, what, f"rootfs.diff_ids[{i}]") for i, x in enumerate(diff_ids_raw)
        )
        history_raw = d.get("history")
        if history_raw is None:
            history_raw = []
        if not isinstance(history_raw, list):
            raise _fail(what, "'history' must be a list")
        history = tuple(
            History.from_json(h, f"{what}, history[{i}]") for i, h in enumerate(history_raw)
        )
        cc = d.get("config")
        container = (
            ContainerConfig() if cc is None else ContainerConfig.from_json(cc, f"{what}, config")
        )
        created = _str(d, "created", what)
        if created is not None:
            try:
                parse_time(created)
            except ImageFormatError as exc:
                raise _fail(what, exc.message) from None
        features = d.get("os.features")
        if features is not None and (
            not isinstance(features, list) or not all(isinstance(f, str) for f in features)
        ):
            raise _fail(what, "'os.features' must be a list of strings")
        return cls(
            architecture=_str(d, "architecture", what) or "",
            os=_str(d, "os", what) or "",
            variant=_str(d, "variant", what),
            os_version=_str(d, "os.version", what),
            os_features=tuple(features or ()),
            created=created,
            author=_str(d, "author", what),
            config=container,
            rootfs_type="layers",
            diff_ids=diff_ids,
            history=history,
            raw=d,
        )

    def to_dict(self) -> dict[str, Any]:
        raw_rootfs = self.raw.get("rootfs")
        rootfs = dict(raw_rootfs) if isinstance(raw_rootfs, dict) else {}
        rootfs["type"] = self.rootfs_type
        rootfs["diff_ids"] = [str(d) for d in self.diff_ids]
        container = self.config.to_dict()
        return _overlay(
            self.raw,
            [
                ("created", self.created or None),
                ("author", self.author or None),
                ("architecture", self.architecture),
                ("os", self.os),
                ("os.version", self.os_version or None),
                ("os.features", list(self.os_features) or None),
                ("variant", self.variant or None),
                ("config", container or ({} if "config" in self.raw else None)),
                ("rootfs", rootfs),
                ("history", [h.to_dict() for h in self.history] or None),
            ],
        )

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @property
    def platform(self) -> Platform:
        return Platform(
            os=self.os,
            architecture=self.architecture,
            variant=self.variant,
            os_version=self.os_version,
            os_features=self.os_features,
        )

    @property
    def created_at(self) -> datetime | None:
        return None if self.created is None else parse_time(self.created)

    def without(self, *keys: str) -> ImageConfig:
        """A copy with the given unmodelled top-level members removed from ``raw``."""
        return replace(self, raw={k: v for k, v in self.raw.items() if k not in keys})


def detect_manifest_media_type(raw: bytes, declared: str | None = None) -> str:
    """The media type of a manifest document, for registries that omit or garble it.

    A recognised ``declared`` type (e.g. the Content-Type) wins when the JSON
    carries none; the document's own ``mediaType`` wins otherwise; without
    either, ``manifests`` means an OCI index and ``config`` an OCI manifest.
    """
    d = load_object(raw, "manifest")
    own = d.get("mediaType")
    if d.get("schemaVersion") == 1:
        return (
            mt.DOCKER_SCHEMA1_SIGNED_MANIFEST if "signatures" in d else mt.DOCKER_SCHEMA1_MANIFEST
        )
    if isinstance(own, str) and own:
        return own
    if declared and (mt.is_index(declared) or mt.is_manifest(declared)):
        return declared.split(";", 1)[0].strip()
    if "manifests" in d:
        return mt.OCI_INDEX
    if "config" in d:
        return mt.OCI_MANIFEST
    raise ImageFormatError(
        "cannot tell the manifest's media type: it has no 'mediaType', 'manifests' or 'config'",
        hint="the registry returned something that is not an image manifest",
    )
