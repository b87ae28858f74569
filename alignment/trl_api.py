"""Every TRL name the toolkit uses, imported in this one module.

TRL moves things between releases (PPO went to trl.experimental and was deleted in 1.13), so recipes and
packages import TRL only through here, and tests/test_trl_contract.py checks the behaviour we rely on: a TRL
upgrade breaks loudly in one place."""
from __future__ import annotations

from trl import TrlParser

__all__ = ["TrlParser"]
