"""Atomic file writing: every output gmseg writes appears whole or not at all.

A kill mid-write (Ctrl-C, OOM, a pre-empted cluster job) must never leave half a PNG, JSON or weight file
that a later step trusts. Each writer gets an open binary handle on a temporary name in the target's folder
(same file system, so ``os.replace`` is atomic); the temporary file is removed if anything fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def temporary_sibling(path: Path) -> Path:
    # Not tempfile.mkstemp: its 0600 permissions would stick to the final file; this name honours umask.
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path)
    try:
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise
    return path


def _discard(temp: Path) -> None:
    """Remove a temporary file; a failure here must never hide the error that caused the cleanup."""
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_save_file(path: str | os.PathLike, save: Callable[[str], object]) -> Path:
    """For libraries that only write to a file *name* (e.g. safetensors): write a temp name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path)
    try:
        save(str(temp))
        honour_umask(temp)
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise
    return path


def honour_umask(path: str | os.PathLike) -> None:
    """Give a file written by a library the permissions an ordinary ``open`` would (safetensors uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def remove_path(path: Path) -> None:
    """Remove a folder, or a symlink (an old run's ``best``/``last``) without following it."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def swap_in(temp: Path, final: Path) -> None:
    """Move the complete folder ``temp`` to ``final`` by rename, replacing what was there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside to
    ``.NAME.old`` (where a reader can find it if a kill falls between the two renames), then removed.
    Used for checkpoints and for prepared datasets alike: a folder is never a mix of old and new files.
    """
    aside = final.with_name(f".{final.name}.old")
    if final.is_symlink() or final.exists():
        remove_path(aside)
        os.replace(final, aside)
    os.replace(temp, final)
    remove_path(aside)
