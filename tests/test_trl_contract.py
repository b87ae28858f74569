"""What the toolkit relies on from TRL, checked against the pinned release (alignment/trl_api.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version

import pytest

from alignment.trl_api import TrlParser


@dataclass
class _Args:
    alpha: int = 1
    name: str = "x"


def test_trl_is_the_pinned_release():
    assert version("trl") == "1.12.0"


def test_trl_parser_reads_yaml_lets_cli_override_and_sets_env(tmp_path, monkeypatch):
    monkeypatch.delenv("RLAIF_UU_CONTRACT", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("alpha: 5\nname: from_yaml\nenv:\n  RLAIF_UU_CONTRACT: set\n")
    (args,) = TrlParser((_Args,)).parse_args_and_config(["--config", str(config), "--name", "from_cli"])
    assert (args.alpha, args.name) == (5, "from_cli")
    assert os.environ["RLAIF_UU_CONTRACT"] == "set"


def test_trl_parser_rejects_unknown_yaml_keys_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("alpha: 5\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        TrlParser((_Args,)).parse_args_and_config(["--config", str(config)])
    with pytest.raises(ValueError, match="bogus"):
        TrlParser((_Args,)).parse_args_and_config(["--bogus", "1"])
