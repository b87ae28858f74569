"""The refinement loop end to end on real BeaverTails rows with simulated noisy pseudo-labels (frozen MiniLM)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE_ENV, REPO, import_recipe, round_folders, tree_digest, write_jsonl

from refinement.corpus import load_corpus
from refinement.data import DataError
from refinement.io import atomic_dir
from refinement.loop import run_refinement
from refinement.priors import PriorError

SPLITS = ("train", "val", "test")


def read_relabels(output_dir: Path, index: int) -> list[dict]:
    with open(output_dir / f"round_{index:02d}" / "relabels.jsonl") as handle:
        return [json.loads(line) for line in handle]


def read_metrics(output_dir: Path, index: int) -> dict:
    return json.loads((output_dir / f"round_{index:02d}" / "metrics.json").read_text())


def without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def train_positions(rows: list[dict]) -> list[int]:
    """Row numbers in the file of the train split's items, in corpus order (a split column keeps file order)."""
    return [i for i, r in enumerate(rows) if r["split"] == "train"]


# ---------------------------------------------------------------- a 3-round run

@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory, noisy_data, make_config):
    out = tmp_path_factory.mktemp("three_rounds") / "run"
    # plain relabelling: each round's labels are its classifier's own (the anchored default is tested elsewhere)
    cfg = make_config(noisy_data, out, head="mlp", num_rounds=3, num_labeled=50, relabel_anchor_weight=0.0,
                      relabel_ensemble=False)
    return out, cfg, run_refinement(cfg)


def test_three_round_run_layout_and_summary(three_rounds, noisy_rows):
    out, cfg, summary = three_rounds
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    sample = json.loads((out / "labeled_sample.json").read_text())
    idx = sample["train_indices"]
    assert len(idx) == 50 == len(set(idx)) and all(0 <= i < 240 for i in idx)
    train_gold = [noisy_rows[i]["label"] for i in train_positions(noisy_rows)]
    assert sample["gold"] == [train_gold[i] for i in idx]

    assert round_folders(out) == [f"round_{i:02d}" for i in range(4)]
    sizes = {s: sum(r["split"] == s for r in noisy_rows) for s in SPLITS}
    for i in range(4):
        relabels = read_relabels(out, i)
        assert {s: sum(r["split"] == s for r in relabels) for s in SPLITS} == sizes
        metrics = read_metrics(out, i)
        assert metrics["round"] == i
        if i == 0:  # the annotator's own labels
            assert [r["pseudo_label"] for r in relabels] == [r["pseudo_label"] for r in noisy_rows]
        else:
            assert (out / f"round_{i:02d}" / "head.safetensors").is_file()
            assert all(r["pseudo_label"] == int(r["logit"] > 0) for r in relabels)
            previous = read_relabels(out, i - 1)
            for split in SPLITS:
                flips = sum(a["pseudo_label"] != b["pseudo_label"]
                            for a, b in zip(previous, relabels) if a["split"] == split)
                assert metrics["flips"][split] == flips
    assert not (out / "round_04").exists()

    assert summary == json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2, 3]
    assert summary["labeled_items"] == 50
    for r in summary["rounds"]:
        priors = r["label_priors"]
        assert priors["source"] == "labeled[50]"
        assert priors["delta"] == pytest.approx(priors["theta_p"] - priors["theta_n"])
        for key in ("prior", "theta_p", "theta_n", "delta"):
            low, high = priors["interval"][key]
            assert low <= high
        assert priors["interval"]["prior"][0] <= priors["prior"] <= priors["interval"]["prior"][1]
        for split in ("train", "test"):
            quality = r["quality"][split]
            assert 0 <= quality["accuracy"] <= 1 and 0 <= quality["f1"] <= 1
            if r["round"] > 0:
                assert 0 <= quality["auc"] <= 1
        if r["round"] > 0:
            assert set(r["flips"]) == set(SPLITS)
    # Round-0 quality is that of the given pseudo-labels against gold.
    train = [r for r in noisy_rows if r["split"] == "train"]
    assert summary["rounds"][0]["quality"]["train"]["accuracy"] == pytest.approx(
        np.mean([r["label"] == r["pseudo_label"] for r in train]))
    assert summary["selected_round"] in (1, 2, 3)
    scored = {r["round"]: r["selection_score"] for r in summary["rounds"][1:]}
    assert scored[summary["selected_round"]] == max(scored.values())
    assert summary["model_dir"] == str(out / "model") and (out / "model" / "config.json").is_file()

    report = (out / "report.md").read_text()
    assert "rounds.png" in report
    assert (out / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Selected round: **{summary['selected_round']}**" in report


def test_refinement_improves_the_labels(three_rounds):
    """On this simulated-noise data the refined labels must beat the annotator's.

    Measured (seed 42, noise seed 0): train accuracy of the labels 0.596 at round 0 -> 0.683 at the selected
    round. Test accuracy of the classifier does NOT beat the round-0 test accuracy of the noisy labels here
    (0.6375 -> 0.5125 at the selected round): frozen MiniLM at 64 tokens with 240 items stays near 0.6 even
    with gold labels."""
    _, _, summary = three_rounds
    rounds = {r["round"]: r for r in summary["rounds"]}
    selected = rounds[summary["selected_round"]]
    before = rounds[0]["quality"]["train"]["accuracy"]
    after = selected["quality"]["train"]["accuracy"]
    assert after > before + 0.03, (before, after)
    # The labeled-sample selection score (no gold outside L) agrees that the labels improved.
    assert selected["selection_score"] is not None
    print("test accuracy per round:", [r["quality"]["test"]["accuracy"] for r in summary["rounds"]])


def test_same_config_resume_recomputes_nothing(three_rounds, make_config):
    """Rerunning a finished run (same output_dir: it is part of the config a resume must match) keeps every
    round folder byte-identical and reports the same rounds."""
    out, cfg, summary = three_rounds
    before = {name: tree_digest(out / name) for name in round_folders(out)}
    again = run_refinement(make_config(cfg.dataset_path, out, head="mlp", num_rounds=3, num_labeled=50,
                                       relabel_anchor_weight=0.0, relabel_ensemble=False))
    assert {name: tree_digest(out / name) for name in round_folders(out)} == before
    assert again["selected_round"] == summary["selected_round"]
    assert [without_seconds(r) for r in again["rounds"]] == [without_seconds(r) for r in summary["rounds"]]


# ---------------------------------------------------------------- finished rounds are never overwritten

def test_atomic_dir_refuses_existing_target(tmp_path):
    target = tmp_path / "round_01"
    target.mkdir()
    (target / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="round_01"), atomic_dir(target):
        pass
    assert (target / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_01"]  # no temp folder left behind
    with atomic_dir(tmp_path / "round_02") as tmp:
        assert tmp.name.startswith(".")
        (tmp / "x").write_text("1")
    assert (tmp_path / "round_02" / "x").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "round_03") as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError("killed mid-round")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_01", "round_02"]


def test_resume_with_another_config_is_refused(three_rounds, make_config):
    out, cfg, _ = three_rounds
    before = tree_digest(out)
    with pytest.raises(ValueError, match=r"\(loss differ\)"):
        run_refinement(make_config(cfg.dataset_path, out, head="mlp", num_rounds=4, num_labeled=50, loss="uu",
                                   relabel_anchor_weight=0.0, relabel_ensemble=False))
    assert tree_digest(out) == before
    assert not (out / "round_04").exists()
    with pytest.raises(ValueError, match=r"\(head_epochs differ\)"):
        run_refinement(make_config(cfg.dataset_path, out, head="mlp", num_rounds=3, num_labeled=50,
                                   head_epochs=16, relabel_anchor_weight=0.0, relabel_ensemble=False))
    assert tree_digest(out) == before


# ---------------------------------------------------------------- resume after SIGKILL

def recipe_args(data: Path, out: Path, cache: Path) -> list[str]:
    return ["--dataset_path", str(data), "--output_dir", str(out), "--num_rounds", "4", "--num_labeled", "50",
            "--model_name_or_path", "embedded:minilm", "--mode", "frozen", "--head", "linear",
            "--max_length", "64", "--head_epochs", "15",
            "--feature_cache_dir", str(cache), "--seed", "42"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, noisy_data, feature_cache_dir):
    refine_classifier = import_recipe("refine_classifier")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "recipes/refine_classifier.py", *recipe_args(noisy_data, killed, feature_cache_dir)]
    env = {**os.environ, **OFFLINE_ENV}

    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (killed / "round_02").exists():
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before round_02: {proc.stderr.read()[-2000:]!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("round_02 did not appear in time")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "round_04").exists(), "the run finished before it could be killed"
    assert not (killed / "summary.json").exists()
    # No half-written round is visible: every round_NN folder is complete; temp folders are dot-prefixed.
    for name in round_folders(killed):
        assert (killed / name / "relabels.jsonl").is_file() and (killed / name / "metrics.json").is_file(), name
        assert (killed / name / "metrics.json").read_text().endswith("}\n"), name
    assert all(p.name.startswith(".") or p.name.startswith("round_") or p.suffix == ".json"
               for p in killed.iterdir())
    finished = {name: tree_digest(killed / name) for name in round_folders(killed)}

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, digest in finished.items():  # the resume kept the rounds it found
        assert tree_digest(killed / name) == digest, name

    (config,) = refine_classifier.make_parser().parse_args_and_config(
        recipe_args(noisy_data, clean, feature_cache_dir))
    reference = refine_classifier.main(config)
    resumed = json.loads((killed / "summary.json").read_text())
    assert round_folders(killed) == round_folders(clean) == [f"round_{i:02d}" for i in range(5)]
    assert resumed["selected_round"] == reference["selected_round"]
    for i in range(5):
        a, b = read_relabels(killed, i), read_relabels(clean, i)
        assert [r["pseudo_label"] for r in a] == [r["pseudo_label"] for r in b], i
        if i:
            np.testing.assert_allclose([r["logit"] for r in a], [r["logit"] for r in b], rtol=0, atol=1e-6)
        assert without_seconds(read_metrics(killed, i)) == without_seconds(read_metrics(clean, i)), i
    assert [without_seconds(r) for r in resumed["rounds"]] == [without_seconds(r) for r in reference["rounds"]]
    # A temp folder the kill left behind (".round_NN.*.tmp") may remain, but is never read as a round.
    assert all(p.name.startswith(".round_0") for p in killed.iterdir() if p.name.startswith(".round_"))


# ---------------------------------------------------------------- no gold label outside L is used

def test_gold_labels_outside_the_labeled_sample_never_reach_training(tmp_path, noisy_rows, make_config):
    first = tmp_path / "a"
    data_a = write_jsonl(tmp_path / "a.jsonl", noisy_rows)
    summary_a = run_refinement(make_config(data_a, first, num_rounds=2, num_labeled=50))
    sample = set(json.loads((first / "labeled_sample.json").read_text())["train_indices"])
    positions = train_positions(noisy_rows)
    flipped = [dict(r) for r in noisy_rows]
    changed = 0
    for index, row_number in enumerate(positions):
        if index not in sample:
            flipped[row_number]["label"] = 1 - flipped[row_number]["label"]
            changed += 1
    assert changed == 240 - 50
    second = tmp_path / "b"
    data_b = write_jsonl(tmp_path / "b.jsonl", flipped)
    summary_b = run_refinement(make_config(data_b, second, num_rounds=2, num_labeled=50))

    assert (first / "labeled_sample.json").read_text() == (second / "labeled_sample.json").read_text()
    for i in range(3):
        assert read_relabels(first, i) == read_relabels(second, i), f"round {i} relabels differ"
    assert summary_a["selected_round"] == summary_b["selected_round"]
    for ra, rb in zip(summary_a["rounds"], summary_b["rounds"]):
        assert ra["label_priors"] == rb["label_priors"]
        assert ra["selection_score"] == rb["selection_score"]
        assert ra["quality"]["test"] == rb["quality"]["test"]
        assert ra["quality"]["train"]["accuracy"] != rb["quality"]["train"]["accuracy"]


# ---------------------------------------------------------------- bad input

def assert_no_rounds_after(out: Path, first_missing: int) -> None:
    names = round_folders(out) if out.exists() else []
    assert all(int(n.split("_")[1]) < first_missing for n in names), names
    if out.exists():
        assert not [p.name for p in out.iterdir() if p.name.startswith(".round_")]


def test_empty_file(tmp_path, make_config):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="empty") as err:
        run_refinement(make_config(path, out))
    assert str(path) in str(err.value)
    assert_no_rounds_after(out, 0)


def test_missing_prompt_column(tmp_path, noisy_rows, make_config):
    rows = [{("question" if k == "prompt" else k): v for k, v in r.items()} for r in noisy_rows]
    path = write_jsonl(tmp_path / "noprompt.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="prompt") as err:
        run_refinement(make_config(path, out))
    assert str(path) in str(err.value)
    assert_no_rounds_after(out, 0)


def test_label_outside_binary(tmp_path, noisy_rows, make_config):
    rows = [dict(r) for r in noisy_rows]
    rows[7]["label"] = 2
    path = write_jsonl(tmp_path / "badlabel.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"'label' row 7 has value 2") as err:
        run_refinement(make_config(path, out))
    assert str(path) in str(err.value)
    assert_no_rounds_after(out, 0)


@pytest.mark.parametrize("transform,match", [
    (lambda r: {**r, "pseudo_label": 1}, "every train item is pseudo-labeled 1; UU training"),
    # pseudo-labels that are exactly the negated gold labels: delta = -1 on any sample
    (lambda r: {**r, "pseudo_label": 1 - r["label"]}, "delta"),
    (lambda r: {**r, "label": 1} if r["split"] == "train" else r, "only gold class"),
], ids=["one_pseudo_class", "inverted_pseudo_labels", "one_gold_class_in_labeled_sample"])
def test_unusable_labels_are_refused_before_round_1(tmp_path, noisy_rows, make_config, transform, match):
    path = write_jsonl(tmp_path / "bad.jsonl", [transform(r) for r in noisy_rows])
    out = tmp_path / "out"
    with pytest.raises(PriorError, match=match):
        run_refinement(make_config(path, out, num_rounds=2))
    assert_no_rounds_after(out, 1)


def test_delta_not_above_min_delta(tmp_path, noisy_data, make_config):
    out = tmp_path / "out"
    with pytest.raises(PriorError, match=r"delta .*min_delta=0\.9"):
        run_refinement(make_config(noisy_data, out, num_rounds=2, min_delta=0.9))
    assert_no_rounds_after(out, 1)
    assert round_folders(out) == ["round_00"]


def test_nan_loss_from_learning_rate(tmp_path, noisy_data, make_config):
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match="nan"):
        run_refinement(make_config(noisy_data, out, num_rounds=2, head_learning_rate=1e30))
    assert_no_rounds_after(out, 1)


def test_nan_features_fail_a_later_round_and_keep_finished_rounds(tmp_path, noisy_data, noisy_rows, make_config,
                                                                 feature_cache_dir):
    from refinement.data import format_example
    from refinement.features import FrozenFeaturizer, text_key

    cache = tmp_path / "cache"
    shutil.copytree(feature_cache_dir, cache)
    out = tmp_path / "out"
    run_refinement(make_config(noisy_data, out, num_rounds=1, feature_cache_dir=str(cache)))
    assert round_folders(out) == ["round_00", "round_01"]
    finished = tree_digest(out / "round_00"), tree_digest(out / "round_01")

    # Poison one training item's cached features with NaN: a later shard overrides earlier ones.
    featurizer = FrozenFeaturizer("embedded:minilm", head="linear", max_length=64, cache_dir=str(cache))
    train = [r for r in noisy_rows if r["split"] == "train"]
    key = text_key(format_example(train[3]["prompt"], train[3]["response"]))
    assert featurizer.cache.missing([key]) == []
    dim = featurizer.cache.get([key]).shape[1]
    np.savez(featurizer.cache.directory / "shard-999999-poison.npz", keys=np.array([key]),
             features=np.full((1, dim), np.nan, dtype=np.float32))

    with pytest.raises(FloatingPointError):
        run_refinement(make_config(noisy_data, out, num_rounds=2, feature_cache_dir=str(cache)))
    assert round_folders(out) == ["round_00", "round_01"]
    assert (tree_digest(out / "round_00"), tree_digest(out / "round_01")) == finished
    assert_no_rounds_after(out, 2)


@pytest.mark.parametrize("name, content", [
    ("garbage.parquet", bytes(range(256)) * 8),
    ("broken.jsonl", b'{"prompt": "hi", "response": "ok", "label": 1\n{not json at all\n'),
])
def test_unreadable_file(tmp_path, make_config, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        run_refinement(make_config(path, out))
    assert str(path) in str(err.value)
    assert "cannot read" in str(err.value)
    assert_no_rounds_after(out, 0)


def test_patience_stops_after_a_round_without_a_better_selection_score(tmp_path, noisy_data, make_config):
    summary = run_refinement(make_config(noisy_data, tmp_path / "out", num_rounds=5, patience=1))
    scores = [r["selection_score"] for r in summary["rounds"]]
    best = int(np.argmax(scores))
    if summary["stopped"]:
        assert summary["stopped"].startswith("patience") and len(scores) - 1 - best == 1
    else:  # never stopped: every round beat all before it
        assert len(scores) == 6 and all(b > a for a, b in zip(scores, scores[1:]))


def test_gold_column_as_pseudo_labels_trains_gold_supervised(make_config, noisy_data, tmp_path):
    from refinement.corpus import load_corpus

    corpus = load_corpus(make_config(noisy_data, tmp_path, pseudo_label_column="label"))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(corpus.pseudo[split], corpus.gold[split])
    noisy = load_corpus(make_config(noisy_data, tmp_path))
    assert not np.array_equal(noisy.pseudo["train"], noisy.gold["train"])


# ---------------------------------------------------------------- a human's labelled sample (recipes/label_sample.py)

def _human_answers(rows: list[dict], positions: list[int], skip: int) -> list:
    """The labelling tool's records for the train rows at ``positions``, answered truthfully, one skipped."""
    from refinement.labeled_sample import Answer

    train = train_positions(rows)
    return [Answer(item=k, index=train[p], pool_index=p, label=None if k == skip else rows[train[p]]["label"],
                   prompt=rows[train[p]]["prompt"], response=rows[train[p]]["response"], time="2026-11-30T00:00:00Z")
            for k, p in enumerate(positions)]


def test_a_human_labelled_sample_sets_the_priors_without_a_gold_column(tmp_path, noisy_rows, make_config):
    from refinement.labeled_sample import write_answers
    from refinement.priors import point_estimate

    unlabeled = write_jsonl(tmp_path / "unlabeled.jsonl", [{k: v for k, v in r.items() if k != "label"}
                                                           for r in noisy_rows])
    positions = [int(p) for p in np.random.default_rng(5).choice(240, size=40, replace=False)]
    write_answers(tmp_path / "gold.jsonl", _human_answers(noisy_rows, positions, skip=3))
    out = tmp_path / "run"
    summary = run_refinement(make_config(unlabeled, out, num_rounds=1, labeled_sample_path=str(tmp_path / "gold")))

    kept = sorted(p for k, p in enumerate(positions) if k != 3)
    sample = json.loads((out / "labeled_sample.json").read_text())
    train = train_positions(noisy_rows)
    assert sample["train_indices"] == kept
    assert sample["gold"] == [noisy_rows[train[p]]["label"] for p in kept]
    pseudo = np.asarray([noisy_rows[train[p]]["pseudo_label"] for p in kept])
    expected = point_estimate(np.asarray(sample["gold"]), pseudo)
    round_zero = summary["rounds"][0]["label_priors"]
    assert round_zero["source"] == "labeled[39]"
    assert np.allclose([round_zero["prior"], round_zero["theta_p"], round_zero["theta_n"]], expected)
    assert summary["labeled_items"] == 39 and summary["rounds"][1]["round"] == 1


def test_a_human_labelled_item_missing_from_the_training_split_is_named(tmp_path, noisy_rows, make_config):
    from refinement.labeled_sample import LabeledSampleError, write_answers

    answers = _human_answers(noisy_rows, [0, 1, 2], skip=-1)
    answers[2] = type(answers[2])(**{**answers[2].__dict__, "response": "a reply that is not in the corpus"})
    write_answers(tmp_path / "gold.jsonl", answers)
    with pytest.raises(LabeledSampleError, match=r"gold\.jsonl: item 3 .*not in the training split"):
        run_refinement(make_config(write_jsonl(tmp_path / "d.jsonl", noisy_rows), tmp_path / "run", num_rounds=1,
                                   labeled_sample_path=str(tmp_path / "gold.jsonl")))


def test_pn_trains_where_the_priors_cannot_define_a_uu_risk(tmp_path, noisy_rows, make_config):
    """Inverted pseudo-labels (delta = -1): robust UU refuses them (above); PN, which needs no priors, trains on
    them with min_delta below -1 and is then selected by its own risk, so it learns the labels it was given."""
    path = write_jsonl(tmp_path / "inverted.jsonl", [{**r, "pseudo_label": 1 - r["label"]} for r in noisy_rows])
    summary = run_refinement(make_config(path, tmp_path / "out", loss="pn", num_rounds=1, min_delta=-1.5))
    trained = summary["rounds"][1]
    assert trained["priors"]["delta"] == pytest.approx(-1.0) and trained["selection_risk"] == "pn"
    assert trained["quality"]["test"]["accuracy"] < 0.5  # it fits the inverted labels: worse than chance on gold


def test_rows_without_a_score_are_refused_or_dropped_as_configured(tmp_path, noisy_rows, make_config):
    """An annotator leaves its demonstrations unscored: by default that is an error naming the row; with
    score_missing=drop those rows are left out of the run and every other row keeps its score-based label."""
    rows = [{**r, "score": 0.9 if r["pseudo_label"] else 0.1} for r in noisy_rows]
    unscored = [i for i, r in enumerate(rows) if r["split"] == "val"][:3]
    for i in unscored:
        rows[i]["score"] = None
    path = write_jsonl(tmp_path / "scored.jsonl", rows)
    fields = {"score_column": "score", "score_threshold": 0.5, "pseudo_label_column": None}
    with pytest.raises(DataError, match=rf"row {unscored[0]} is missing"):
        load_corpus(make_config(path, tmp_path / "a", **fields))
    corpus = load_corpus(make_config(path, tmp_path / "b", score_missing="drop", **fields))
    kept = [r for i, r in enumerate(rows) if i not in unscored]
    for split in SPLITS:
        assert corpus.pseudo[split].tolist() == [r["pseudo_label"] for r in kept if r["split"] == split]


def test_epoch_selection_own_loss_picks_a_pn_classifiers_epoch_by_the_pn_risk(tmp_path, noisy_data, make_config):
    """Vanilla RLAIF as its users train it: PN picks its epoch by its own risk on the pseudo-labeled val split; by
    default every loss is picked by the robust UU risk there, so the recorded per-epoch val risks differ."""
    runs = {rule: run_refinement(make_config(noisy_data, tmp_path / rule, loss="pn", num_rounds=1,
                                             epoch_selection=rule))["rounds"][1]
            for rule in ("robust_uu", "own_loss")}
    assert runs["robust_uu"]["selection_risk"] == "robust_uu" and runs["own_loss"]["selection_risk"] == "pn"
    risks = {rule: [e["val_risk"] for e in r["epochs"]] for rule, r in runs.items()}
    assert len(risks["own_loss"]) == len(risks["robust_uu"]) and risks["own_loss"] != risks["robust_uu"]
    assert runs["own_loss"]["selected_epoch"] == 1 + int(np.argmin(risks["own_loss"]))
    with pytest.raises(ValueError, match="epoch_selection='pn': choose one of robust_uu, own_loss"):
        make_config(noisy_data, tmp_path / "bad", epoch_selection="pn")
