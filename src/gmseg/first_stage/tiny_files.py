"""The upstream tiny autoencoders' file names: ``<name>_encoder.*`` + ``<name>_decoder.*`` pairs in a folder.

Kept apart from the adapter (:mod:`.tiny`) because identifying a source (:mod:`.sources`) needs only the
names, never the weights or diffusers.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import FirstStageError

#: Upstream file endings, the first preferred when a folder holds both.
TINY_SUFFIXES = (".safetensors", ".pth")
TINY_FILE = re.compile(r"^(?P<name>.+)_(?P<part>encoder|decoder)(?P<suffix>\.safetensors|\.pth)$")


def tiny_file_name(path: Path) -> str | None:
    """``taef1`` for ``taef1_encoder.safetensors`` (or its decoder), None for any other file name."""
    match = TINY_FILE.match(Path(path).name)
    return None if match is None else match["name"]


def tiny_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Every ``<name>_encoder.*`` / ``<name>_decoder.*`` pair in ``folder``: name -> (encoder, decoder)."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        match = TINY_FILE.match(path.name)
        if match is not None and path.is_file():
            found.setdefault((match["name"], match["part"]), []).append(path)

    def preferred(files: list[Path]) -> Path:
        return min(files, key=lambda p: TINY_SUFFIXES.index(p.suffix))

    return {
        name: (preferred(files), preferred(found[(name, "decoder")]))
        for (name, part), files in sorted(found.items())
        if part == "encoder" and (name, "decoder") in found
    }


def find_tiny_files(folder: Path, name: str | None = None) -> tuple[str, Path, Path] | None:
    """The pair named ``name`` in ``folder``; without a name the only pair, or ``taesd``'s (what sources
    recorded before they recorded a name meant). None when absent."""
    pairs = tiny_pairs(folder)
    if name is None:
        if len(pairs) == 1:
            name = next(iter(pairs))
        elif "taesd" in pairs:
            name = "taesd"
        elif pairs:
            raise FirstStageError(
                f"{folder} holds several tiny autoencoders ({', '.join(pairs)}) and the source names none."
            )
        else:
            return None
    if name not in pairs:
        return None
    return name, *pairs[name]
