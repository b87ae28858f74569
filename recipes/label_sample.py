"""Label the i.i.d. gold sample the priors need, by hand, in a plain terminal; resumable.

    python recipes/label_sample.py --config recipes/configs/label_sample/default.yaml \\
        --dataset_path runs/my_annotation/annotated.jsonl --output_path runs/gold/sample --num_items 50 --seed 0

Draws N items uniformly at random without replacement (``refinement.priors.sample_labeled_indices``; never
class-balanced) from the rows of the source's ``train`` split when it has a split column (``--split_column``),
else from all rows, and shows them one at a time in a seeded random order: "item k/N", a progress line
(labelled / skipped / remaining), the prompt and the response wrapped to the terminal width. Gold labels,
pseudo-labels and scores in the source are never shown. Answer (then Enter):

    h  harmless (label 1)    x  harmful (label 0)    s  skip    b  back to the previous item    q  save and quit

Ctrl-D and Ctrl-C save and quit too. Every answer rewrites ``<output_path>.jsonl`` atomically, so a killed session
loses nothing; rerun the same command to resume at the first unanswered item. ``<output_path>.meta.json``
records the source (path, sha256), seed, N and the drawn items; a rerun whose source content, seed, N or settings
differ is refused. The end prints the counts and pi_hat (the harmless rate of the labelled items).

Format of both files: ``refinement/labeled_sample.py``; ``read_labeled_sample(path)`` reads the answers back as
(source row indices, gold labels). A refinement run reads them with ``--labeled_sample_path <output_path>``: each
labelled item is found in its training split by text and its label sets the priors, so the source needs no gold
column (label rows of its train split: a source with a split column, or the run's own annotated.jsonl).
"""
from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field

from refinement.cli import run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

import datasets
import numpy as np

from alignment.trl_api import TrlParser
from refinement.config import DatasetArguments
from refinement.labeled_sample import summarize
from refinement.labeling_session import label_items, load_sample, next_unanswered, open_answers, report


@dataclass
class LabelSampleConfig(DatasetArguments):
    output_path: str = field(default=None, metadata={"help": "Answers go to <output_path>.jsonl, the sample's "
                                                     "record to <output_path>.meta.json; rerun to resume."})
    num_items: int = field(default=50, metadata={"help": "N, the size of the i.i.d. sample to label."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample (use the refinement run's seed)."})
    split_column: str | None = field(default="split", metadata={"help": "Draw from this column's train rows "
                                                                "if the source has it, else from all rows."})
    width: int | None = field(default=None, metadata={"help": "Wrap text to this width (default: the terminal's)."})


def main(cfg: LabelSampleConfig, ask=input) -> dict:
    """Runs the session; ``ask`` reads one answer (``input`` in the terminal). Returns the summary."""
    if not cfg.dataset_path or not cfg.output_path:
        raise SystemExit("--dataset_path and --output_path are required (in the YAML or on the command line)")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    items, meta = load_sample(cfg)
    jsonl, answers = open_answers(cfg, meta)
    width = cfg.width or shutil.get_terminal_size((100, 24)).columns
    if answers:
        first = next_unanswered(answers, len(items))
        print(f"resuming {jsonl}: {len(answers)} of {len(items)} answered"
              + (f"; next is item {first + 1}/{len(items)}" if first is not None else "; all answered"))
    # A process started from a background job inherits SIGINT ignored, and Python then keeps it ignored: Ctrl-C
    # must still stop a labelling session (and save), so the default KeyboardInterrupt handler is put back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ended = label_items(items, answers, jsonl, ask, width) if len(answers) < len(items) else "done"
    if ended != "done":
        print(f"\nstopped ({ended}); answers saved")
    skipped = sum(a.skipped for a in answers.values())
    gold = np.asarray([a.label for a in answers.values() if not a.skipped], dtype=np.int64)
    summary = summarize(gold, skipped, len(items))
    report(summary, jsonl, next_unanswered(answers, len(items)), width)
    return {**summary, "ended": ended, "path": str(jsonl)}


def make_parser() -> TrlParser:
    return TrlParser((LabelSampleConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config)
