"""The iterative loop: train on (Cp, Cn) with the chosen risk -> relabel the corpus -> re-estimate priors.

Layout of output_dir (one folder per round, each written atomically, so a killed run resumes at the last
finished round and ends with the same result as an uninterrupted one):
  config.json          the resolved config (a resume must match it, num_rounds aside)
  labeled_sample.json  the fixed i.i.d. gold sample L (few-labeled mode: drawn, or a human's labeled_sample_path)
  annotation/          with an `annotator:` block: the LLM's judgements (refinement.annotation.stage)
  round_00/            the annotator's labels: relabels.jsonl, metrics.json
  round_NN/            head.safetensors or model/, relabels.jsonl, metrics.json (with a relabelling view: the view
                       head's logit and training labels in each relabels row, and its head in view/ when the
                       round fitted one)
  vanilla/             only when the labeled sample rates round 0 best: a PN classifier of the annotator's labels
  model/               the shipped classifier as a stock AutoModelForSequenceClassification folder: the selected
                       round's, or vanilla/'s (config.json: reward_source refined | vanilla_pn)
  summary.json, report.md, rounds.png

Under a multi-process launch (`accelerate launch --num_processes N`, fine-tuning modes only) every rank runs the
loop: all ranks train each round together (Trainer DDP) in one shared workspace `.round_NN.tmp/`, only the
main process writes files, and every rank reads each finished round back from disk, so all continue with the
state the main process wrote.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from . import priors as priors_lib
from . import relabel as relabel_lib
from .backends import FrozenBackend, make_backend
from .cli import UsageError
from .config import RefineConfig
from .corpus import ANNOTATION_DIR, SPLITS, Corpus, annotate_run_rows, run_corpus
from .io import atomic_dir, distributed_state, shared_atomic_dir, wait_for_everyone, write_json
from .labeled_sample import labeled_positions
from .losses import risk_for
from .metrics import estimated_accuracy, label_quality, prior_matching_threshold
from .report import write_report

logger = logging.getLogger(__name__)
# may differ between a run and its resume
RESUMABLE_CHANGES = {"num_rounds", "patience", "output_dir", "export_model"}
VANILLA_DIR = "vanilla"  # the PN classifier of the round-0 labels, shipped when no refined round beats them
VIEW_DIR = "view"  # the relabelling view's head on the second backbone, inside a round folder


def round_dir(output_dir: Path, index: int) -> Path:
    return output_dir / f"round_{index:02d}"


class Refinement:
    """One run. `run()` is resumable: finished round folders are read back, never recomputed."""

    def __init__(self, cfg: RefineConfig):
        if cfg.mode == "frozen" and distributed_state().num_processes > 1:
            raise UsageError(f"frozen mode runs in one process; launch with --num_processes 1 (this launch has "
                             f"{distributed_state().num_processes})")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.corpus: Corpus = self._load_corpus()
        self.labeled_gold: np.ndarray | None = None  # gold labels of L, aligned with labeled_idx
        self.labeled_idx = self._labeled_sample()
        self._view_backend: FrozenBackend | None = None

    def _load_corpus(self) -> Corpus:
        if self.cfg.annotator is not None:  # the main process judges the pairs first (resumable)
            if distributed_state().is_main_process:
                annotate_run_rows(self.cfg, self.out / ANNOTATION_DIR)
            wait_for_everyone()
        return run_corpus(self.cfg, self.out)

    # ---- priors -------------------------------------------------------------------------------------------
    def _labeled_sample(self) -> np.ndarray | None:
        if self.cfg.labeled_sample_path:  # a human's labels, read from the labelling tool's file
            idx, self.labeled_gold = labeled_positions(self.cfg.labeled_sample_path, self.corpus.texts["train"])
            return idx
        if self.cfg.num_labeled == 0:
            if self.corpus.gold is None:
                raise UsageError(f"{self.corpus.source}: num_labeled=0 asks for oracle priors, which need a gold "
                                 f"'{self.cfg.label_column}' column")
            return None
        if self.corpus.gold is None:
            raise UsageError(f"{self.corpus.source}: few-labeled priors need gold labels for the sampled items; "
                             f"the data has no '{self.cfg.label_column}' column")
        idx = priors_lib.sample_labeled_indices(self.corpus.size("train"), self.cfg.num_labeled, self.cfg.seed)
        self.labeled_gold = self.corpus.gold["train"][idx]
        return idx

    def label_priors(self, train_pseudo: np.ndarray, seed: int) -> priors_lib.Priors:
        """Priors of the current pseudo-labels, unchecked. Few-labeled mode reads gold labels of L only."""
        if self.labeled_idx is None:
            return priors_lib.oracle_priors(self.corpus.gold["train"], train_pseudo, min_delta=None)
        return priors_lib.labeled_priors(self.labeled_gold, train_pseudo[self.labeled_idx], seed, min_delta=None,
                                         confidence=self.cfg.prior_guard_confidence)

    def selection_score(self, train_pseudo: np.ndarray, p: priors_lib.Priors) -> float | None:
        if np.isnan(p.theta_p) or np.isnan(p.theta_n):
            return None
        return estimated_accuracy(float(train_pseudo.mean()), p.theta_p, p.theta_n)

    # ---- evaluation (gold outside L is read here only) ------------------------------------------------------
    def evaluate(self, labels: dict, scores: dict | None) -> dict:
        if self.corpus.gold is None:
            return {}
        return {s: label_quality(self.corpus.gold[s], labels[s], None if scores is None else scores[s])
                for s in ("train", "test")}

    # ---- rounds -----------------------------------------------------------------------------------------------
    @staticmethod
    def _write_relabels(folder: Path, labels: dict, logits: dict | None, view: tuple[dict, dict] | None = None
                        ) -> None:
        """One row per item: its next label and this round's logit; with a relabelling view also the view head's
        logit and the labels it learns from next (`view` = (view labels, view logits))."""
        with open(folder / "relabels.jsonl", "w") as handle:
            for split in SPLITS:
                for i, label in enumerate(labels[split]):
                    row = {"split": split, "index": i, "pseudo_label": int(label)}
                    if logits is not None:
                        row["logit"] = float(logits[split][i])
                    if view is not None:
                        row["view_pseudo_label"] = int(view[0][split][i])
                        row["view_logit"] = float(view[1][split][i])
                    handle.write(json.dumps(row) + "\n")

    @staticmethod
    def read_round(path: Path, column: str = "pseudo_label") -> tuple[dict, dict]:
        """A round's next labels (`column`: pseudo_label, or view_pseudo_label for the relabelling view's) and its
        metrics."""
        labels = {s: [] for s in SPLITS}
        with open(path / "relabels.jsonl") as handle:
            for line in handle:
                row = json.loads(line)
                labels[row["split"]].append(row[column])
        return ({s: np.asarray(v, dtype=np.int64) for s, v in labels.items()},
                json.loads((path / "metrics.json").read_text()))

    @staticmethod
    def read_logits(path: Path, column: str = "logit") -> dict:
        """The classifier logits a trained round (or vanilla/) wrote beside its relabels, per split in corpus order
        (`column` view_logit: the relabelling view head's)."""
        relabels = path / "relabels.jsonl"
        logits = {s: [] for s in SPLITS}
        with open(relabels) as handle:
            for line_number, line in enumerate(handle, 1):
                row = json.loads(line)
                if column not in row:
                    raise ValueError(f"{relabels}: line {line_number} has no {column!r} (is this round 0, or a run "
                                     "without a relabelling view?)")
                logits[row["split"]].append(row[column])
        return {s: np.asarray(v, dtype=np.float64) for s, v in logits.items()}

    def anchor(self) -> dict:
        """The annotator's round-0 view: its scores, or its hard labels when the data carries no score."""
        return self.corpus.scores if self.corpus.scores is not None else self.corpus.pseudo

    def _round_zero(self) -> None:
        labels = self.corpus.pseudo
        p = self.label_priors(labels["train"], self.cfg.seed)
        metrics = {"round": 0, "label_priors": p.to_dict(),
                   "selection_score": self.selection_score(labels["train"], p),
                   "positive_rate": float(labels["train"].mean()),
                   "quality": self.evaluate(labels, self.corpus.scores)}
        with atomic_dir(round_dir(self.out, 0)) as tmp:
            self._write_relabels(tmp, labels, None)
            write_json(tmp / "metrics.json", metrics)

    def _guarded_priors(self, index: int, labels: dict, seed: int) -> priors_lib.Priors:
        for split in ("train", "val"):
            if len(np.unique(labels[split])) < 2:
                raise priors_lib.PriorError(
                    f"round {index}: every {split} item is pseudo-labeled {int(labels[split][0])}; UU training "
                    "and its epoch selection need both pseudo-classes")
        return priors_lib.check_priors(self.label_priors(labels["train"], seed), self.cfg.min_delta,
                                       self.cfg.prior_guard)

    def decision_threshold(self, train_logits: np.ndarray, prior: float) -> float:
        return prior_matching_threshold(train_logits, prior) if self.cfg.relabel_threshold == "prior" else 0.0

    def own_labels(self, logits: dict, prior: float, threshold: float | None = None) -> dict:
        """A classifier's labels per split: harmless where its logit is above its decision threshold."""
        cut = self.decision_threshold(logits["train"], prior) if threshold is None else threshold
        return {s: (logits[s] > cut).astype(np.int64) for s in SPLITS}

    def risks(self, p: priors_lib.Priors) -> tuple:
        """(training risk, epoch-selection risk) for labels with priors `p`. By default every loss is selected by
        the same rule (robust UU on the pseudo-labeled val split), so early stopping alone is never mistaken for a
        UU gain; with epoch_selection own_loss each by its own risk. PN needs no priors, so where they cannot define
        a UU risk (theta_p <= theta_n) it is selected by its own."""
        cfg = self.cfg
        risk = risk_for("pn" if cfg.loss == "cleanlab" else cfg.loss, p.prior, p.theta_p, p.theta_n, cfg.lam)
        return risk, risk_for(self.selection_loss(p), p.prior, p.theta_p, p.theta_n, cfg.lam)

    def selection_loss(self, p: priors_lib.Priors) -> str:
        loss = "pn" if self.cfg.loss == "cleanlab" else self.cfg.loss
        if self.cfg.epoch_selection == "own_loss" or (loss == "pn" and p.delta <= 0):
            return loss
        return "robust_uu"

    def rate_classifier(self, logits: dict, p: priors_lib.Priors, seed: int,
                        rated_train: np.ndarray | None = None) -> tuple[dict, dict]:
        """A trained classifier's own labels at its decision threshold, and how the labeled sample (or the
        oracle) rates them: what round selection compares and the export records. `rated_train`: out-of-fold
        logits of the training items (rating_folds), rated in place of the classifier's in-sample ones."""
        threshold = self.decision_threshold(logits["train"], p.prior)
        own = self.own_labels(logits, p.prior, threshold)
        rated, rated_logits, how = own, logits, {}
        if rated_train is not None:
            cut = self.decision_threshold(rated_train, p.prior)
            rated = {**own, "train": (rated_train > cut).astype(np.int64)}
            rated_logits = {**logits, "train": rated_train}
            how = {"rating": f"out-of-fold ({self.cfg.rating_folds} folds)"}
        after = self.label_priors(rated["train"], seed)
        return own, {"label_priors": after.to_dict(), "threshold": threshold,
                     "selection_score": self.selection_score(rated["train"], after),
                     "positive_rate": float(rated["train"].mean()), "quality": self.evaluate(rated, rated_logits),
                     **how}

    def out_of_fold_train_logits(self, backend, labels: dict, risk, val_risk, seed: int) -> np.ndarray | None:
        """With rating_folds K: each training item's logit from a head fitted on the other folds, for rating. None
        when the rating is in-sample, or when cross-fitting already made the round's training logits out-of-fold."""
        if not self.cfg.rating_folds or self.cfg.relabel_crossfit_folds:
            return None
        return backend.out_of_fold_train_logits(labels, self.cfg.rating_folds, risk, val_risk, seed)

    def view_backend(self) -> FrozenBackend:
        """The relabelling view: the frozen backend of the second backbone (a linear head on its cached features)."""
        if self._view_backend is None:
            cfg = self.cfg
            self._view_backend = FrozenBackend(dataclasses.replace(
                cfg, model_name_or_path=cfg.relabel_view_model, feature_layer=cfg.relabel_view_feature_layer,
                head="linear", relabel_crossfit_folds=0, rating_folds=0, relabel_view_model=None), self.corpus)
        return self._view_backend

    def _train_view(self, folder: Path, index: int, labels: dict, seed: int) -> tuple[dict, dict]:
        """The view head's logits and metrics in round `index`. Round 1 fits it on the annotator's labels
        (`labels`) into folder/view/; later rounds read round 1's back (relabel_view_training annotator) or fit it
        on the view's own chain of labels (cotrain)."""
        if index > 1:
            if self.cfg.relabel_view_training == "annotator":
                first = round_dir(self.out, 1)
                return (self.read_logits(first, "view_logit"),
                        {**self.read_round(first)[1]["view"], "trained_in_round": 1})
            labels, _ = self.read_round(round_dir(self.out, index - 1), "view_pseudo_label")
        try:
            p = self._guarded_priors(index, labels, seed)
        except priors_lib.PriorError as err:
            raise priors_lib.PriorError(f"relabelling view {self.cfg.relabel_view_model}: {err}") from err
        (folder / VIEW_DIR).mkdir()
        logits, _ = self.view_backend().train(folder / VIEW_DIR, labels, *self.risks(p), seed)
        return logits, {"model": self.cfg.relabel_view_model, "priors": p.to_dict(),
                        "quality": self.evaluate(self.own_labels(logits, p.prior), logits)}

    def _train_round(self, index: int, backend, labels: dict) -> None:
        """Round `index`: priors of the previous labels -> train -> the classifier's own labels (rated by the
        labeled sample, shipped) -> the next round's labels (the same, or a combined score: see relabel.py)."""
        cfg = self.cfg
        seed = cfg.seed + index
        p = self._guarded_priors(index, labels, seed)
        risk, val_risk = self.risks(p)
        start = time.perf_counter()
        init = None if cfg.reinit_each_round or index == 1 else round_dir(self.out, index - 1)
        # Every rank trains in the same workspace; the main process alone writes the round's files.
        with shared_atomic_dir(round_dir(self.out, index)) as tmp:
            logits, info = backend.train(tmp, labels, risk, val_risk, seed, init_from=init)
            if not all(np.all(np.isfinite(v)) for v in logits.values()):
                raise FloatingPointError(f"round {index}: the classifier produced non-finite logits")
            own, rating = self.rate_classifier(
                logits, p, seed, self.out_of_fold_train_logits(backend, labels, risk, val_risk, seed))
            metrics = {"round": index, "priors": p.to_dict(), "selection_risk": self.selection_loss(p), **rating}
            new, view = own, None
            if cfg.combined_relabel:
                history = [*(self.read_logits(round_dir(self.out, i)) for i in range(1, index)), logits]
                if cfg.relabel_view_model:
                    view_logits, metrics["view"] = self._train_view(tmp, index, labels, seed)
                    view_history = [*(self.read_logits(round_dir(self.out, i), "view_logit") for i in range(1, index)),
                                    view_logits]
                    scores, view_scores = relabel_lib.co_training_scores(
                        history, view_history, self.anchor(), cfg.relabel_anchor_weight, cfg.relabel_ensemble)
                    view_next = relabel_lib.relabel(view_scores, p.prior)[0] \
                        if cfg.relabel_view_training == "cotrain" else self.corpus.pseudo  # the round-0 labels
                    view = (view_next, view_logits)
                else:
                    scores = relabel_lib.relabel_scores(history, self.anchor(), cfg.relabel_anchor_weight,
                                                        cfg.relabel_ensemble)
                new, cut = relabel_lib.relabel(scores, p.prior)
                metrics["relabel"] = {"threshold": cut, "agreement_with_classifier": float(np.mean(
                                          new["train"] == own["train"])),
                                      "positive_rate": float(new["train"].mean()),
                                      "quality": self.evaluate(new, scores)}
            metrics.update({"flips": {s: int(np.sum(new[s] != labels[s])) for s in SPLITS},
                            "seconds": time.perf_counter() - start, **info})
            if distributed_state().is_main_process:
                self._write_relabels(tmp, new, logits, view)
                write_json(tmp / "metrics.json", metrics)

    # ---- the run ----------------------------------------------------------------------------------------------
    def _check_resume(self) -> None:
        """A resume must use the config of the run it continues (num_rounds, patience and the folder aside)."""
        saved_path = self.out / "config.json"
        current = self.cfg.to_dict()
        if saved_path.exists():
            saved = json.loads(saved_path.read_text())
            # A field added after the run was started compares as its default (the behaviour the run had).
            defaults = RefineConfig().to_dict()
            changed = sorted(k for k in set(saved) | set(current)
                             if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current.get(k))
            if changed:
                raise UsageError(f"{self.out} holds a run with another config ({', '.join(changed)} differ); "
                                 "use a new output_dir or the same config to resume it")
        wait_for_everyone()  # every rank has compared before the main process replaces config.json
        if not distributed_state().is_main_process:
            return
        write_json(saved_path, current)
        if self.labeled_idx is not None:
            idx = self.labeled_idx
            write_json(self.out / "labeled_sample.json",
                       {"train_indices": idx.tolist(), "gold": self.labeled_gold.tolist(),
                        "source": self.cfg.labeled_sample_path or "gold column"})

    def finished_rounds(self) -> list[int]:
        return sorted(int(p.name.split("_")[1]) for p in self.out.glob("round_[0-9][0-9]") if p.is_dir())

    def run(self) -> dict:
        cfg = self.cfg
        main = distributed_state().is_main_process
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_resume()
        done = self.finished_rounds()
        wait_for_everyone()  # every rank has listed the finished rounds before the main process adds round 0
        if 0 not in done:
            if main:
                self._round_zero()
            done = [0]
        elif len(done) > 1:
            logger.info("resuming %s after round %d", self.out, done[-1])
        wait_for_everyone()
        backend = None
        stopped = None
        for index in range(done[-1] + 1, cfg.num_rounds + 1):
            stopped = self._stop_reason(index)
            if stopped:
                break
            labels, _ = self.read_round(round_dir(self.out, index - 1))
            backend = backend or make_backend(cfg, self.corpus)
            try:
                self._train_round(index, backend, labels)
            except priors_lib.PriorError as err:
                if index == 1:
                    raise  # the annotator's own labels cannot support UU learning: the user must know
                stopped = f"round {index} not trained: {err}"
                break
        rounds = [self.read_round(round_dir(self.out, i))[1] for i in self.finished_rounds() if i <= cfg.num_rounds]
        selected = self.select_round(rounds)
        backend = backend or make_backend(cfg, self.corpus)
        if selected > 0:
            shipped = next(r for r in rounds if r["round"] == selected)
            note = f"shipping round {selected}, the refined classifier the labeled sample rates best"
        else:
            shipped, note = self._vanilla_or_best_round(backend, rounds)
            logger.warning(note)
        if main and cfg.export_model:
            self._export(backend, shipped)
        summary = {"config": cfg.to_dict(), "rounds": rounds, "selected_round": shipped["round"],
                   "shipped": "vanilla" if shipped.get("vanilla") else "refined", "shipped_metrics": shipped,
                   "note": note,
                   "stopped": stopped, "feature_seconds": backend.feature_seconds,
                   "labeled_items": 0 if self.labeled_idx is None else len(self.labeled_idx),
                   "model_dir": str(self.out / "model") if cfg.export_model else None}
        if main:
            write_json(self.out / "summary.json", summary)
            write_report(self.out, summary)
        wait_for_everyone()
        if not main:  # the other ranks return what the main process wrote
            summary = json.loads((self.out / "summary.json").read_text())
        return summary

    @staticmethod
    def vanilla_note(rounds: list[dict]) -> str:
        """The one plain line a run says when it ships the annotator's labels instead of a refined round."""
        base = rounds[0].get("selection_score")
        trained = [r for r in rounds if r["round"] > 0 and r.get("selection_score") is not None]
        if base is None or not trained:
            return ("no refined round could be rated: shipping the PN classifier of the annotator's labels "
                    "(vanilla RLAIF)")
        best = max(trained, key=lambda r: r["selection_score"])
        return (f"the labeled sample rates the annotator's own labels ({base:.3f}) at least as high as every refined "
                f"round (best: round {best['round']}, {best['selection_score']:.3f}): shipping the PN classifier "
                "of the annotator's labels (vanilla RLAIF), not a refined round")

    def _vanilla_or_best_round(self, backend, rounds: list[dict]) -> tuple[dict, str]:
        """Round 0 rated best: the PN classifier of its labels ships, unless the labeled sample rates that
        classifier's own labels below the best refined round's by more than a standard error of an accuracy on
        it (a PN head can lose what its labels had, e.g. on labels skewed to one class); then that round ships."""
        vanilla = self._vanilla(backend)
        trained = [r for r in rounds if r["round"] > 0 and r.get("selection_score") is not None]
        best = max(trained, key=lambda r: (r["selection_score"], -r["round"]), default=None)
        size = len(self.labeled_idx) if self.labeled_idx is not None else self.corpus.size("train")
        margin = 0.5 / np.sqrt(size)  # the largest standard error of an accuracy measured on `size` items
        score = vanilla.get("selection_score")
        if best is None or score is None or score >= best["selection_score"] - margin:
            return vanilla, self.vanilla_note(rounds)
        return best, (f"the labeled sample rates the annotator's own labels ({rounds[0]['selection_score']:.3f}) "
                      f"best, but the PN classifier of them at {score:.3f}, more than {margin:.3f} below round "
                      f"{best['round']} ({best['selection_score']:.3f}): shipping round {best['round']}")

    def _vanilla(self, backend) -> dict:
        """The PN classifier of the round-0 labels in vanilla/ (trained once; a rerun reads it back)."""
        folder = self.out / VANILLA_DIR
        if not (folder / "metrics.json").is_file():
            labels, _ = self.read_round(round_dir(self.out, 0))
            seed = self.cfg.seed
            p = self.label_priors(labels["train"], seed)
            pn = risk_for("pn", p.prior, p.theta_p, p.theta_n)
            with shared_atomic_dir(folder) as tmp:
                logits, info = backend.train(tmp, labels, pn, pn, seed)
                own, rating = self.rate_classifier(logits, p, seed,
                                                   self.out_of_fold_train_logits(backend, labels, pn, pn, seed))
                metrics = {"round": 0, "vanilla": True, "priors": p.to_dict(), "selection_risk": "pn", **rating,
                           **info}
                if distributed_state().is_main_process:
                    self._write_relabels(tmp, own, logits)
                    write_json(tmp / "metrics.json", metrics)
        wait_for_everyone()
        return json.loads((folder / "metrics.json").read_text())

    def _export(self, backend, shipped: dict) -> None:
        """The shipped classifier as a stock folder; its config also records the decision threshold (harmless iff
        logit > threshold), the priors, which the logits alone do not carry, and whether it is refined."""
        source = self.out / VANILLA_DIR if shipped.get("vanilla") else round_dir(self.out, shipped["round"])
        target = backend.export(source, self.out / "model")
        config_path = target / "config.json"
        config = json.loads(config_path.read_text())
        config.update({"decision_threshold": shipped.get("threshold", 0.0),
                       "refinement_priors": shipped["label_priors"], "refinement_round": shipped["round"],
                       "reward_source": "vanilla_pn" if shipped.get("vanilla") else "refined"})
        write_json(config_path, config)

    def _stop_reason(self, index: int) -> str | None:
        """Early stop after `patience` trained rounds without a better selection score."""
        if not self.cfg.patience:
            return None
        scores = [self.read_round(round_dir(self.out, i))[1].get("selection_score") for i in range(index)]
        best = int(np.nanargmax([s if s is not None else np.nan for s in scores]))
        if index - 1 - best >= self.cfg.patience:
            return f"patience: no better selection score for {self.cfg.patience} rounds after round {best}"
        return None

    def select_round(self, rounds: list[dict]) -> int:
        """The round to ship. `labeled`: the round whose labels score best on the labeled sample (or the oracle),
        round 0 (the annotator's labels) included and preferred on a tie; `last`: the last trained round.
        0 when no round was trained."""
        trained = [r for r in rounds if r["round"] > 0]
        if not trained:
            return 0
        if self.cfg.round_selection == "last":
            return trained[-1]["round"]
        scored = [r for r in rounds if r.get("selection_score") is not None] or trained[-1:]
        return max(scored, key=lambda r: (r.get("selection_score") or 0.0, -r["round"]))["round"]


def run_refinement(cfg: RefineConfig) -> dict:
    return Refinement(cfg).run()
