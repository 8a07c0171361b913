"""Repository scanning, version directories, version policies and version strings."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core import repository
from seawall.errors import InvalidArgumentError, NotFoundError


def _policy(text: str) -> model_config_pb2.ModelVersionPolicy:
    return text_format.Parse(text, model_config_pb2.ModelVersionPolicy())


def test_scan_finds_models_and_reports_duplicates(tmp_path: Path) -> None:
    for root, name in (("a", "m1"), ("a", "m2"), ("b", "m2"), ("a", ".hidden"), ("a", "bad name")):
        (tmp_path / root / name).mkdir(parents=True)
    (tmp_path / "a" / "file.txt").write_text("")
    found = repository.scan([str(tmp_path / "a"), str(tmp_path / "b")])
    assert sorted(found) == ["m1", "m2"]
    assert found["m1"].error == ""
    assert "more than one model repository" in found["m2"].error


def test_scan_of_a_missing_root_fails(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        repository.scan([str(tmp_path / "nope")])


def test_version_directories_are_positive_integers_without_leading_zeros(tmp_path: Path) -> None:
    for name in ("1", "3", "10", "01", "0", "abc", "-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "2").write_text("a file, not a version")
    assert repository.version_directories(str(tmp_path)) == [1, 3, 10]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [10]),
        ("latest { num_versions: 2 }", [3, 10]),
        ("all {}", [1, 3, 10]),
        ("specific { versions: [3, 1] }", [1, 3]),
    ],
)
def test_version_policies(policy: str, expected: list[int]) -> None:
    assert repository.select_versions(_policy(policy), [1, 3, 10]) == expected


def test_specific_policy_naming_a_missing_version_fails() -> None:
    with pytest.raises(InvalidArgumentError, match="version 7 is specified"):
        repository.select_versions(_policy("specific { versions: [7] }"), [1])


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a$(x)", "", "x" * 129, "a b", "a\nb", "-x"])
def test_hostile_model_names_are_invalid(name: str) -> None:
    assert not repository.is_valid_model_name(name)


@pytest.mark.parametrize("name", ["add_sub", "m.v2", "Model-1", "_x", "x" * 128])
def test_ordinary_model_names_are_valid(name: str) -> None:
    assert repository.is_valid_model_name(name)


@pytest.mark.parametrize(("text", "number"), [("", -1), ("1", 1), ("01", 1), ("0", 0)])
def test_version_strings(text: str, number: int) -> None:
    assert repository.parse_version(text) == number


@pytest.mark.parametrize("text", ["abc", "1.5", "99999999999999999999", " 1", "0x10"])
def test_bad_version_strings_use_tritons_message(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="version should be an integral value > 0"):
        repository.parse_version(text)
