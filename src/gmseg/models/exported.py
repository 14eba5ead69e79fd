"""A model folder written by ``gmseg export``: one graph (ONNX, or OpenVINO IR) from images to probabilities.

The folder holds the graph file(s) and gmseg's ``config.json`` (``_class_name: ExportedModel``): the
inference contract (size, intensity, labels, threshold), the format, the class it was exported from and
each graph file's SHA-256, so a corrupt or swapped graph is refused by name when the folder is loaded.
Every verb takes it like any other model folder; it runs on ``onnxruntime`` or ``openvino``
(``pip install 'gmseg[deploy]'``), and it is for inference only: training keeps the torch model.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..labels import BINARY, LabelSet
from .base import CLASS_KEY, SegmentationModel

#: format -> (graph file, the other files it needs, the backend it runs on by default).
GRAPH_FORMATS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "onnx": ("model.onnx", (), "onnxruntime"),
    "openvino": ("model.xml", ("model.bin",), "openvino"),
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ExportConfig:
    """An exported folder's ``config.json``: what inference needs, and which files hold the graph."""

    format: str
    exported_from: str
    image_size: int
    intensity: str = "none"
    threshold: float = 0.5
    labels: dict[str, int] | None = None
    # How a volume's voxels become the input (gmseg.data.normalization.VolumeInput), as the source model
    # recorded it; None: a model trained on 2D images.
    volume: dict[str, Any] | None = None
    # "int8": quantised by gmseg export --precision int8 on ``calibration`` (source, stage, seed, count, names).
    precision: str = "fp32"
    calibration: dict[str, Any] | None = None
    sha256: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"gmseg_version", CLASS_KEY})
        missing = sorted({"format", "exported_from", "image_size"} - set(data))
        if unknown or missing:
            raise ConfigError(f"an exported model's config has unknown keys {unknown} or lacks {missing}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.check()
        return config

    def check(self) -> None:
        from ..data.transforms import INTENSITIES

        problems = []
        if self.format not in GRAPH_FORMATS:
            problems.append(f"format must be one of {list(GRAPH_FORMATS)}, got {self.format!r}")
        elif set(self.sha256) != set(self.files):
            problems.append(f"sha256 must name the graph files {list(self.files)}, got {sorted(self.sha256)}")
        size = self.image_size
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 8 and size % 8 == 0):
            problems.append(f"image_size must be a positive multiple of 8, got {size!r}")
        if self.intensity not in INTENSITIES:
            problems.append(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
            problems.append(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        if self.precision not in ("fp32", "int8"):
            problems.append(f"precision must be fp32 or int8, got {self.precision!r}")
        if problems:
            raise ConfigError("invalid exported model config: " + "; ".join(problems))
        self.label_set()
        self.volume_input()

    @property
    def files(self) -> tuple[str, ...]:
        graph, others, _ = GRAPH_FORMATS[self.format]
        return (graph, *others)

    def label_set(self) -> LabelSet:
        return BINARY if self.labels is None else LabelSet.from_labels(self.labels)

    def volume_input(self) -> Any:
        from ..data.normalization import VolumeInput

        return None if self.volume is None else VolumeInput.from_dict(self.volume)

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {CLASS_KEY: ExportedModel.__name__, **asdict(self), "gmseg_version": __version__}


class ExportedModel(SegmentationModel):
    """An exported graph behind the model contract: ``predict_proba`` and the inference fields; no training."""

    name = "exported"

    @staticmethod
    def config_problems(config: dict[str, Any]) -> list[str]:
        """The exported folder's config.json schema (:class:`ExportConfig`), checked where it is loaded."""
        try:
            ExportConfig.from_dict(config)
        except (ConfigError, TypeError) as error:
            return [str(error)]
        return []

    def __init__(self, config: ExportConfig, folder: str | Path):
        super().__init__()
        self.export_config = config
        self.folder = Path(folder)
        self.labels = config.label_set()
        self._predictor: Any = None

    @property
    def image_size(self) -> int:
        return int(self.export_config.image_size)

    @property
    def intensity(self) -> str:
        return self.export_config.intensity

    @property
    def threshold(self) -> float:
        return float(self.export_config.threshold)

    @property
    def volume_input(self) -> Any:
        return self.export_config.volume_input()

    @property
    def graph_format(self) -> str:
        return self.export_config.format

    @property
    def graph_file(self) -> Path:
        return self.folder / self.export_config.files[0]

    @property
    def default_backend(self) -> str:
        return GRAPH_FORMATS[self.graph_format][2]

    @property
    def trainable(self) -> torch.nn.Module:
        raise ConfigError(f"{self.folder} is an exported model, for inference only; train the torch model it came from")

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities from the graph on its default backend (built on first use, on the CPU)."""
        if self._predictor is None:
            from ..inference import make_predictor

            self._predictor = make_predictor(self, "cpu")
        return self._predictor(image)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "format": self.graph_format, "exported_from": self.export_config.exported_from}

    def check_files(self) -> None:
        """Every graph file present and as exported (SHA-256): a truncated copy or a graph from another
        export is refused here, by name, before any runtime reads it."""
        for name in self.export_config.files:
            path = self.folder / name
            if not path.is_file():
                raise CheckpointError(f"{path} is missing: the exported model folder is incomplete; export it again")
            if file_sha256(path) != self.export_config.sha256[name]:
                raise CheckpointError(
                    f"{path} is not the graph exported into this folder (its SHA-256 differs from config.json's): "
                    "it is corrupt or comes from another export; export the model again with 'gmseg export'"
                )

    # ------------------------------------------------------------------ model folder (the base's hooks)
    def to_config(self) -> dict[str, Any]:
        return asdict(self.export_config)

    @property
    def saved_module(self) -> None:
        """No ``model.safetensors``: the graph files are the weights."""
        return None

    def save_artefacts(self, folder: Path) -> dict[str, Any]:
        """The graph files, copied unless ``folder`` is the model's own (their SHA-256 stay in the config)."""
        import shutil

        for name in self.export_config.files:
            if (folder / name).resolve() != (self.folder / name).resolve():
                shutil.copyfile(self.folder / name, folder / name)
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path, **not_needed: Any) -> ExportedModel:
        """The folder's graph, its files verified; loading keywords of torch models (a first stage) do not
        concern it."""
        model = cls(ExportConfig.from_dict(config), folder)
        model.check_files()
        return model
