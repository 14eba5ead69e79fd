"""The file rule, in one place: every verb writes every file through an :class:`OutputGuard`.

The rule (README, "Masks and files: the two rules"):

1. **Never over an input.** An output that *is* a file the verb reads is refused, even with ``--overwrite``.
   Files are compared, not paths: ``(st_dev, st_ino)`` after following symlinks, so a symlink or a hard
   link to an input counts as the input. An output directly inside a folder the verb reads (the input
   images, the ground truth) is refused too, and so is an output folder that holds an input.
2. **Planned before written.** All outputs of a run are planned before the first byte is written; two
   planned outputs with one name (``x.overlay.png`` the overlay of ``x`` and the mask of ``x.overlay``)
   are refused, naming both.
3. **Not over a file gmseg did not create.** An existing file is replaced only with ``overwrite``, or, for a
   run that replaces its own results (``replace_own``: ``demo``, ``plot``, ``predict --continue``), when
   gmseg wrote it. Each folder gmseg writes into keeps the names it wrote there in :data:`MANIFEST`
   (one per line, appended just before each file is renamed into place); files written before that
   manifest existed count as the user's.
4. **Whole or not at all.** Files are written to a temporary name carrying the PID and renamed
   (:mod:`gmseg.fileio`); folders are filled beside their final name and swapped in.
5. **One run per folder.** :meth:`OutputGuard.claim` takes an exclusive OS lock on :data:`LOCK` in the
   folder (holding PID, host and verb), released on exit and by the kernel when the process dies; a
   second run refuses at once, naming the first. The ranks of one launch (``accelerate launch
   --num_processes N``) are one run: rank 0 claims with the launch's id, the others :meth:`~OutputGuard.join`
   (refused unless the lock carries that id) and record what they write in a manifest part of their own
   (``.gmseg-written.rank<N>``: no two processes, maybe on two machines, append to one file), merged into
   the manifest by rank 0 at the end (:func:`merge_manifest_parts`) or by the next claim after a crash.
6. **Leftovers cleaned.** Claiming or first writing into a folder removes the temporaries of dead runs
   (:func:`gmseg.fileio.clean_stale_temporaries`).

Use::

    with OutputGuard("predict", overwrite=args.overwrite) as guard:
        guard.read(*input_files)            # what the run reads
        guard.claim(output_folder)          # one run per folder
        guard.plan(*every_output)           # refuses before anything is written
        guard.write_text(output_folder / "x.json", text)   # or write(), save(), write_folder()
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import GmsegError
from .fileio import atomic_folder, atomic_write, clean_stale_temporaries, process_alive

try:  # POSIX; elsewhere the lock is an exclusively created file (no kernel release on death)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK",
    "MANIFEST",
    "FolderBusyError",
    "OutputGuard",
    "OutputError",
    "folder_holder",
    "gmseg_files",
    "is_bookkeeping",
    "is_empty_folder",
    "manifest_part",
    "merge_manifest_parts",
    "refuse_if_busy",
    "same_file",
    "written_by_gmseg",
]

#: The lock file of a claimed folder (exists while a run holds it; a killed run's is taken over).
LOCK = ".gmseg-lock"
#: The names gmseg wrote into a folder, one per line (a folder written by gmseg ends in "/").
MANIFEST = ".gmseg-written"
#: gmseg's own bookkeeping files, never outputs and never "the user's files" (with the manifest parts).
BOOKKEEPING = (LOCK, MANIFEST)
#: How the manifest part of a launch's rank > 0 is named: ``.gmseg-written.rank1`` ...
PART_PREFIX = f"{MANIFEST}.rank"


class OutputError(GmsegError):
    """An output would overwrite an input, another output of the run, or a file gmseg did not create."""


class FolderBusyError(GmsegError):
    """Another run holds the output folder."""


# ------------------------------------------------------------------------------------------ identities


def _identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what ``path`` points to, following symlinks; None when there is nothing."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths reach one file or folder (symlinks followed, hard links included)."""
    first = _identity(Path(a))
    return first is not None and first == _identity(Path(b))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------- manifest


def is_bookkeeping(name: str) -> bool:
    """Whether a folder entry is gmseg's bookkeeping (lock, manifest, a rank's manifest part), not an output."""
    return name in BOOKKEEPING or (name.startswith(PART_PREFIX) and name[len(PART_PREFIX) :].isdigit())


def manifest_part(rank: int) -> str:
    """The manifest file rank ``rank`` of a launch appends to (rank 0: the manifest itself)."""
    return MANIFEST if rank == 0 else f"{PART_PREFIX}{rank}"


def _parts(folder: Path) -> list[Path]:
    """The manifest parts in ``folder`` (ranks of a running launch, or of one that died before merging)."""
    try:
        return sorted(entry for entry in folder.glob(f"{PART_PREFIX}*") if is_bookkeeping(entry.name))
    except OSError:
        return []


def _names(file: Path) -> list[str]:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line and "\x00" not in line]


def gmseg_files(folder: str | os.PathLike) -> set[str]:
    """The names gmseg recorded as written in ``folder`` (files, and sub-folders with a trailing "/"): the
    manifest and the parts of a launch's ranks."""
    folder = Path(folder)
    names = set(_names(folder / MANIFEST))
    for part in _parts(folder):
        names.update(_names(part))
    return names


def merge_manifest_parts(folder: str | os.PathLike) -> None:
    """Append the ranks' manifest parts to ``folder``'s manifest and remove them; call it while no rank
    writes (rank 0 after the others finished, or a fresh claim). A kill between the two steps only leaves
    names listed twice."""
    folder = Path(folder)
    for part in _parts(folder):
        _record(folder, _names(part))
        part.unlink(missing_ok=True)


def written_by_gmseg(path: str | os.PathLike) -> bool:
    """Whether gmseg wrote ``path`` (a file, or a folder it created), by its folder's manifest."""
    path = Path(path)
    names = gmseg_files(path.parent)
    return path.name in names or f"{path.name}/" in names


def _record(folder: Path, names: Iterable[str], manifest: str = MANIFEST) -> None:
    """Append names to ``folder``'s manifest (or a rank's part): one short O_APPEND write, so a kill can at
    worst leave a torn last line, which names no file; listing a name before its file exists only allows
    replacing it."""
    lines = "".join(f"{name}\n" for name in names)
    if not lines:
        return
    handle = os.open(folder / manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(handle, lines.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(handle)


def is_empty_folder(folder: str | os.PathLike) -> bool:
    """A missing folder, or one holding nothing but gmseg's bookkeeping files."""
    folder = Path(folder)
    if not folder.is_dir():
        return not folder.exists()
    return all(is_bookkeeping(entry.name) for entry in folder.iterdir())


# ------------------------------------------------------------------------------------------------ lock


@dataclass(frozen=True)
class LockOwner:
    """Who holds a folder: enough to name the process and to tell whether it still runs."""

    pid: int
    host: str
    verb: str
    started: str
    launch: str = ""  # the id a launch's ranks share (empty: a single process)

    def describe(self) -> str:
        return f"gmseg {self.verb} (PID {self.pid} on {self.host}, started {self.started})"

    def alive(self) -> bool:
        return self.host != socket.gethostname() or process_alive(self.pid)


def _read_owner(lock: Path) -> LockOwner | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        fields = (int(data["pid"]), str(data["host"]), str(data["verb"]), str(data["started"]))
        return LockOwner(*fields, str(data.get("launch", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _me(verb: str, launch: str = "") -> LockOwner:
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return LockOwner(os.getpid(), socket.gethostname(), verb, started, launch)


class _Lock:
    """One claimed folder: an open, exclusively locked :data:`LOCK` file."""

    def __init__(self, folder: Path, handle: int, created: bool):
        self.folder, self.handle, self.created, self.count = folder, handle, created, 1

    def release(self) -> None:
        lock = self.folder / LOCK
        try:  # unlink while still holding the lock; a waiter re-checks the inode it locked (see _acquire)
            if _identity(lock) == _fd_identity(self.handle):
                lock.unlink()
        except OSError:
            pass
        os.close(self.handle)
        if self.created:  # a folder this run created and left empty (a refused run) is not left behind
            try:
                self.folder.rmdir()
            except OSError:
                pass


#: Folders this process holds, by real path: a verb calling another (test -> predict) claims again freely.
_HELD: dict[str, _Lock] = {}


def _fd_identity(handle: int) -> tuple[int, int]:
    status = os.fstat(handle)
    return status.st_dev, status.st_ino


def _busy(folder: Path, owner: LockOwner | None) -> FolderBusyError:
    who = owner.describe() if owner is not None else "another gmseg run"
    return FolderBusyError(
        f"{folder} is in use by {who}: two runs writing one folder would mix their files. Wait for it to "
        f"finish, or choose another folder (if that process is gone, delete {folder / LOCK})."
    )


def _acquire(folder: Path, verb: str, launch: str = "") -> int:
    """Open and lock ``folder/LOCK`` without waiting; write who holds it. Raises FolderBusyError."""
    lock = folder / LOCK
    for _ in range(20):
        if fcntl is None:  # pragma: no cover - exclusive creation, with a dead owner's file taken over
            try:
                handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                owner = _read_owner(lock)
                if owner is not None and owner.alive():
                    raise _busy(folder, owner) from None
                lock.unlink(missing_ok=True)
                continue
        else:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(handle)
                raise _busy(folder, _read_owner(lock)) from None
            if _identity(lock) != _fd_identity(handle):  # released and unlinked while we opened it: retry
                os.close(handle)
                continue
        previous = _read_owner(lock)
        if previous is not None and previous.pid != os.getpid():
            print(
                f"note: {folder}: {previous.describe()} ended without releasing it (killed?); taking it over",
                file=sys.stderr,
            )
        os.ftruncate(handle, 0)
        os.write(handle, json.dumps(_me(verb, launch).__dict__).encode("utf-8"))
        return handle
    raise _busy(folder, _read_owner(lock))


def folder_holder(folder: str | os.PathLike) -> LockOwner | None:
    """The run holding ``folder`` now (another process), or None when it is free or held by this one."""
    folder = Path(folder)
    lock = folder / LOCK
    if not lock.is_file():
        return None
    if folder.is_dir() and str(folder.resolve()) in _HELD:
        return None
    if fcntl is None:  # pragma: no cover
        owner = _read_owner(lock)
        return owner if owner is not None and owner.alive() else None
    try:
        handle = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_owner(lock) or LockOwner(0, "?", "?", "?")
    finally:
        os.close(handle)
    return None


def refuse_if_busy(folder: str | os.PathLike) -> None:
    """Raise :class:`FolderBusyError` naming the run that holds ``folder`` now, before a slower check or
    setup would give a misleading message (e.g. "not empty" for a folder a running training fills)."""
    owner = folder_holder(folder)
    if owner is not None:
        raise _busy(Path(folder), owner)


# ----------------------------------------------------------------------------------------------- guard


class OutputGuard:
    """Plans, checks and writes every output of one run of a verb (see the module docstring for the rule).

    ``overwrite`` allows replacing existing files that are not inputs; ``replace_own`` allows replacing
    existing files gmseg wrote (by the folder's :data:`MANIFEST`) without ``overwrite``. ``hint`` is what
    the refusal of an existing file suggests (default: pass --overwrite). Use it as a context manager so
    claimed folders are released.
    """

    def __init__(
        self,
        verb: str,
        *,
        overwrite: bool = False,
        replace_own: bool = False,
        hint: str = "pass --overwrite to replace them",
    ):
        self.verb, self.overwrite, self.replace_own, self.hint = verb, overwrite, replace_own, hint
        self._inputs: dict[tuple[int, int], Path] = {}
        self._input_folders: dict[tuple[int, int], Path] = {}
        self._input_paths: list[Path] = []  # as given: an output folder may not hold one
        self._planned: dict[str, str] = {}  # self._key(path) -> what writes it
        self._claimed: list[str] = []
        self._cleaned: set[str] = set()
        self._own: dict[str, set[str]] = {}  # manifests read once per folder, kept current by record()
        self._parents: dict[str, tuple[str, tuple[int, int] | None]] = {}  # folder -> (real path, identity)
        self._manifest = MANIFEST  # a joined rank's own part (see join)

    # --------------------------------------------------------------------------------------- lifetime
    def __enter__(self) -> OutputGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every folder this guard claimed (idempotent)."""
        while self._claimed:
            key = self._claimed.pop()
            held = _HELD.get(key)
            if held is None:
                continue
            held.count -= 1
            if held.count == 0:
                del _HELD[key]
                held.release()

    def claim(self, folder: str | os.PathLike, launch: str = "") -> bool:
        """Create ``folder`` if needed and hold it for this run; returns whether this call created it.

        Raises :class:`FolderBusyError` naming the other run when another process holds it. A process that
        already holds it (a verb inside a verb) claims it again freely. ``launch``: the id the other ranks of
        this launch :meth:`join` with (rank 0 claims for all of them).
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} is an existing file, not a folder; choose another path.")
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)  # not recorded: a run folder is claimed, not "written"
        key = str(folder.resolve())
        if key in _HELD:
            _HELD[key].count += 1
        else:
            try:
                handle = _acquire(folder, self.verb, launch)
            except BaseException:
                if created:
                    try:
                        folder.rmdir()
                    except OSError:
                        pass
                raise
            _HELD[key] = _Lock(folder, handle, created)
            merge_manifest_parts(folder)  # a crashed launch's ranks: no rank of ours writes before the claim
        self._claimed.append(key)
        self._clean(folder)
        return created

    def join(self, folder: str | os.PathLike, launch: str, rank: int) -> None:
        """Write into ``folder`` as rank ``rank`` of the launch whose rank 0 claimed it with id ``launch``.

        Refused when the lock does not carry that id: the folder is not on storage this machine shares
        with rank 0, or another run holds it. A joined rank records its outputs in its own manifest part
        and never cleans temporaries (a live writer on another machine has a PID that is dead here).
        """
        folder = Path(folder)
        owner = _read_owner(folder / LOCK)
        if owner is None or owner.launch != launch:
            raise FolderBusyError(
                f"{folder}: rank {rank} on {socket.gethostname()} does not see the lock rank 0 of its launch took "
                f"there ({owner.describe() if owner else 'no lock'}); give an --output on storage every "
                "machine of the launch shares."
            )
        self._manifest = manifest_part(rank)
        self._cleaned.add(str(folder.resolve()))

    # ------------------------------------------------------------------------------------------ inputs
    def read(self, *paths: str | os.PathLike) -> None:
        """Register files the run reads: no output may be one of them (compared as files)."""
        for path in map(Path, paths):
            identity = _identity(path)
            if identity is not None:
                self._inputs.setdefault(identity, path)
                self._input_paths.append(path)

    def read_folder(self, *folders: str | os.PathLike) -> None:
        """Register folders the run reads from: no output may be written directly inside one."""
        for folder in map(Path, folders):
            identity = _identity(folder)
            if identity is not None and folder.is_dir():
                self._input_folders.setdefault(identity, folder)
                self._input_paths.append(folder)

    # ---------------------------------------------------------------------------------------- planning
    def _parent(self, path: Path) -> tuple[str, tuple[int, int] | None]:
        """(real path, identity) of ``path``'s folder, looked up once per folder (thousands of outputs share one)."""
        absolute = os.path.abspath(path)
        folder = os.path.dirname(absolute)
        if folder not in self._parents:
            self._parents[folder] = (str(Path(folder).resolve()), _identity(Path(folder)))
        return self._parents[folder]

    def _key(self, path: Path) -> str:
        """A name for collision checks: the real folder plus the entry's own name (not followed, so two
        outputs meeting through a symlinked folder collide while a symlink itself is its own entry)."""
        return os.path.join(self._parent(path)[0], os.path.basename(os.path.abspath(path)))

    def _own_names(self, folder: Path) -> set[str]:
        key = self._key(folder)
        if key not in self._own:
            self._own[key] = gmseg_files(folder)
        return self._own[key]

    def is_own(self, path: str | os.PathLike) -> bool:
        """Whether gmseg wrote ``path`` (its folder's manifest, read once per folder by this guard)."""
        path = Path(path)
        own = self._own_names(path.parent)
        return path.name in own or f"{path.name}/" in own

    def allowed_to_replace(self, path: Path) -> bool:
        """Whether an existing ``path`` may be replaced: with overwrite, or gmseg's own with replace_own."""
        return self.overwrite or (self.replace_own and self.is_own(path))

    def _check_not_input(self, path: Path) -> None:
        parent = self._parent(path)[1]
        if parent is not None and parent in self._input_folders:
            folder = self._input_folders[parent]
            raise OutputError(
                f"{path} would be written into {folder}, a folder this {self.verb} reads its inputs from: "
                "outputs mixed with inputs are read back as inputs; choose an output folder outside it."
            )
        identity = _identity(path)
        if identity is not None and identity in self._inputs:
            source = self._inputs[identity]
            how = "" if Path(os.path.abspath(path)) == Path(os.path.abspath(source)) else " (the same file, by a link)"
            raise OutputError(
                f"{path} is the input {source}{how}: {self.verb} never writes over a file it reads, not even "
                "with --overwrite; choose another output."
            )

    def plan(self, *paths: str | os.PathLike, owner: str = "") -> list[Path]:
        """Check outputs before anything is written: not an input, not planned twice, not an existing file
        this run may not replace (every such file of the call is counted in one refusal)."""
        planned, existing = [], []
        for path in map(Path, paths):
            self._check_not_input(path)
            if path.is_dir() and not path.is_symlink():
                raise OutputError(f"{path} is an existing folder, not a file; choose another output name.")
            key = self._key(path)
            if key in self._planned:
                first = self._planned[key]
                raise OutputError(
                    f"{first or 'one output'} and {owner or 'another output'} would both be written to {path}: "
                    "the second would replace the first; rename one input or write them to separate folders."
                )
            if (path.exists() or path.is_symlink()) and not self.allowed_to_replace(path):
                existing.append(path)
            self._planned[key] = owner or str(path)
            planned.append(path)
        if existing:
            for path in planned:  # a refused call plans nothing
                self._planned.pop(self._key(path), None)
            raise OutputError(
                f"{len(existing)} output file(s) already exist and gmseg will not replace files without being "
                f"asked, e.g. {existing[0]}: {self.hint}, or choose another output."
            )
        return planned

    def plan_folder(self, folder: str | os.PathLike, owner: str = "") -> Path:
        """Check an output folder that is written whole (a model or dataset folder) before writing it."""
        folder = Path(folder)
        real = folder.resolve()
        for source in self._input_paths:  # resolved here: read() registers thousands, folders are few
            source_real = source.resolve()
            if source_real == real or _inside(source_real, real):
                raise OutputError(
                    f"output folder {folder} holds the input {source}: replacing the folder would delete what "
                    f"this {self.verb} reads, not even --overwrite allows it; choose an output outside the inputs."
                )
        self._check_not_input(folder)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} is an existing file, not a folder; choose another path.")
        if not is_empty_folder(folder) and not self.allowed_to_replace(folder):
            raise OutputError(
                f"output folder {folder} already exists and is not empty: {self.hint} (the folder is "
                "replaced whole, once the new one is complete), or choose another folder."
            )
        key = self._key(folder)
        if key in self._planned:
            raise OutputError(f"{self._planned[key]} and {owner or folder} would both be written to {folder}.")
        self._planned[key] = owner or str(folder)
        return folder

    def foreign_entries(self, folder: str | os.PathLike) -> list[Path]:
        """Entries of ``folder`` gmseg did not write (by its manifest), bookkeeping and temporaries aside."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        own = gmseg_files(folder)
        return sorted(
            entry
            for entry in folder.iterdir()
            if not is_bookkeeping(entry.name)
            and entry.name not in own
            and f"{entry.name}/" not in own
            and not entry.name.endswith(".tmp")
        )

    # ----------------------------------------------------------------------------------------- writing
    def _clean(self, folder: Path) -> None:
        key = str(folder.resolve()) if folder.exists() else str(folder)
        if key not in self._cleaned and self._manifest == MANIFEST:
            self._cleaned.add(key)
            clean_stale_temporaries(folder)

    def _ensure_folder(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, recording each one gmseg created in its parent."""
        missing = []
        current = Path(os.path.abspath(folder))
        while not current.exists():
            missing.append(current)
            current = current.parent
        for created in reversed(missing):
            created.parent.mkdir(parents=True, exist_ok=True)
            try:
                created.mkdir()
            except FileExistsError:
                continue
            self._mark(created.parent, [f"{created.name}/"])
        self._clean(folder)

    def _mark(self, folder: Path, names: Iterable[str]) -> None:
        own = self._own_names(folder)
        new = [name for name in dict.fromkeys(names) if name not in own]
        _record(folder, new, self._manifest)
        own.update(new)

    def make_folder(self, folder: str | os.PathLike) -> Path:
        """Create an output folder (and missing parents), recording in each parent that gmseg created it, so
        a later run of a verb that replaces its own results (``demo``) may replace it."""
        folder = Path(folder)
        self._check_not_input(folder)
        self._ensure_folder(folder)
        return folder

    def record(self, *paths: str | os.PathLike) -> None:
        """Mark planned outputs as gmseg's, just before a :mod:`gmseg.fileio` writer renames them into place.

        For writers that take a path and are atomic themselves (``write_mask_png``, ``save_split``);
        :meth:`write`, :meth:`write_text`, :meth:`save` and :meth:`write_folder` call it for you.
        """
        by_folder: dict[Path, list[str]] = {}
        for path in map(Path, paths):
            if self._key(path) not in self._planned:
                self.plan(path)
            by_folder.setdefault(path.parent, []).append(path.name)
        for folder, names in by_folder.items():
            self._ensure_folder(folder)
            self._mark(folder, names)

    def write(self, path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
        """Write one output atomically through ``write(handle)`` (planned now if it was not)."""
        path = Path(path)
        self.record(path)
        return atomic_write(path, write)

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        return self.write(path, lambda handle: handle.write(text.encode("utf-8")))

    def save(self, path: str | os.PathLike, save: Callable[[Path], object]) -> Path:
        """Write one output with ``save(path)``, a writer that is atomic itself (a :mod:`gmseg.fileio` user)."""
        path = Path(path)
        self.record(path)
        save(path)
        return path

    def write_folder(self, folder: str | os.PathLike, fill: Callable[[Path], object]) -> Path:
        """Write a whole folder: ``fill(staging)`` beside it, then swapped in (planned now if it was not)."""
        folder = Path(folder)
        if self._key(folder) not in self._planned:
            self.plan_folder(folder)
        self._ensure_folder(folder.parent)
        self._mark(folder.parent, [f"{folder.name}/"])
        return atomic_folder(folder, fill)
