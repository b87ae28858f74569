"""recipes/refine_classifier.py: YAML + CLI parsing through TrlParser, and main() end to end."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest
import yaml
from conftest import REPO, import_recipe, make_rows, write_jsonl

from refinement.config import RefineConfig

refine_classifier = import_recipe("refine_classifier")

YAML = REPO / "recipes" / "configs" / "refine" / "cpu_minilm.yaml"


def test_yaml_values_kept_and_cli_overrides_applied():
    (cfg,) = refine_classifier.make_parser().parse_args_and_config(
        ["--config", str(YAML), "--num_rounds", "2", "--loss", "uu", "--num_labeled", "0"])
    expected = yaml.safe_load(YAML.read_text())
    overrides = {"num_rounds": 2, "loss": "uu", "num_labeled": 0}
    for key, value in expected.items():
        assert getattr(cfg, key) == overrides.get(key, value), key
    assert expected["num_rounds"] != 2 and expected["loss"] != "uu" and expected["num_labeled"] != 0
    # A field in neither place keeps the dataclass default.
    defaults = RefineConfig()
    untouched = [f for f in fields(RefineConfig) if f.name not in expected and f.name not in overrides]
    assert untouched and all(getattr(cfg, f.name) == getattr(defaults, f.name) for f in untouched)


def test_unknown_yaml_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.read_text() + "not_a_field: 3\n")
    with pytest.raises(ValueError, match="not_a_field"):
        refine_classifier.make_parser().parse_args_and_config(["--config", str(bad)])


def test_invalid_loss_fails():
    with pytest.raises((ValueError, SystemExit)) as err:
        refine_classifier.make_parser().parse_args_and_config(["--config", str(YAML), "--loss", "foo"])
    if isinstance(err.value, ValueError):
        assert "loss='foo'" in str(err.value)


def test_main_runs_end_to_end(tmp_path, feature_cache_dir, capsys):
    data = write_jsonl(tmp_path / "tiny.jsonl", make_rows({"train": 120, "val": 40, "test": 40}))
    out = tmp_path / "run"
    (cfg,) = refine_classifier.make_parser().parse_args_and_config([
        "--config", str(YAML), "--dataset_path", str(data), "--output_dir", str(out),
        "--score_column", "", "--score_quantile", "None", "--head", "linear", "--max_length", "64",
        "--head_epochs", "15", "--num_rounds", "2", "--num_labeled", "50", "--feature_cache_dir",
        str(feature_cache_dir)])
    assert cfg.score_column in ("", None) and cfg.score_quantile is None
    summary = refine_classifier.main(cfg)
    assert summary == json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["selected_round"] in (1, 2)
    assert summary["config"]["num_rounds"] == 2 and summary["config"]["head"] == "linear"
    assert (out / "model" / "config.json").is_file() and (out / "report.md").is_file()
    printed = capsys.readouterr().out
    assert f"selected round {summary['selected_round']}" in printed
    test_acc = next(r for r in summary["rounds"] if r["round"] == summary["selected_round"])["quality"]["test"]
    assert f"{test_acc['accuracy']:.3f}" in printed


def test_main_requires_paths():
    (cfg,) = refine_classifier.make_parser().parse_args_and_config(["--num_rounds", "1"])
    with pytest.raises(SystemExit, match="dataset_path"):
        refine_classifier.main(cfg)


@pytest.mark.slow
def test_the_readme_example_runs_on_a_file_that_brings_its_own_pseudo_label(tmp_path, feature_cache_dir):
    """README's `accelerate launch recipes/refine_classifier.py --config .../cpu_minilm.yaml --dataset_path
    my_pairs.jsonl ...`: the YAML names a score column this file lacks, and the file's pseudo_label is used."""
    from test_cli import ACCELERATE, run_process

    data = write_jsonl(tmp_path / "my_pairs.jsonl", make_rows({"train": 120, "val": 40, "test": 40}))
    out = tmp_path / "mine"
    done = run_process([str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/refine_classifier.py",
                        "--config", str(YAML), "--dataset_path", str(data), "--output_dir", str(out),
                        "--num_rounds", "2", "--num_labeled", "50", "--loss", "robust_uu",
                        "--max_length", "64", "--head_epochs", "15", "--feature_cache_dir", str(feature_cache_dir)])
    assert done.returncode == 0, done.stderr
    assert "round-0 labels: its 'pseudo_label' column" in done.stderr
    assert "selected round" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["score_column"] == "smollm2_4shot" and len(summary["rounds"]) == 3
    assert "round-0 labels" in (tmp_path / "mine.log").read_text()  # the full log, beside the run folder


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "configs" / "refine").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_refine_yaml_parses_into_its_values(path):
    """A shipped config that a field rename or a bad value breaks fails here, not in a user's first run."""
    (cfg,) = refine_classifier.make_parser().parse_args_and_config(["--config", str(path)])
    for key, value in yaml.safe_load(path.read_text()).items():
        parsed = getattr(cfg, key)
        if isinstance(value, dict):  # a nested block (annotator:) is completed with its defaults
            parsed = {k: parsed.get(k) for k in value}
        assert parsed == value, key
