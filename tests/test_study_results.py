"""The study scripts skip a part whose folder holds `done` and retrain (deleting the run folder) otherwise, so
every committed part with scores must commit its `done` too, or a fresh clone would redo hours of training."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("cross_domain", "multiclass", "generalization_levers", "latent_spaces")
SCORES = ("generalization", "test", "bus-train")  # the folders a finished part's scoring writes


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to source bench/lib.sh")


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the committed study results cannot be listed")
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace", check=check
    )


def _scored_parts(tracked: list[str]) -> set[str]:
    """Part folders (bench/results/<study>/.../<part>) with committed scores."""
    parts = set()
    for path in tracked:
        pieces = path.split("/")
        for i, piece in enumerate(pieces[3:], start=3):
            if piece in SCORES:
                parts.add("/".join(pieces[:i]))
                break
    return parts


def test_every_scored_study_part_commits_its_done_marker():
    tracked = _git("ls-files", *(f"bench/results/{s}" for s in STUDIES)).stdout.splitlines()
    parts = _scored_parts(tracked)
    assert parts, "no committed study results found under bench/results"
    missing = sorted(p for p in parts if f"{p}/done" not in tracked)
    assert not missing, f"scored parts without a committed `done` (a fresh clone would retrain them): {missing}"


@pytest.mark.parametrize("study", STUDIES)
def test_done_markers_are_not_ignored(study):
    probe = f"bench/results/{study}/some-scale/some-part/done"
    ignored = _git("check-ignore", "-q", probe, check=False).returncode == 0
    assert not ignored, f"{probe} is ignored by .gitignore: finished parts would not be skipped on a fresh clone"


def _schedule(scale: str, model: str, factor: int = 1) -> dict[str, int]:
    """The --set epochs that bench/lib.sh gives MODEL at SCALE."""
    script = f". bench/lib.sh && study_schedule {scale} && schedule {model} {factor}"
    words = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace", check=True
    ).stdout
    pairs = [w.split("=", 1) for w in words.split() if "epochs=" in w]
    return {key: int(value) for key, value in pairs}


@needs_bash
@pytest.mark.parametrize("model", ["gms", "unet"])
def test_full_scale_is_a_third_of_long(model):
    """The full study must fit ~5 h on the 2-core machine: every epoch count of long, divided by 3."""
    full, long = _schedule("full", model), _schedule("long", model)
    assert full.keys() == long.keys()
    for key in full:
        assert 1 <= full[key] < long[key] and abs(full[key] - long[key] / 3) <= 1, (key, full[key], long[key])
    assert _schedule("full", model, 4)["train.epochs"] == 4 * full["train.epochs"]  # BUS: step-matched


@needs_bash
def test_unknown_scale_is_refused():
    done = subprocess.run(
        ["bash", "-c", ". bench/lib.sh && study_schedule huge"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert done.returncode != 0 and "unknown SCALE 'huge'" in done.stderr
