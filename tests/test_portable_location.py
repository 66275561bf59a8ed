"""core.checkpoints.portable_location: paths in metadata and cards never name this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import checkpoints
from core.checkpoints import portable_location


def test_project_and_shared_paths_become_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "clone" / "main"
    (root / "checkpoints" / "mini" / "full").mkdir(parents=True)
    elsewhere = tmp_path / "data" / "shared"
    (elsewhere / "dialogsum").mkdir(parents=True)
    (tmp_path / "clone" / "shared").symlink_to(elsewhere)  # ../shared as a link, as CI may have it
    monkeypatch.setattr(checkpoints, "PROJECT_ROOT", root)
    assert portable_location(str(root / "checkpoints" / "mini" / "full")) == "checkpoints/mini/full"
    assert portable_location(str(tmp_path / "clone" / "shared" / "dialogsum")) == "../shared/dialogsum"
    assert portable_location(str(elsewhere / "dialogsum")) == "shared/dialogsum"  # outside: last two parts
    assert portable_location("knkarthick/dialogsum") == "knkarthick/dialogsum"  # a hub id stays
