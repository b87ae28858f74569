"""Relabelling that does not feed a classifier its own boundary: the pure pieces, the frozen backend's cross-fitting,
and each switch in a real run (frozen MiniLM on BeaverTails rows with simulated noisy labels)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import write_jsonl

from refinement.backends import FrozenBackend
from refinement.corpus import load_corpus
from refinement.heads import head_logits
from refinement.loop import run_refinement
from refinement.losses import risk_for
from refinement.metrics import estimated_accuracy
from refinement.priors import oracle_priors
from refinement.relabel import (
    co_training_scores,
    crossfit_folds,
    out_of_fold_logits,
    relabel,
    relabel_scores,
    standardize,
)


def test_standardize_uses_the_reference_statistics():
    reference = np.array([1.0, 3.0])          # mean 2, std 1
    assert standardize(np.array([2.0, 4.0, 0.0]), reference) == pytest.approx([0.0, 2.0, -2.0])
    assert standardize(np.array([5.0]), np.array([7.0, 7.0])) == pytest.approx([-2.0])  # constant: shift only


def test_relabel_cuts_at_the_prior_matching_share():
    scores = {"train": np.arange(10.0), "test": np.array([-1.0, 6.2, 9.5])}
    labels, threshold = relabel(scores, prior=0.3)
    assert labels["train"].tolist() == [0] * 7 + [1] * 3 and labels["train"].dtype == np.int64
    assert labels["test"].tolist() == [0, 0, 1] and 6 <= threshold < 7


def test_the_anchor_changes_relabels_on_a_constructed_case():
    """The classifier ranks item 0 top and item 3 bottom; the annotator says the opposite. Weight 0 follows the
    classifier, a heavy anchor follows the annotator, and the combined score is exactly z_c + w z_a."""
    logits = {"train": np.array([3.0, 1.0, 0.0, -1.0])}
    anchor = {"train": np.array([0.1, 0.6, 0.5, 0.9])}
    plain, _ = relabel(relabel_scores([logits], anchor, 0.0, ensemble=False), prior=0.5)
    anchored, _ = relabel(relabel_scores([logits], anchor, 5.0, ensemble=False), prior=0.5)
    assert plain["train"].tolist() == [1, 1, 0, 0]
    assert anchored["train"].tolist() == [0, 1, 0, 1]
    combined = relabel_scores([logits], anchor, 0.5, ensemble=False)["train"]
    expected = standardize(logits["train"], logits["train"]) + 0.5 * standardize(anchor["train"], anchor["train"])
    assert combined == pytest.approx(expected)


def test_the_ensemble_averages_every_round_and_plain_uses_the_last():
    first = {"train": np.array([1.0, 0.0, -1.0]), "test": np.array([2.0])}
    second = {"train": np.array([-10.0, 0.0, 10.0]), "test": np.array([0.0])}
    z1, z2 = (standardize(r["train"], r["train"]) for r in (first, second))
    assert relabel_scores([first, second], None, 0.0, ensemble=True)["train"] == pytest.approx((z1 + z2) / 2)
    assert relabel_scores([first, second], None, 0.0, ensemble=False)["train"] == pytest.approx(z2)
    # the test split is standardized with its round's training statistics
    assert relabel_scores([first], None, 0.0, ensemble=False)["test"] == pytest.approx(
        standardize(first["test"], first["train"]))


def test_co_training_cuts_each_heads_labels_from_the_other_head():
    """The main head's rounds rank items 0 and 1 top, the view head's rank them bottom: the main head's next labels
    follow the view's ranking and the view's follow the main head's, each through the same anchored ensemble as
    plain relabelling."""
    main = [{"train": np.array([3.0, 1.0, 0.0, -1.0])}, {"train": np.array([2.0, 2.5, -1.0, -2.0])}]
    view = [{"train": np.array([-1.0, 0.0, 1.0, 3.0])}, {"train": np.array([-2.0, 1.0, 0.5, 2.0])}]
    anchor = {"train": np.array([0.2, 0.6, 0.5, 0.9])}
    for_main, for_view = co_training_scores(main, view, anchor, 0.5, ensemble=True)
    assert for_main["train"] == pytest.approx(relabel_scores(view, anchor, 0.5, ensemble=True)["train"])
    assert for_view["train"] == pytest.approx(relabel_scores(main, anchor, 0.5, ensemble=True)["train"])
    for_main, for_view = co_training_scores(main, view, None, 0.0, ensemble=True)
    assert relabel(for_main, 0.5)[0]["train"].tolist() == [0, 0, 1, 1]
    assert relabel(for_view, 0.5)[0]["train"].tolist() == [1, 1, 0, 0]


def test_crossfit_folds_are_stratified_and_cover_every_item():
    pseudo = np.array([0] * 7 + [1] * 13)
    folds = crossfit_folds(pseudo, 3, seed=0)
    assert sorted(np.unique(folds)) == [0, 1, 2]
    for fold in range(3):
        members = pseudo[folds == fold]
        assert 2 <= (members == 0).sum() <= 3 and 4 <= (members == 1).sum() <= 5
    assert (crossfit_folds(pseudo, 3, seed=0) == folds).all()
    with pytest.raises(ValueError, match="pseudo-set 0 has 1 items"):
        crossfit_folds(np.array([0, 1, 1, 1]), 2, seed=0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        crossfit_folds(pseudo, 1, seed=0)


def test_out_of_fold_logits_never_score_an_item_with_a_model_that_saw_it():
    folds = crossfit_folds(np.array([0, 1] * 10), 4, seed=1)
    calls = []

    def fit_predict(train_idx, held_out):
        calls.append((set(train_idx.tolist()), set(held_out.tolist())))
        return held_out * 10.0

    logits = out_of_fold_logits(folds, fit_predict)
    assert logits == pytest.approx(np.arange(20) * 10.0)
    assert len(calls) == 4
    for seen, scored in calls:
        assert not seen & scored and seen | scored == set(range(20))


# ------------------------------------------------------------------------------------- the frozen backend


def assert_scored_out_of_fold(train_logits, pseudo, seed, refit_and_score, tolerance):
    """Every training item's logit equals that of a model refitted (same seed) on the other of 2 folds:
    refit_and_score(fold_train_indices, held_out_indices) -> the held-out items' logits."""
    folds = crossfit_folds(pseudo, 2, seed=seed)
    for fold in (0, 1):
        held_out = np.flatnonzero(folds == fold)
        expected = refit_and_score(np.flatnonzero(folds != fold), held_out)
        assert train_logits[held_out] == pytest.approx(expected, abs=tolerance)


def test_frozen_crossfit_train_logits_come_from_heads_that_never_saw_the_item(noisy_data, make_config, tmp_path):
    cfg = make_config(noisy_data, tmp_path / "run", relabel_crossfit_folds=2)
    corpus = load_corpus(cfg)
    backend = FrozenBackend(cfg, corpus)
    risk = risk_for("robust_uu", 0.45, 0.6, 0.2)
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    logits, _ = backend.train(round_dir, corpus.pseudo, risk, risk, seed=3)

    def refit_and_score(fold_train, held_out):
        head, _ = backend.fit(fold_train, corpus.pseudo, risk, risk, 3)
        return head_logits(head, backend.features["train"][held_out])

    assert_scored_out_of_fold(logits["train"], corpus.pseudo["train"], 3, refit_and_score, tolerance=1e-6)
    full, _ = backend.fit(np.arange(len(corpus.pseudo["train"])), corpus.pseudo, risk, risk, 3)
    assert not np.allclose(logits["train"], head_logits(full, backend.features["train"]), atol=1e-3)
    assert logits["test"] == pytest.approx(head_logits(full, backend.features["test"]), abs=1e-6)


def test_out_of_fold_rating_rates_a_round_by_heads_that_never_saw_the_item(noisy_data, noisy_rows, make_config,
                                                                         tmp_path):
    """rating_folds=2: round 1's selection score and training accuracy are those of the labels cut from 2-fold
    out-of-fold logits (oracle priors), while its relabels, test quality and decision threshold stay the full
    head's; the in-sample rating of the same head differs."""
    from refinement.loop import Refinement

    rated = {}
    for folds in (0, 2):
        out = tmp_path / f"folds{folds}"
        summary = run_refinement(make_config(noisy_data, out, num_rounds=1, num_labeled=0, rating_folds=folds,
                                             relabel_anchor_weight=0.0, relabel_ensemble=False,
                                             relabel_threshold="prior", export_model=False))
        rated[folds] = summary["rounds"][1]
    assert rated[2]["rating"] == "out-of-fold (2 folds)" and "rating" not in rated[0]
    assert rated[2]["quality"]["test"] == rated[0]["quality"]["test"]
    assert rated[2]["threshold"] == pytest.approx(rated[0]["threshold"])

    run = Refinement(make_config(noisy_data, tmp_path / "folds2", num_rounds=1, num_labeled=0, rating_folds=2,
                                 relabel_anchor_weight=0.0, relabel_ensemble=False, relabel_threshold="prior",
                                 export_model=False))
    backend = FrozenBackend(run.cfg, run.corpus)
    labels = run.corpus.pseudo
    gold = np.array([r["label"] for r in noisy_rows if r["split"] == "train"])
    p = oracle_priors(gold, labels["train"])
    risk = risk_for("robust_uu", p.prior, p.theta_p, p.theta_n, -0.001)
    seed = run.cfg.seed + 1
    held_out_logits = np.empty(len(gold))
    folds = crossfit_folds(labels["train"], 2, seed)
    for fold in (0, 1):
        head, _ = backend.fit(np.flatnonzero(folds != fold), labels, risk, risk, seed)
        held_out_logits[folds == fold] = head_logits(head, backend.features["train"][folds == fold])
    own = (held_out_logits > np.quantile(held_out_logits, 1 - p.prior)).astype(int)
    after = oracle_priors(gold, own, min_delta=None)
    assert rated[2]["selection_score"] == pytest.approx(estimated_accuracy(own.mean(), after.theta_p, after.theta_n))
    assert rated[2]["quality"]["train"]["accuracy"] == pytest.approx(np.mean(own == gold))
    assert rated[2]["quality"]["train"]["accuracy"] != pytest.approx(rated[0]["quality"]["train"]["accuracy"])
    rows, _ = read_round(tmp_path / "folds2", 1)
    in_sample = np.array([r["logit"] for r in rows if r["split"] == "train"])
    assert not np.allclose(in_sample, held_out_logits, atol=1e-3)  # relabels keep the full head's logits


# ------------------------------------------------------------------------------------- switches in a run


def read_round(out, index):
    with open(out / f"round_{index:02d}" / "relabels.jsonl") as handle:
        rows = [json.loads(line) for line in handle]
    return rows, json.loads((out / f"round_{index:02d}" / "metrics.json").read_text())


def test_an_anchored_run_trains_round_2_on_the_combined_labels(noisy_data, noisy_rows, make_config, tmp_path):
    out = tmp_path / "anchored"
    summary = run_refinement(make_config(noisy_data, out, num_rounds=2, num_labeled=0, relabel_anchor_weight=1.0,
                                         export_model=False))
    assert summary["model_dir"] is None and not (out / "model").exists()  # a sweep's run ships nothing
    rows, metrics = read_round(out, 1)
    train = [r for r in rows if r["split"] == "train"]
    logits = np.array([r["logit"] for r in train])
    labels = np.array([r["pseudo_label"] for r in train])
    annotator = np.array([r["pseudo_label"] for r in noisy_rows if r["split"] == "train"], dtype=float)
    score = standardize(logits, logits) + standardize(annotator, annotator)
    cut = metrics["relabel"]["threshold"]
    assert labels.tolist() == (score > cut).astype(int).tolist()
    own = (logits > metrics["threshold"]).astype(int)
    assert metrics["relabel"]["agreement_with_classifier"] == pytest.approx(np.mean(own == labels))
    assert (own != labels).any()  # the anchor moved some labels away from the classifier's own
    assert summary["rounds"][2]["priors"]["prior"] == pytest.approx(np.mean([r["label"] for r in noisy_rows
                                                                             if r["split"] == "train"]))
    assert "combined with the annotator's score" in (out / "report.md").read_text()


def test_a_relabelling_view_cuts_the_next_labels_from_the_other_backbones_head(noisy_data, noisy_rows, make_config,
                                                                                tmp_path):
    """A second backbone (a tiny random Llama) as the relabelling view. Round 1 fits the view head on the
    annotator's labels; the shipped head's next labels are cut from z(view) + w z(annotator). `annotator`
    training reuses round 1's view head in round 2 (the view keeps learning from the annotator's labels);
    `cotrain` fits it again on labels cut from z(shipped head) + w z(annotator). Off, no view head is trained and
    the next labels follow the shipped head."""
    from tiny_models import build_tiny_llama

    view_model = build_tiny_llama(tmp_path / "view_backbone")
    annotator = np.array([r["pseudo_label"] for r in noisy_rows if r["split"] == "train"])
    gold = np.array([r["label"] for r in noisy_rows if r["split"] == "train"])
    z_annotator = standardize(annotator, annotator)

    def cut(logits):  # z(logits) + 0.5 z(annotator) at the prior-matching share
        score = standardize(logits, logits) + 0.5 * z_annotator
        return (score > np.quantile(score, 1 - gold.mean())).astype(int).tolist()

    trained = {}
    for training in ("annotator", "cotrain", None):
        out = tmp_path / str(training)
        run_refinement(make_config(noisy_data, out, num_rounds=2, num_labeled=0, relabel_anchor_weight=0.5,
                                   relabel_ensemble=False, relabel_view_model=training and view_model,
                                   relabel_view_training=training or "annotator", export_model=False))
        trained[training] = [[r for r in read_round(out, i)[0] if r["split"] == "train"] for i in (1, 2)]
        trained[training] += [read_round(out, i)[1] for i in (1, 2)]
    for training in ("annotator", "cotrain"):
        first, second, metrics, metrics_2 = trained[training]
        view_logit = np.array([r["view_logit"] for r in first])
        assert [r["pseudo_label"] for r in first] == cut(view_logit)
        assert metrics["view"]["priors"] == pytest.approx(oracle_priors(gold, annotator).to_dict())
        assert [r["pseudo_label"] for r in second] == cut(np.array([r["view_logit"] for r in second]))
    assert (tmp_path / "annotator" / "round_01" / "view" / "head.safetensors").is_file()

    first, second, _, metrics_2 = trained["annotator"]
    assert [r["view_logit"] for r in second] == [r["view_logit"] for r in first]
    assert [r["view_pseudo_label"] for r in first] == annotator.tolist()
    assert metrics_2["view"]["trained_in_round"] == 1 and not (tmp_path / "annotator" / "round_02" / "view").exists()

    first, second, _, metrics_2 = trained["cotrain"]
    chain = [r["view_pseudo_label"] for r in first]
    assert chain == cut(np.array([r["logit"] for r in first])) and chain != annotator.tolist()
    assert metrics_2["view"]["priors"]["theta_p"] == pytest.approx(oracle_priors(gold, np.array(chain)).theta_p)
    assert (tmp_path / "cotrain" / "round_02" / "view" / "head.safetensors").is_file()

    first, _, metrics, _ = trained[None]
    assert "view" not in metrics and "view_logit" not in first[0]
    assert [r["pseudo_label"] for r in first] == cut(np.array([r["logit"] for r in first]))


def test_the_interval_rule_refuses_what_the_point_rule_lets_through(noisy_rows, make_config, tmp_path):
    """Pseudo-labels drawn at random (chance level): with min_delta between the 50-item sample's lower bound
    and its point estimate, the point rule trains and the interval rule refuses before round 1, saying why."""
    rng = np.random.default_rng(5)
    path = write_jsonl(tmp_path / "chance.jsonl", [{**r, "pseudo_label": int(rng.random() < 0.5)} for r in noisy_rows])
    probe = run_refinement(make_config(path, tmp_path / "probe", num_rounds=1, prior_guard="point", min_delta=-1.0))
    priors = probe["rounds"][1]["priors"]
    assert priors["delta_lower"] < priors["delta"] and priors["confidence"] == 0.8
    between = (priors["delta_lower"] + priors["delta"]) / 2
    run_refinement(make_config(path, tmp_path / "point", num_rounds=1, prior_guard="point", min_delta=between))
    assert (tmp_path / "point" / "round_01").is_dir()
    with pytest.raises(ValueError, match=r"80% lower confidence bound .* labeled items would be needed"):
        run_refinement(make_config(path, tmp_path / "interval", num_rounds=1, min_delta=between))
    assert not (tmp_path / "interval" / "round_01").exists()


def test_a_run_whose_sample_rates_the_annotator_best_ships_the_vanilla_classifier(noisy_rows, make_config,
                                                                                   tmp_path, caplog):
    """Gold labels as round-0 labels: no refined round can beat them on the labeled sample, so the run ships a
    PN classifier of them (rated within the sample's noise of the refined rounds), says so, marks it in the
    exported config and card, and a rerun reuses it."""
    from conftest import tree_digest

    from reward.export import export_reward_model

    path = write_jsonl(tmp_path / "perfect.jsonl", [{**r, "pseudo_label": r["label"]} for r in noisy_rows])
    out = tmp_path / "run"
    cfg = make_config(path, out, num_rounds=2)
    with caplog.at_level("WARNING"):
        summary = run_refinement(cfg)
    assert summary["rounds"][0]["selection_score"] == pytest.approx(1.0)
    assert summary["selected_round"] == 0 and summary["shipped"] == "vanilla"
    assert "shipping the PN classifier of the annotator's labels (vanilla RLAIF)" in caplog.text
    assert summary["note"] in (out / "report.md").read_text()
    vanilla = summary["shipped_metrics"]
    assert vanilla["vanilla"] and vanilla["selection_risk"] == "pn" and (out / "vanilla" / "head.safetensors").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["reward_source"] == "vanilla_pn" and config["refinement_round"] == 0

    digest = tree_digest(out / "vanilla")
    assert run_refinement(cfg)["shipped_metrics"] == vanilla and tree_digest(out / "vanilla") == digest

    exported = export_reward_model(out, tmp_path / "reward", verify_items=32)
    config = json.loads((exported / "config.json").read_text())
    assert config["reward_source"] == "vanilla_pn" and config["export_check"]["max_abs_logit_diff"] < 1e-3
    assert config["shipped_quality"] == vanilla["quality"]
    assert "vanilla RLAIF" in (exported / "README.md").read_text()


def tiny_rows() -> list[dict]:
    """80 one-line requests for a tiny fine-tuned model: label 1 for baking bread, 0 for a bomb; every 4th
    pseudo-label flipped."""
    rng = random.Random(0)
    return [{"prompt": f"{rng.choice(['i', 'we'])} want to {rng.choice(['bake bread', 'build a bomb'])}",
             "response": "ok", "label": i % 2, "pseudo_label": (i % 2) if i % 4 else 1 - i % 2,
             "split": ("train", "train", "train", "val", "test")[i % 5]} for i in range(80)]


def test_a_fine_tuned_round_starts_from_the_base_model_unless_told_to_continue(tmp_path):
    """With a learning rate of 0 a round's model is exactly where it started: continuing from round 1 gives round
    2 round 1's logits, while a fresh start draws a new classification head (another seed), so they differ."""
    from tiny_models import build_tiny_llama

    from refinement.config import RefineConfig

    rows = tiny_rows()
    data = write_jsonl(tmp_path / "tiny.jsonl", rows)
    base = build_tiny_llama(tmp_path / "tiny")
    logits = {}
    for reinit in (True, False):
        out = tmp_path / f"reinit_{reinit}"
        run_refinement(RefineConfig(dataset_path=str(data), output_dir=str(out), model_name_or_path=base,
                                    mode="full", loss="pn", learning_rate=0.0, num_train_epochs=1, max_length=16,
                                    per_device_train_batch_size=8, num_rounds=2, num_labeled=0, min_delta=-1.0,
                                    reinit_each_round=reinit, round_selection="last"))
        logits[reinit] = [[r["logit"] for r in read_round(out, i)[0]] for i in (1, 2)]
    assert logits[True][0] == pytest.approx(logits[False][0])        # round 1 starts from the base either way
    assert logits[False][1] == pytest.approx(logits[False][0], abs=1e-5)
    assert not np.allclose(logits[True][1], logits[True][0], atol=1e-3)


def test_a_pn_classifier_rated_below_a_refined_round_is_not_shipped(noisy_rows, make_config, tmp_path):
    """Round 0 rated best while the PN head of its labels rates far below round 1 (as on labels skewed to one
    class): the run ships round 1 and says why; a gap within the sample's noise still ships the vanilla head."""
    from refinement.loop import Refinement

    out = tmp_path / "run"
    run = Refinement(make_config(write_jsonl(tmp_path / "d.jsonl", noisy_rows), out, num_rounds=1))
    rounds = [{"round": 0, "selection_score": 0.70}, {"round": 1, "selection_score": 0.64, "threshold": 0.0}]

    (out / "vanilla").mkdir(parents=True)
    (out / "vanilla" / "metrics.json").write_text(json.dumps({"round": 0, "vanilla": True, "selection_score": 0.40}))
    shipped, note = run._vanilla_or_best_round(None, rounds)  # vanilla/ exists: no training
    assert shipped is rounds[1] and "more than 0.071 below round 1 (0.640): shipping round 1" in note
    # within a standard error of an accuracy on 50 labels (0.071) the vanilla classifier still ships
    (out / "vanilla" / "metrics.json").write_text(json.dumps({"round": 0, "vanilla": True, "selection_score": 0.58}))
    shipped, note = run._vanilla_or_best_round(None, rounds)  # vanilla/ exists: no training
    assert shipped["vanilla"] and "vanilla RLAIF" in note


def test_fine_tuned_crossfit_train_logits_come_from_models_that_never_saw_the_item(tmp_path):
    """mode=full with relabel_crossfit_folds=2: each training item's logit is that of a model fine-tuned (same
    seed) on the other fold only; validation and test logits stay the shipped model's; the fold models are
    deleted once they have scored."""
    from tiny_models import build_tiny_llama

    from refinement.backends import FinetuneBackend
    from refinement.config import RefineConfig

    rows = tiny_rows()
    cfg = RefineConfig(dataset_path=str(write_jsonl(tmp_path / "tiny.jsonl", rows)), output_dir=str(tmp_path / "run"),
                       model_name_or_path=build_tiny_llama(tmp_path / "tiny"), mode="full", loss="robust_uu",
                       learning_rate=1e-3, num_train_epochs=1, max_length=16, per_device_train_batch_size=8,
                       relabel_crossfit_folds=2)
    corpus = load_corpus(cfg)
    backend = FinetuneBackend(cfg, corpus)
    risk = risk_for("robust_uu", 0.5, 0.75, 0.25)
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    logits, _ = backend.train(round_dir, corpus.pseudo, risk, risk, seed=3)
    assert not list(round_dir.glob(".crossfit_fold*"))

    train_texts = corpus.texts["train"]

    def refit_and_score(fold_train, held_out):
        model = backend._fit(cfg.model_name_or_path, fold_train, corpus.pseudo, risk, risk, 3,
                             tmp_path / f"check{len(held_out)}_{held_out[0]}")
        return backend._logits(model, [train_texts[i] for i in held_out])

    assert_scored_out_of_fold(logits["train"], corpus.pseudo["train"], 3, refit_and_score, tolerance=1e-5)
    shipped = round_dir / "model"
    in_sample = backend._logits(shipped, train_texts)
    assert not np.allclose(logits["train"], in_sample, atol=1e-3)
    assert logits["test"] == pytest.approx(backend._logits(shipped, corpus.texts["test"]), abs=1e-6)
