"""Changes → deterministic layer tar → compressed blob file, in one streaming pass."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.errors import FilesystemError, LaminaError
from lamina.oci import FileLayer, compress_layer, mediatypes

if TYPE_CHECKING:
    from lamina.fs import Change

__all__ = ["make_layer"]


def make_layer(
    changes: Iterable[Change],
    root: Path,
    blobs: Path,
    *,
    compression: mediatypes.Compression,
    level: int | None,
    epoch: int | None,
) -> FileLayer:
    """Write the layer for ``changes`` (read from ``root``) as a blob file under ``blobs``.

    The tar writer runs in a thread feeding a pipe; the compressor reads the
    other end and computes digest and diff_id on the way, so no layer is ever
    held in memory or written twice. ``epoch`` clamps mtimes (``--reproducible``).
    """
    from lamina.fs import write_layer  # the tar writer: only a step that ran makes a layer

    change_list = list(changes)
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        raise FilesystemError(f"cannot create a pipe for the layer writer: {exc}") from exc
    reader = os.fdopen(rfd, "rb")
    writer = os.fdopen(wfd, "wb")
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            write_layer(change_list, root, writer, epoch=epoch)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=produce, name="lamina-layer-writer", daemon=True)
    tmp = blobs / f"tmp-{os.getpid()}-{threading.get_ident()}-{id(change_list)}"
    thread.start()
    try:
        try:
            with tmp.open("wb") as out:
                stats = compress_layer(reader, out, compression=compression, level=level)
        finally:
            reader.close()
            thread.join()
    except OSError as exc:
        raise FilesystemError(f"cannot write the layer blob {tmp}: {exc.strerror}") from exc
    except LaminaError:
        if failure and isinstance(failure[0], LaminaError):
            raise failure[0] from None
        raise
    if failure:
        err = failure[0]
        if isinstance(err, LaminaError):
            raise err
        raise FilesystemError(f"writing the layer tar failed: {err}") from err
    final = blobs / f"{stats.digest.algorithm}-{stats.digest.hex}"
    try:
        tmp.replace(final)
    except OSError as exc:
        raise FilesystemError(f"cannot rename the layer blob {tmp}: {exc.strerror}") from exc
    media_type = mediatypes.layer_media_type("oci", compression)
    return FileLayer.from_stats(final, stats, media_type=media_type)
