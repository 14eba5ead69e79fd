"""The run configs shipped with the package: one per public dataset, plus the CPU (TAESD) schedules.

They are package data, so ``pip install gmseg`` carries them: ``gmseg train --config busi`` works from any
folder, and a user's own YAML file is used wherever it lies. :func:`config_path` decides which is meant.
"""

from __future__ import annotations

import os
from pathlib import Path

from gmseg.errors import ConfigError

__all__ = ["CONFIG_DIR", "config_path", "packaged_configs"]

CONFIG_DIR = Path(__file__).resolve().parent
"""The folder holding the packaged ``*.yaml`` configs."""


def packaged_configs() -> list[str]:
    """Names of the packaged configs (file names without ``.yaml``), sorted."""
    return sorted(p.name[: -len(".yaml")] for p in CONFIG_DIR.glob("*.yaml") if p.is_file())


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The config file meant by ``name_or_path``.

    An existing file is returned as is (a user's own config, or a packaged one named by its path); a bare
    name such as ``busi`` or ``busi.yaml`` is the packaged config of that name; anything else is a
    :class:`ConfigError` listing the packaged names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = os.fspath(name_or_path)
    bare = text and path.name == text and text not in (".", "..")
    if bare:
        name = text[: -len(".yaml")] if text.endswith(".yaml") else text
        packaged = CONFIG_DIR / f"{name}.yaml"
        if packaged.is_file():
            return packaged
    names = ", ".join(packaged_configs())
    what = "is not an existing file nor a packaged config" if bare else "does not exist"
    raise ConfigError(f"config {text!r} {what}; pass a YAML file or one of the packaged configs: {names}")
