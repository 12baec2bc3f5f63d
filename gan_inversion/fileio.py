"""The two file helpers every layer uses: an atomic write and a content hash."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then rename it to `path`: a crash or an error never
    leaves a half-written file (the temporary one is removed). The file gets mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def sha256_file(source: str | os.PathLike | BinaryIO) -> str:
    """SHA-256 of a file's content (a path, or a binary file object read to its end), in 1 MiB chunks."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return sha256_file(f)
    h = hashlib.sha256()
    for chunk in iter(lambda: source.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()
