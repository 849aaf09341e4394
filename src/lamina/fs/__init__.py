"""The rootfs on disk: safe paths, layer extraction, snapshots and layer tars.

* :func:`safe_join` resolves every in-image path inside a root as if the root
  were ``/``; nothing in this package touches the rootfs any other way.
* :func:`extract_layer` applies an uncompressed layer tar stream with OCI
  whiteout semantics. **Hostile-entry policy:** entries whose name or
  hardlink target contains ``..``, whiteouts of ``.``/``..``, hardlinks to a
  missing target or to a directory are skipped with a warning naming the layer
  and entry; absolute names are taken inside the root (with a warning);
  symlinks are followed inside the root only. Nothing outside the root is ever
  created, changed or deleted (deferred directory modes and mtimes included).
  Device nodes are never created: an inert empty file records them
  (:func:`device_record`) and :func:`write_layer` writes the node back.
  Corrupt tar data raises ``ImageFormatError``; tar headers are bounded
  (``lamina.oci._tarread``).
* Snapshots: :func:`changes_from_upper`/:func:`apply_upper` for an overlay
  upper dir (namespace mode), :class:`StatIndex` and :func:`diff` for
  ``none``/``chroot`` mode (``--snapshot-mode=full|redo|time``), kept current
  between steps by :class:`TreeWatch` (inotify).
  ``--single-snapshot`` is the caller's choice of when to scan and diff.
* :class:`ConfinedRoot` changes recorded paths inside a root after a RUN
  fd-relative, following no symlink the step may have planted.
* :func:`write_layer` writes a deterministic PAX layer tar to a stream.
* :func:`extract_archive` unpacks a local (compressed) tar for ``ADD``, confined
  to its destination, without whiteout semantics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports

if TYPE_CHECKING:
    from lamina.fs._builddir import BuildDir
    from lamina.fs._changes import Change, ChangeKind, normalise_changes
    from lamina.fs._confined import ConfinedRoot
    from lamina.fs._extract import (
        ExtractStats,
        device_record,
        extract_archive,
        extract_layer,
        keep_device_record,
        remove_path,
    )
    from lamina.fs._ignore import (
        IgnoreList,
        default_ignore_list,
        mount_points_from_mountinfo,
        read_mountinfo,
    )
    from lamina.fs._nodecopy import copy_entry, copy_tree
    from lamina.fs._overlay import apply_upper, changes_from_upper
    from lamina.fs._paths import safe_join
    from lamina.fs._statindex import SnapshotMode, StatIndex, diff
    from lamina.fs._tarwriter import LayerWriteStats, changes_for_tree, write_layer
    from lamina.fs._watch import TreeWatch

__all__ = [
    "BuildDir",
    "Change",
    "ChangeKind",
    "ConfinedRoot",
    "ExtractStats",
    "IgnoreList",
    "LayerWriteStats",
    "SnapshotMode",
    "StatIndex",
    "TreeWatch",
    "apply_upper",
    "changes_for_tree",
    "changes_from_upper",
    "copy_entry",
    "copy_tree",
    "default_ignore_list",
    "device_record",
    "diff",
    "extract_archive",
    "extract_layer",
    "keep_device_record",
    "mount_points_from_mountinfo",
    "normalise_changes",
    "read_mountinfo",
    "remove_path",
    "safe_join",
    "write_layer",
]

#: what each name is imported from, on first use (a cache hit must not import the
#: tar extraction and writing code)
_EXPORTS = {
    "BuildDir": "lamina.fs._builddir",
    "Change": "lamina.fs._changes",
    "ChangeKind": "lamina.fs._changes",
    "ConfinedRoot": "lamina.fs._confined",
    "ExtractStats": "lamina.fs._extract",
    "IgnoreList": "lamina.fs._ignore",
    "LayerWriteStats": "lamina.fs._tarwriter",
    "SnapshotMode": "lamina.fs._statindex",
    "StatIndex": "lamina.fs._statindex",
    "TreeWatch": "lamina.fs._watch",
    "apply_upper": "lamina.fs._overlay",
    "changes_for_tree": "lamina.fs._tarwriter",
    "changes_from_upper": "lamina.fs._overlay",
    "copy_entry": "lamina.fs._nodecopy",
    "copy_tree": "lamina.fs._nodecopy",
    "default_ignore_list": "lamina.fs._ignore",
    "device_record": "lamina.fs._extract",
    "diff": "lamina.fs._statindex",
    "extract_archive": "lamina.fs._extract",
    "extract_layer": "lamina.fs._extract",
    "keep_device_record": "lamina.fs._extract",
    "mount_points_from_mountinfo": "lamina.fs._ignore",
    "normalise_changes": "lamina.fs._changes",
    "read_mountinfo": "lamina.fs._ignore",
    "remove_path": "lamina.fs._extract",
    "safe_join": "lamina.fs._paths",
    "write_layer": "lamina.fs._tarwriter",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
