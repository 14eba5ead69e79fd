"""Train/val/test split files: reading the release's pickles safely, JSON, and deriving validation sets.

A split is ``dict[str, list[str]]`` with keys among ``"train"``, ``"val"``, ``"test"`` and image stems
as values. The paper's split files are pickles; unpickling runs arbitrary code, so they are read with an
unpickler that refuses every global and can therefore build nothing but builtin containers and strings.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gmseg.errors import ConfigError, DataError

__all__ = ["SPLIT_KEYS", "load_split", "random_split", "save_split", "validate_split", "with_validation"]

SPLIT_KEYS: tuple[str, ...] = ("train", "val", "test")
PROTOCOLS: tuple[str, ...] = ("standard", "paper")


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names code (a class or function): refused, never a sign of a merely damaged file."""


class _RefusingUnpickler(pickle.Unpickler):
    """Builds only builtin containers, strings and numbers: any class or function lookup is refused.

    Every code-execution route in pickle (REDUCE, INST, OBJ, NEWOBJ, BUILD with __setstate__) needs a
    callable, and callables only enter a pickle through ``find_class`` (or persistent ids), so refusing
    those makes loading inert.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise RefusedPickle(f"refused to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refused persistent id")


def _validate_name(name: Any, where: str, problems: list[str]) -> None:
    if not isinstance(name, str):
        problems.append(f"{where}: entry {name!r} is {type(name).__name__}, expected a string")
    elif not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        # Names become file paths (root/images/NAME.png): never let a split file point outside root.
        bad = next((c for c in ("/", "\\", "\x00") if c in name), None)
        what = "a NUL byte" if bad == "\x00" else "a path separator on some system"
        why = f" (it holds {bad!r}, {what}; rename the file)" if bad else ""
        problems.append(f"{where}: {name!r} is not a plain file stem{why}")


def validate_split(split: Any, source: str = "split") -> dict[str, list[str]]:
    """Check a split's structure and return a clean copy; raise one DataError listing every problem.

    Accepts both ``{"train": [...]}`` and the release's ``{"train": {"name_list": [...]}}``.
    Overlap of train with val or test is an error (leakage); val may equal test (the "paper" protocol).
    """
    if not isinstance(split, Mapping):
        raise DataError(
            f"split file {source} has the wrong structure",
            [f"{source}: top level is {type(split).__name__}, expected a mapping with keys {list(SPLIT_KEYS)}"],
        )
    problems: list[str] = []
    out: dict[str, list[str]] = {}
    for key, value in split.items():
        where = f"{source} [{key!r}]"
        if key not in SPLIT_KEYS:
            problems.append(f"{where}: unknown key, expected keys among {list(SPLIT_KEYS)}")
            continue
        if isinstance(value, Mapping) and "name_list" in value:
            value = value["name_list"]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: is {type(value).__name__}, expected a list of names")
            continue
        before = len(problems)
        for name in value:
            _validate_name(name, where, problems)
        if len(problems) > before:
            continue
        dupes = sorted(n for n, c in Counter(value).items() if c > 1)
        if dupes:
            problems.append(f"{where}: duplicate names {dupes[:10]}")
        out[key] = list(value)
    if not out and not problems:
        problems.append(f"{source}: no split found, expected keys among {list(SPLIT_KEYS)}")
    train = set(out.get("train", ()))
    for other in ("val", "test"):
        leak = sorted(train & set(out.get(other, ())))
        if leak:
            problems.append(f"{source}: {len(leak)} name(s) in both train and {other}, e.g. {leak[:5]}")
    if problems:
        raise DataError(f"invalid split file {source}", problems)
    return {k: out[k] for k in SPLIT_KEYS if k in out}


def load_split(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a split from .json, or from a release .pkl/.pickle through the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}", [f"{path}: does not exist; check the path"])
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read split file {path}", [f"{path}: {exc}; fix the JSON"]) from exc
    elif suffix in (".pkl", ".pickle"):
        try:
            data = _RefusingUnpickler(io.BytesIO(path.read_bytes())).load()
        except RefusedPickle as exc:
            raise DataError(
                f"refused to load split file {path}",
                [
                    f"{path}: {exc}. A split pickle should contain only dicts, lists and strings; this one "
                    "references code and may be malicious. Do not load it with pickle; if you trust its "
                    'source, convert it to JSON ({"train": [...], "test": [...]}) and use that instead'
                ],
            ) from exc
        except (
            pickle.UnpicklingError,  # "pickle data was truncated", a bad opcode: damage, not code
            OSError,
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            AttributeError,
            RecursionError,
            MemoryError,
        ) as exc:
            raise DataError(
                f"cannot read split file {path}",
                [
                    f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc}); re-download it or "
                    "provide the split as JSON"
                ],
            ) from exc
    else:
        raise DataError(f"unsupported split file {path}", [f"{path}: expected a .json, .pkl or .pickle file"])
    return validate_split(data, str(path))


def save_split(split: Mapping[str, Iterable[str]], path: str | os.PathLike[str]) -> None:
    """Write a split as JSON (atomically: temp file + rename), keys in train/val/test order."""
    clean = validate_split({k: list(v) for k, v in split.items()}, str(path))
    from gmseg.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(clean, indent=2) + "\n")


def _check_fraction(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{what} must lie strictly between 0 and 1, got {value}")
    return value


def _holdout_size(n: int, fraction: float) -> int:
    """round(fraction * n), but at least 1 and at most n - 1 when n >= 2 so neither side is empty."""
    if n < 2:
        return 0
    return min(max(1, round(fraction * n)), n - 1)


def with_validation(
    split: Mapping[str, list[str]], fraction: float = 0.1, seed: int = 0, protocol: str = "standard"
) -> dict[str, list[str]]:
    """Return a copy of ``split`` that has a "val" list.

    ``standard``: keep an existing val; otherwise move a seeded random ``fraction`` of train to val, so
    checkpoint selection never sees test images. ``paper``: val = test, train unchanged: this is what
    the release did (it selects checkpoints on the test split), offered only to reproduce its numbers.
    ``fraction`` 0 carves nothing: val is empty unless the split already has one.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown validation protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    out = {k: list(v) for k, v in split.items()}
    if protocol == "paper":
        if "test" not in out:
            raise ConfigError("the 'paper' validation protocol needs a split with a 'test' list")
        out["val"] = list(out["test"])
        return {k: out[k] for k in SPLIT_KEYS if k in out}
    overlap = sorted(set(out.get("val", ())) & set(out.get("test", ())))
    if overlap:  # the standard protocol never selects checkpoints on test images
        raise DataError(
            f"the split's validation and test lists share {len(overlap)} name(s), e.g. {overlap[:5]}: checkpoints "
            "would be chosen on test images",
            [
                "remove them from 'val' (or drop 'val' and let data.val_fraction carve one from train); "
                "data.protocol=paper reproduces the release, which selects on the test split on purpose"
            ],
        )
    if fraction == 0:  # no validation wanted: the trainer then keeps the last epoch
        out.setdefault("val", [])
        return {k: out[k] for k in SPLIT_KEYS if k in out}
    fraction = _check_fraction(fraction, "validation fraction")
    if "val" in out:
        return {k: out[k] for k in SPLIT_KEYS if k in out}
    train = out.get("train", [])
    n_val = _holdout_size(len(train), fraction)
    # Sample from the sorted names so the result depends only on the set of names and the seed.
    chosen = set(random.Random(seed).sample(sorted(train), n_val))
    out["train"] = [n for n in train if n not in chosen]
    out["val"] = [n for n in train if n in chosen]
    return {k: out[k] for k in SPLIT_KEYS if k in out}


def random_split(names: Iterable[str], test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Seeded random train/test split of ``names``, each list sorted: for datasets without a split file."""
    test_fraction = _check_fraction(test_fraction, "test fraction")
    unique = sorted(set(names))
    shuffled = list(unique)
    random.Random(seed).shuffle(shuffled)
    n_test = _holdout_size(len(unique), test_fraction)
    test = set(shuffled[:n_test])
    return {"train": [n for n in unique if n not in test], "test": [n for n in unique if n in test]}
