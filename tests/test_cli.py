"""The recipes' command line (refinement.cli) in real processes: an expected error is one `error:` line and status 2
under python and under accelerate launch, `--debug`/RLAIF_DEBUG shows its traceback, an unexpected error keeps its
traceback; the console filter drops library noise and keeps real warnings."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, import_recipe, write_jsonl

from refinement.cli import ConsoleFilter, fresh_head_report, run_recipe
from refinement.data import DataError

refine_classifier = import_recipe("refine_classifier")

ACCELERATE = Path(sys.executable).with_name("accelerate")
REFINE_YAML = "recipes/configs/refine/cpu_minilm.yaml"


def run_process(argv: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run argv from the repository root with the Hub off; returns the finished process (text output)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("RLAIF_DEBUG", None) if "RLAIF_DEBUG" not in (env or {}) else None
    return subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def recipe(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_process([sys.executable, f"recipes/{name}.py", *args], env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def bad_labels(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "response": "r", "pseudo_label": 3}])


def test_a_data_error_is_one_line_and_status_2(tmp_path):
    done = recipe("refine_classifier", "--config", REFINE_YAML, "--dataset_path", str(bad_labels(tmp_path)),
                  "--score_column", "none", "--output_dir", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [f"error: {tmp_path / 'pairs.jsonl'}: field 'pseudo_label' row 0 has value 3; "
                                        "expected 0 or 1"]


def test_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["--config", REFINE_YAML, "--dataset_path", str(bad_labels(tmp_path)), "--score_column", "none",
            "--output_dir", str(tmp_path / "run")]
    done = recipe("refine_classifier", *argv, env={"RLAIF_DEBUG": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr and "DataError" in done.stderr
    assert not error_lines(done.stderr)
    with pytest.raises(DataError):
        run_recipe(refine_classifier.main, refine_classifier.make_parser().parse_args_and_config,
                   argv=[*argv, "--debug"])


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """refine_classifier through run_recipe in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as stop:
        run_recipe(refine_classifier.main, refine_classifier.make_parser().parse_args_and_config, argv=argv)
    return stop.value.code, capsys.readouterr().err


def test_a_bad_setting_is_one_line(tmp_path, capsys):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("dataset_path: x.jsonl\nnum_roundz: 3\n")
    for argv, expected in ((["--config", REFINE_YAML, "--loss", "bogus"], "loss='bogus': choose one of"),
                           (["--config", str(unknown)], "num_roundz"),
                           (["--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
                           (["--config", REFINE_YAML, "--dataset_path", ""], "--dataset_path and --output_dir")):
        status, stderr = run_in_process(argv, capsys)
        assert status == 2 and "Traceback" not in stderr, stderr
        (line,) = stderr.splitlines()
        assert line.startswith("error: ") and expected in line


@pytest.mark.parametrize("name, config", [("safety_ppo", "ppo"), ("safety_grpo", "grpo")])
def test_the_rl_recipes_stop_in_one_line_and_log_into_their_output_dir(tmp_path, name, config):
    out = tmp_path / "run"
    done = recipe(name, "--config", f"recipes/configs/{config}/cpu_smollm2.yaml", "--output_dir", str(out),
                  "--reward_model", str(tmp_path / "no_reward"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"error: --reward_model {tmp_path / 'no_reward'}: no exported classifier there")
    assert line in (out / "run.log").read_text()  # the full log goes to <output_dir>/run.log


def test_an_unexpected_error_keeps_its_traceback():
    script = ("from refinement.cli import run_recipe\n"
              "def main(n):\n    raise RuntimeError('a bug, not a bad input')\n"
              "run_recipe(main, lambda argv: (1,))\n")
    done = run_process([sys.executable, "-c", script])
    assert done.returncode == 1 and "Traceback" in done.stderr and "RuntimeError: a bug" in done.stderr
    assert not error_lines(done.stderr)


@pytest.mark.slow
def test_under_accelerate_launch(tmp_path):
    """accelerate maps every failed child to status 1 and adds its own CalledProcessError traceback unless -q: the
    child's line comes first, before that traceback; with -q it is all there is."""
    argv = ["recipes/refine_classifier.py", "--config", REFINE_YAML, "--dataset_path", str(bad_labels(tmp_path)),
            "--score_column", "none", "--output_dir", str(tmp_path / "run")]
    launch = [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    loud = run_process([*launch, *argv])
    assert loud.returncode == 1 and len(error_lines(loud.stderr)) == 1
    before_traceback = loud.stderr.split("Traceback")[0]
    assert error_lines(before_traceback) and "CalledProcessError" in loud.stderr
    quiet = run_process([*launch[:2], "-q", *launch[2:], *argv])
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert error_lines(quiet.stderr) == error_lines(loud.stderr)


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_the_console_filter_drops_noise_and_keeps_real_warnings():
    keep = ConsoleFilter().filter
    assert not keep(record("accelerate.accelerator", logging.INFO, "The used dataset had no length, returning "
                           "gathered tensors. You should drop the remainder yourself."))
    assert not keep(record("bitsandbytes.backends.cpu.ops", logging.WARNING, "Failed to load CPU gemm_4bit_forward "
                           "from kernels-community: No module named 'kernels'."))
    assert not keep(record("transformers.modeling_utils", logging.INFO, "loading weights file x"))
    assert keep(record("transformers.modeling_utils", logging.WARNING, "Some weights were not used"))
    assert keep(record("py.warnings", logging.WARNING, "UserWarning: torch.tensor results are not reproducible"))
    assert keep(record("refinement.loop", logging.INFO, "resuming runs/x after round 2"))
    assert not keep(record("refinement.loop", logging.DEBUG, "detail"))
    quiet = record("alignment.stages", logging.INFO, "stage refine: --config x")
    quiet.file_only = True
    assert not keep(quiet)


def test_a_fresh_score_head_report_is_noise_but_other_load_reports_are_not():
    fresh = ("LlamaForSequenceClassification LOAD REPORT from: p\nKey          | Status  | \n"
             "-------------+---------+-\nscore.weight | MISSING | \n\nNotes:\n- MISSING: newly initialized")
    assert fresh_head_report(fresh)
    assert not fresh_head_report(fresh.replace("score.weight | MISSING", "model.layers.0.q.weight | MISSING"))
    assert not fresh_head_report(fresh.replace("score.weight | MISSING", "score.weight | MISMATCH"))
    assert not fresh_head_report("Some weights were not used")
