"""Atomic file writing: every output gmseg writes appears whole or not at all.

A kill mid-write (Ctrl-C, OOM, a pre-empted cluster job) must never leave half a PNG, JSON or weight file
that a later step trusts. Each writer gets an open binary handle on a temporary name in the target's folder
(same file system, so ``os.replace`` is atomic); the temporary file is removed if anything fails.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: ``.NAME.<pid>.<hex>.tmp`` (a temporary file or staging folder of :func:`temporary_sibling`) and the
#: ``.NAME.prepare-<pid>`` staging folders of older versions of ``gmseg prepare``: group 1 is the writer's PID.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$|^\..+\.prepare-(\d+)$")


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` that carries this process's PID, so a later run can tell whether the
    writer is still alive (:func:`clean_stale_temporaries`)."""
    # Not tempfile.mkstemp: its 0600 permissions would stick to the final file; this name honours umask.
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def temporary_owner(name: str) -> int | None:
    """The PID encoded in a temporary name of :func:`temporary_sibling` (or an old prepare staging folder)."""
    match = _TEMPORARY.match(name)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and staging folders in ``folder`` whose writer is dead (SIGKILL, OOM).

    Only names of :func:`temporary_sibling`'s pattern are touched, and only when the PID they carry is no
    live process, so a concurrent writer's temporary is never removed. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing of ours to clean
        return removed
    for entry in entries:
        pid = temporary_owner(entry.name)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        try:
            remove_path(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        except OSError:
            continue  # another cleaner got there first, or no permission: leave it
        removed.append(entry)
    return removed


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


def atomic_folder(final: str | os.PathLike, fill: Callable[[Path], object]) -> Path:
    """Call ``fill(folder)`` on a hidden staging folder beside ``final``, then swap it in whole.

    The staging folder carries this process's PID (:func:`temporary_sibling`), so a kill leaves nothing a
    later run trusts and :func:`clean_stale_temporaries` removes it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(final)
    try:
        temp.mkdir()
        fill(temp)
        swap_in(temp, final)
    except BaseException:
        try:
            remove_path(temp)
        except OSError:
            pass  # never hide the error that caused the cleanup
        raise
    return final


def json_safe(obj: object) -> object:
    """nan/inf -> null, recursively: strict JSON readers (browsers, jq) reject Python's NaN literal."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
