"""Resumable stages for the orchestration recipes (pipeline, generative refinement): each stage runs one recipe's
main() in this process, on the arguments that recipe's own parser reads, so a stage does exactly what the recipe
does alone. A finished stage whose arguments and input stages did not change is skipped on a rerun."""
from __future__ import annotations

import gc
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

from refinement.cli import fmt, option, unset
from refinement.io import write_json

logger = logging.getLogger(__name__)
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe_module(name: str) -> ModuleType:
    """recipes/<name>.py as a module (the recipes are scripts launched by path, not a package); loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_recipe_main(name: str, argv: list[str]):
    """recipes/<name>.py's main() on argv, parsed by the recipe's own `parse_args` or `make_parser()`."""
    module = recipe_module(name)
    parsed = module.parse_args(argv) if hasattr(module, "parse_args") else \
        module.make_parser().parse_args_and_config(argv)
    return module.main(*parsed)


def recipe_stage(name: str) -> Callable[[list[str]], object]:
    """A stage body that runs recipes/<name>.py on its argv."""
    return lambda argv: run_recipe_main(name, argv)


def overrides_option(recipe: str):
    return option(None, f"Fields of {recipe} set after its YAML: a YAML mapping, or a JSON object on the command line.")


def read_overrides(config, names: tuple[str, ...]) -> None:
    """Each named field as a dict: the command line gives a JSON object, the YAML a mapping, None gives {}."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, str) and not unset(value):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}: not a JSON object ({err.msg} at column {err.colno})") from None
        elif isinstance(value, str):
            value = None
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping of field: value, got {value!r}")
        setattr(config, name, dict(value or {}))


def as_flags(values: dict) -> list[str]:
    """`--name value` for a recipe's parser: booleans as true/false, lists as several values, mappings as JSON,
    None as `none` (which the recipes read as None)."""
    argv = []
    for name, value in values.items():
        argv.append(f"--{name}")
        if isinstance(value, bool):
            argv.append(str(value).lower())
        elif isinstance(value, (list, tuple)):
            argv += [str(v) for v in value]
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append("none" if value is None else str(value))
    return argv


@dataclass
class Stage:
    name: str
    marker: Path                      # exists once the stage has finished
    argv: list[str]                   # what its recipe's parser reads
    run: Callable[[list[str]], object]
    inputs: tuple[str, ...] = ()      # stages whose outputs it reads


def run_stages(stages: list[Stage], state_path: Path) -> tuple[dict, dict]:
    """Run the stages in order, skipping one whose marker exists and whose arguments and input stages' finish
    stamps are those recorded in state_path (JSON, rewritten atomically after each stage). Returns the state
    and, per stage, "ran" or "skipped"."""
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    this_run = {}
    for stage in stages:
        inputs = {name: state[name]["finished"] for name in stage.inputs}
        record = state.get(stage.name)
        if stage.marker.exists() and record and record["argv"] == stage.argv and record["inputs"] == inputs:
            logger.info("stage %s: finished earlier (%.0f s), skipped", stage.name, record["seconds"])
            this_run[stage.name] = "skipped"
            continue
        logger.info("stage %s", stage.name)
        logger.info("stage %s arguments: %s", stage.name, " ".join(stage.argv), extra={"file_only": True})
        started = time.perf_counter()
        stage.run(stage.argv)
        gc.collect()
        seconds = time.perf_counter() - started
        state[stage.name] = {"argv": stage.argv, "inputs": inputs, "seconds": seconds,
                             "finished": datetime.now(timezone.utc).isoformat()}
        write_json(state_path, state)
        logger.info("stage %s: done in %.0f s", stage.name, seconds)
        this_run[stage.name] = "ran"
    return state, this_run


# ------------------------------------------------------------------------------------------------ reports


def timing_table(rows: list[dict]) -> str:
    """Markdown table of stage rows {stage, seconds, this_run}."""
    return "\n".join(["| stage | seconds | this run |", "|---|---|---|"]
                     + [f"| {r['stage']} | {r['seconds']:.1f} | {r['this_run']} |" for r in rows])


def selected_quality(summary: dict) -> dict:
    """Test-split quality of the classifier a refinement run ships: a refined round's, or, when it ships round 0,
    the vanilla PN classifier's (round 0's own entry rates the annotator's labels, not a classifier)."""
    shipped = summary["shipped_metrics"]
    return {"round": summary["selected_round"], "source": summary["shipped"],
            **shipped.get("quality", {}).get("test", {})}


def annotation_summary(run_dir: Path) -> dict:
    """The annotation summary of a refinement run with an `annotator:` block ({} without one)."""
    from refinement.corpus import ANNOTATION_DIR

    path = run_dir / ANNOTATION_DIR / "annotation_summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def labels_table(refine: dict, vanilla: dict) -> str:
    """Markdown: the test-split quality of each round's classifier beside round 0 (the annotator's own labels),
    with the rating round selection gave each, then vanilla RLAIF's classifier and the one the run ships."""
    loss = refine["config"]["loss"]
    rows = [("round 0: the annotator's labels" if r["round"] == 0 else f"round {r['round']}: {loss}",
             r.get("quality", {}).get("test", {}), fmt(r.get("selection_score"))) for r in refine["rounds"]]
    rows.append(("vanilla RLAIF: PN on round 0's labels", selected_quality(vanilla), "–"))
    shipped = selected_quality(refine)
    rows.append((f"shipped: {shipped['source']}, round {shipped['round']}", shipped, "–"))
    return "\n".join(["| labels | test accuracy | test AUC | rated by round selection |", "|---|---|---|---|"]
                     + [f"| {name} | {fmt(q.get('accuracy'))} | {fmt(q.get('auc'))} | {rating} |"
                        for name, q, rating in rows])


def round_zero_quality(summary: dict) -> dict:
    """Test-split quality of a refinement run's round-0 labels: the annotator's (judged in the run, or read from a
    score column)."""
    return summary["rounds"][0].get("quality", {}).get("test", {})


def quality_text(quality: dict) -> str:
    return ", ".join(f"{key} {fmt(quality[key])}" for key in ("accuracy", "f1", "auc") if key in quality) or "-"
