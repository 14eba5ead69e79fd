"""Split files: restricted unpickling of the release format, JSON, validation protocols."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from gmseg.data.splits import load_split, random_split, save_split, with_validation
from gmseg.errors import ConfigError, DataError

SHARED = Path(__file__).parents[1] / ".." / "shared"


def _write_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_load_release_pickle_format(tmp_path: Path) -> None:
    obj = {"train": {"name_list": ["a", "b", "c"]}, "test": {"name_list": ["d"]}}
    split = load_split(_write_pickle(tmp_path / "s.pkl", obj))
    assert split == {"train": ["a", "b", "c"], "test": ["d"]}


def test_json_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    split = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    save_split(split, tmp_path / "out" / "split.json")
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == split
    assert load_split(tmp_path / "out" / "split.json") == split
    assert os.listdir(tmp_path / "out") == ["split.json"]


class _SystemMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _ExecMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_SystemMarker, _ExecMarker])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    evil = {"train": {"name_list": ["a", payload(marker)]}, "test": {"name_list": ["b"]}}
    path = _write_pickle(tmp_path / "evil.pkl", evil)
    with pytest.raises(DataError) as info:
        load_split(path)
    message = str(info.value)
    assert str(path) in message
    assert "malicious" in message and "JSON" in message
    assert not marker.exists()


def test_pickle_with_any_class_is_refused(tmp_path: Path) -> None:
    path = _write_pickle(tmp_path / "s.pickle", {"train": {"name_list": ["a"]}, "test": {"name_list": {"b"}}})
    # a set needs no global in protocol >= 4, but is not a list: structure error, not a crash
    with pytest.raises(DataError, match="expected a list"):
        load_split(path)
    path = _write_pickle(tmp_path / "p.pkl", {"train": [Path("a")]})
    with pytest.raises(DataError, match="malicious"):
        load_split(path)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (["a", "b"], "top level"),
        ({"train": "abc"}, "expected a list"),
        ({"train": ["a", 3]}, "expected a string"),
        ({"training": ["a"]}, "unknown key"),
        ({"train": ["a"], "test": ["a"]}, "both train and test"),
        ({"train": ["../../etc/passwd"]}, "plain file stem"),
        ({"train": ["a", "a"]}, "duplicate"),
        ({}, "no split"),
    ],
)
def test_bad_structure_is_reported(tmp_path: Path, obj: object, fragment: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=fragment) as info:
        load_split(path)
    assert str(path) in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(DataError, match="s.json"):
        load_split(tmp_path / "s.json")
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"train": ["a"]})[:-3])
    with pytest.raises(DataError, match="t.pkl"):
        load_split(tmp_path / "t.pkl")
    (tmp_path / "s.txt").write_text("a\n")
    with pytest.raises(DataError, match="s.txt"):
        load_split(tmp_path / "s.txt")
    with pytest.raises(DataError, match="missing.json"):
        load_split(tmp_path / "missing.json")


def test_with_validation_standard() -> None:
    split = {"train": [f"n{i:03d}" for i in range(50)], "test": ["t1", "t2"]}
    out = with_validation(split, fraction=0.1, seed=3)
    assert len(out["val"]) == 5 and len(out["train"]) == 45
    assert set(out["val"]).isdisjoint(out["train"]) and set(out["val"]).isdisjoint(out["test"])
    assert set(out["val"]) | set(out["train"]) == set(split["train"])
    assert out["test"] == split["test"]
    assert len(split["train"]) == 50  # input untouched
    assert with_validation(split, fraction=0.1, seed=3) == out  # seeded
    assert with_validation(split, fraction=0.1, seed=4)["val"] != out["val"]
    shuffled = {"train": list(reversed(split["train"])), "test": split["test"]}
    assert set(with_validation(shuffled, fraction=0.1, seed=3)["val"]) == set(out["val"])


def test_with_validation_small_and_existing() -> None:
    assert len(with_validation({"train": ["a", "b"], "test": ["c"]}, fraction=0.01)["val"]) == 1
    assert with_validation({"train": ["a"], "test": ["c"]})["val"] == []
    given = {"train": ["a", "b"], "val": ["v"], "test": ["c"]}
    assert with_validation(given) == given


def test_with_validation_paper_reproduces_release() -> None:
    split = {"train": ["a", "b", "c"], "test": ["d", "e"]}
    out = with_validation(split, protocol="paper")
    assert out == {"train": ["a", "b", "c"], "val": ["d", "e"], "test": ["d", "e"]}
    with pytest.raises(ConfigError, match="standard"):
        with_validation(split, protocol="bogus")
    with pytest.raises(ConfigError):
        with_validation(split, fraction=1.5)


def test_random_split_seeded_sorted_disjoint() -> None:
    names = [f"img{i}" for i in range(20)]
    a = random_split(names, test_fraction=0.25, seed=1)
    assert len(a["test"]) == 5 and len(a["train"]) == 15
    assert a["train"] == sorted(a["train"]) and a["test"] == sorted(a["test"])
    assert set(a["train"]).isdisjoint(a["test"]) and set(a["train"]) | set(a["test"]) == set(names)
    assert random_split(list(reversed(names)), test_fraction=0.25, seed=1) == a
    assert random_split(names, test_fraction=0.25, seed=2) != a
    tiny = random_split(["x", "y"], test_fraction=0.01)  # neither side may end up empty
    assert len(tiny["train"]) == 1 and len(tiny["test"]) == 1
    with pytest.raises(ConfigError):
        random_split(names, test_fraction=0)


@pytest.mark.parametrize(
    ("dataset", "n_train", "n_test"),
    [("bus", 132, 31), ("busi", 517, 130), ("glas", 85, 80), ("ham10000", 8015, 2000), ("kvasir", 472, 118)],
)
def test_release_split_files_load(dataset: str, n_train: int, n_test: int) -> None:
    path = SHARED / "splits" / f"{dataset}_train_test_names.pkl"
    if not path.is_file():
        pytest.skip(f"shared split file not available: {path}")
    split = load_split(path)
    assert (len(split["train"]), len(split["test"])) == (n_train, n_test)
