"""Tests for refinement.data: formats, adapters on the real files, validation errors, splits, pseudo-labels."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinement.data import (
    SPLITS,
    DataError,
    format_example,
    load_preference_pairs,
    load_rows,
    scores_to_pseudo_labels,
    split_by_prompt,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEAVERTAILS = DATA / "beavertails-30k-test" / "0_A_beaver_tails.json"
HH_RLHF = DATA / "hh-rlhf-harmless-base" / "test.jsonl.gz"
ANNOTATIONS = DATA / "annotations" / "beavertails_smollm2.jsonl"
needs_real_data = pytest.mark.skipif(not BEAVERTAILS.exists(), reason="shared data not present")

ROWS = [
    {"prompt": "How do I bake bread?", "response": "Mix flour and water.", "label": 1, "split": "train"},
    {"prompt": "How do I pick a lock?", "response": "", "label": 0, "split": "test"},
    {"prompt": "Tell me a joke", "response": "Why did the chicken...", "label": 1, "split": "val"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        json.dump(rows, handle)
    return path


def as_records(ds) -> list[dict]:
    return [dict(row) for row in ds]


# ---------------------------------------------------------------- format_example


def test_format_example_with_response():
    assert format_example("  hi there ", "\nhello\n") == "Human: hi there\n\nAssistant: hello"


@pytest.mark.parametrize("response", ["", None, "   \n"])
def test_format_example_without_response(response):
    assert format_example(" hi ", response) == "Human: hi"


# ---------------------------------------------------------------- file types


@pytest.mark.parametrize(
    "name, writer",
    [
        ("rows.jsonl", write_jsonl),
        ("rows.jsonl.gz", write_jsonl),
        ("rows.json", write_json),
        ("rows.json.gz", write_json),
        ("rows.csv", lambda path, rows: pd.DataFrame(rows).to_csv(path, index=False) or path),
        ("rows.parquet", lambda path, rows: pd.DataFrame(rows).to_parquet(path, index=False) or path),
    ],
)
def test_file_types_round_trip(tmp_path, name, writer):
    path = tmp_path / name
    writer(path, ROWS)
    ds = load_rows(str(path))
    assert as_records(ds) == ROWS
    assert ds.features["label"].dtype == "int64"
    assert ds.info.dataset_name == str(path)


def test_missing_response_column_becomes_empty(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    assert load_rows(str(path))["response"] == ["", ""]


def test_none_response_becomes_empty(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": None}, {"prompt": "b", "response": "x"}])
    assert load_rows(str(path))["response"] == ["", "x"]


def test_bool_and_float_labels_cast_to_int(tmp_path):
    rows = [
        {"prompt": "a", "label": True, "pseudo_label": 1.0, "pseudo_score": 1},
        {"prompt": "b", "label": False, "pseudo_label": 0.0, "pseudo_score": 0.25},
    ]
    ds = load_rows(str(write_jsonl(tmp_path / "b.jsonl", rows)))
    assert ds["label"] == [1, 0] and ds["pseudo_label"] == [1, 0] and ds["pseudo_score"] == [1.0, 0.25]
    assert [ds.features[f].dtype for f in ("label", "pseudo_label", "pseudo_score")] == ["int64", "int64", "float64"]


# ---------------------------------------------------------------- column_map


def test_column_map_renames_before_validation(tmp_path):
    rows = [{"question": "q1", "answer": "a1", "is_safe": 1}, {"question": "q2", "answer": "a2", "is_safe": 0}]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    ds = load_rows(str(path), column_map={"question": "prompt", "answer": "response", "is_safe": "label"})
    assert as_records(ds) == [{"prompt": "q1", "response": "a1", "label": 1},
                              {"prompt": "q2", "response": "a2", "label": 0}]


def test_column_map_missing_column_names_file_column_and_available(tmp_path):
    path = write_jsonl(tmp_path / "mapped.jsonl", [{"question": "q1"}])
    with pytest.raises(DataError, match=r"mapped\.jsonl.*'is_safe'.*available.*question"):
        load_rows(str(path), column_map={"question": "prompt", "is_safe": "label"})


# ---------------------------------------------------------------- adapters on the real files


@needs_real_data
def test_beavertails_adapter_on_real_file():
    ds = load_rows(str(BEAVERTAILS))
    assert ds.column_names == ["prompt", "response", "label"]
    assert ds.num_rows == 3021
    assert sum(ds["label"]) == 1288 and ds["label"].count(0) == 1733
    assert len(set(ds["prompt"])) == 2526
    assert not any(p.startswith("Human user:") or "AI assistant:" in p for p in ds["prompt"])
    raw = json.loads(BEAVERTAILS.read_text())
    assert ds["label"] == [int(r["output"].rstrip().endswith("unharmful")) for r in raw]
    assert load_rows(str(BEAVERTAILS), adapter="beavertails")["prompt"] == ds["prompt"]


@needs_real_data
def test_hh_rlhf_adapter_on_real_file():
    pairs = load_preference_pairs(str(HH_RLHF))
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    assert pairs.num_rows == 2312
    with gzip.open(HH_RLHF, "rt", encoding="utf-8") as handle:
        raw = [json.loads(line) for line in handle]
    assert all(pairs["rejected"]) and all(pairs["prompt"])
    # The upstream file has chosen dialogues that end on an empty "Assistant:" turn (a refusal by silence).
    empty_upstream = sum(r["chosen"].rstrip().endswith("Assistant:") for r in raw)
    assert pairs["chosen"].count("") == empty_upstream
    single_turn = [p for p in pairs["prompt"] if "\n\nHuman:" not in p and "\n\nAssistant:" not in p]
    assert len(single_turn) == 662
    assert all(not p.startswith("Human:") for p in pairs["prompt"])


def test_hh_rlhf_prompt_rebuilds_dialogue_with_format_example(tmp_path):
    chosen = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: good"
    rows = [
        {"chosen": chosen, "rejected": "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: bad"},
        {"chosen": "\n\nHuman: only\n\nAssistant: fine", "rejected": "\n\nHuman: only\n\nAssistant: nasty"},
    ]
    pairs = load_preference_pairs(str(write_jsonl(tmp_path / "hh.jsonl", rows)))
    assert as_records(pairs) == [
        {"prompt": "q1\n\nAssistant: a1\n\nHuman: q2", "chosen": "good", "rejected": "bad"},
        {"prompt": "only", "chosen": "fine", "rejected": "nasty"},
    ]
    assert format_example(pairs[0]["prompt"], pairs[0]["chosen"]) == chosen.strip()


@needs_real_data
def test_annotations_split_column():
    ds = load_rows(str(ANNOTATIONS))
    assert ds.column_names[:3] == ["prompt", "response", "label"]
    assert "smollm2_zero_shot" in ds.column_names
    splits = split_by_prompt(ds, split_column="split")
    assert {k: v.num_rows for k, v in splits.items()} == {"train": 2114, "val": 303, "test": 602}
    assert all(set(v["split"]) == {k} for k, v in splits.items())
    prompts = [set(splits[k]["prompt"]) for k in ("train", "val", "test")]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])


# ---------------------------------------------------------------- split_by_prompt


@pytest.fixture(scope="module")
def beavertails():
    if not BEAVERTAILS.exists():
        pytest.skip("shared data not present")
    return load_rows(str(BEAVERTAILS))


def test_split_by_prompt_groups_prompts_and_follows_ratios(beavertails):
    splits = split_by_prompt(beavertails, seed=0)
    sizes = {k: v.num_rows for k, v in splits.items()}
    assert sum(sizes.values()) == beavertails.num_rows
    prompts = {k: set(v["prompt"]) for k, v in splits.items()}
    assert not (prompts["train"] & prompts["val"] or prompts["train"] & prompts["test"]
                or prompts["val"] & prompts["test"])
    for key, ratio in zip(("train", "val", "test"), (0.7, 0.1, 0.2)):
        assert abs(sizes[key] / beavertails.num_rows - ratio) < 0.02, sizes


def test_split_by_prompt_seeded(beavertails):
    first = split_by_prompt(beavertails, seed=3)
    again = split_by_prompt(beavertails, seed=3)
    other = split_by_prompt(beavertails, seed=4)
    assert first["test"]["prompt"] == again["test"]["prompt"]
    assert first["test"]["prompt"] != other["test"]["prompt"]


def test_split_by_prompt_independent_of_hash_seed(tmp_path):
    rows = [{"prompt": f"prompt {i % 40}", "response": str(i)} for i in range(100)]
    path = write_jsonl(tmp_path / "h.jsonl", rows)
    script = (
        "from refinement.data import load_rows, split_by_prompt;"
        f"print(split_by_prompt(load_rows({str(path)!r}), seed=7)['test']['response'])"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[1])
        outputs.add(result.stdout.strip().splitlines()[-1])
    assert len(outputs) == 1


def test_split_column_unknown_value_names_file_and_row(tmp_path):
    rows = [{"prompt": "a", "split": "train"}, {"prompt": "b", "split": "holdout"}]
    ds = load_rows(str(write_jsonl(tmp_path / "splits.jsonl", rows)))
    with pytest.raises(DataError, match=r"splits\.jsonl.*'split' row 1.*holdout"):
        split_by_prompt(ds, split_column="split")


def test_split_column_accepts_validation_alias(tmp_path):
    rows = [{"prompt": "a", "split": "validation"}, {"prompt": "b", "split": "train"}]
    splits = split_by_prompt(load_rows(str(write_jsonl(tmp_path / "s.jsonl", rows))), split_column="split")
    assert splits["val"]["prompt"] == ["a"] and splits["train"]["prompt"] == ["b"]


def test_split_by_prompt_bad_ratios(tmp_path):
    ds = load_rows(str(write_jsonl(tmp_path / "r.jsonl", ROWS)))
    with pytest.raises(DataError, match=r"r\.jsonl.*ratios"):
        split_by_prompt(ds, ratios=(0.5, 0.5, 0.5))


# ---------------------------------------------------------------- bad input


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl"):
        load_rows(str(path))


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet"):
        load_rows(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl.*empty"):
        load_rows(str(path))


def test_zero_rows_json(tmp_path):
    path = write_json(tmp_path / "none.json", [])
    with pytest.raises(DataError, match=r"none\.json.*zero rows"):
        load_rows(str(path))


def test_zero_rows_csv_header_only(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("prompt,label\n")
    with pytest.raises(DataError, match=r"header\.csv.*zero rows"):
        load_rows(str(path))


def test_zero_rows_parquet(tmp_path):
    path = tmp_path / "none.parquet"
    pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DataError, match=r"none\.parquet.*zero rows"):
        load_rows(str(path))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"rows\.txt.*unsupported"):
        load_rows(str(path))


def test_not_a_file_nor_hub_dataset(tmp_path):
    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError, match=r"nowhere\.jsonl.*neither a local file nor a reachable Hub dataset"):
        load_rows(missing)


def test_unknown_adapter(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    with pytest.raises(DataError, match=r"a\.jsonl.*adapter"):
        load_rows(str(path), adapter="alpaca")


def test_missing_required_column(tmp_path):
    path = write_jsonl(tmp_path / "noprompt.jsonl", [{"text": "a", "label": 1}])
    with pytest.raises(DataError, match=r"noprompt\.jsonl.*'prompt'.*available.*text"):
        load_rows(str(path))


def test_missing_pair_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(DataError, match=r"pairs\.jsonl.*'rejected'"):
        load_preference_pairs(str(path))


def test_non_string_prompt(tmp_path):
    path = write_jsonl(tmp_path / "num.jsonl", [{"prompt": 1}, {"prompt": 2}])
    with pytest.raises(DataError, match=r"num\.jsonl.*row 0.*'prompt'"):
        load_rows(str(path))


def test_null_prompt_names_row(tmp_path):
    path = write_jsonl(tmp_path / "nul.jsonl", [{"prompt": "a"}, {"prompt": None}])
    with pytest.raises(DataError, match=r"nul\.jsonl.*row 1.*'prompt'"):
        load_rows(str(path))


@pytest.mark.parametrize("field", ["label", "pseudo_label"])
@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes", None])
def test_bad_binary_value_names_file_field_row_value(tmp_path, field, bad):
    rows = [{"prompt": "a", field: 1}, {"prompt": "b", field: 0}, {"prompt": "c", field: bad}]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    with pytest.raises(DataError, match=rf"labels\.jsonl.*'{field}' row 2 has value {bad!r}"):
        load_rows(str(path))


def test_string_labels_refused(tmp_path):
    path = write_jsonl(tmp_path / "strings.jsonl", [{"prompt": "a", "label": "1"}, {"prompt": "b", "label": "0"}])
    with pytest.raises(DataError, match=r"strings\.jsonl.*'label' row 0 has value '1'"):
        load_rows(str(path))


def test_nan_label_in_parquet(tmp_path):
    path = tmp_path / "nan.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "label": [1.0, float("nan")]}).to_parquet(path)
    with pytest.raises(DataError, match=r"nan\.parquet.*'label' row 1"):
        load_rows(str(path))


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), None])
def test_bad_pseudo_score_names_row(tmp_path, bad):
    path = tmp_path / "scores.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "pseudo_score": [0.3, bad]}).to_parquet(path)
    with pytest.raises(DataError, match=r"scores\.parquet.*'pseudo_score' row 1"):
        load_rows(str(path))


def test_bad_beavertails_row(tmp_path):
    rows = [
        {"instruction": "x", "input": "Human user:\nq\n\nAI assistant:\nr\n\n", "output": "Response: harmful"},
        {"instruction": "x", "input": "Human user:\nq\n\nAI assistant:\nr\n\n", "output": "Response: maybe"},
    ]
    path = write_json(tmp_path / "bt.json", rows)
    with pytest.raises(DataError, match=r"bt\.json.*row 1.*'output'"):
        load_rows(str(path))


def test_bad_hh_dialogue(tmp_path):
    rows = [{"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "no dialogue here"}]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError, match=r"hh\.jsonl.*row 0.*'rejected'"):
        load_rows(str(path), adapter="hh_rlhf")


# ---------------------------------------------------------------- scores_to_pseudo_labels


def test_median_splits_half_half():
    scores = np.random.default_rng(0).random(1000)
    labels = scores_to_pseudo_labels(scores, quantile=0.5)
    assert labels.dtype == np.int64
    assert labels.sum() == 500
    assert (labels == (scores > np.median(scores))).all()


def test_quantile_sets_threshold():
    labels = scores_to_pseudo_labels(np.arange(10) / 10, quantile=0.8)
    assert labels.tolist() == [0] * 8 + [1] * 2


def test_threshold_ties_go_to_harmful():
    assert scores_to_pseudo_labels([0.2, 0.5, 0.7], threshold=0.5).tolist() == [0, 0, 1]


def test_nan_score_names_row():
    with pytest.raises(DataError, match="row 2"):
        scores_to_pseudo_labels([0.1, 0.4, float("nan")], threshold=0.5)


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.5, "quantile": 0.5}])
def test_exactly_one_of_threshold_or_quantile(kwargs):
    with pytest.raises(DataError, match="exactly one"):
        scores_to_pseudo_labels([0.1, 0.9], **kwargs)


def test_a_mapped_column_replaces_one_of_the_target_name(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r", "label": 1, "refusal": i % 2}) + "\n"
                            for i in range(4)))
    rows = load_rows(str(path), column_map={"refusal": "label"})
    assert rows["label"] == [0, 1, 0, 1] and "refusal" not in rows.column_names


# ---------------------------------------------------------------- round-0 labels: the one precedence


def corpus_from_yaml(path, *flags: str):
    """load_corpus with the shipped cpu_minilm.yaml (score_column: smollm2_4shot, score_quantile: 0.5)."""
    from conftest import REPO

    from alignment.trl_api import TrlParser
    from refinement.config import RefineConfig
    from refinement.corpus import load_corpus

    yaml_path = REPO / "recipes" / "configs" / "refine" / "cpu_minilm.yaml"
    (cfg,) = TrlParser((RefineConfig,)).parse_args_and_config(
        ["--config", str(yaml_path), "--dataset_path", str(path), *flags])
    return load_corpus(cfg)


def labelled_rows(n: int = 40) -> list[dict]:
    """Rows with a split, a gold label, the file's own pseudo_label and a score that disagrees with it (as many
    0.1 as 1.0 scores per split, so the median threshold separates them)."""
    rows = []
    for i in range(n):
        rows.append({"prompt": f"prompt {i}", "response": f"reply {i}", "split": SPLITS[i % 3], "label": i % 2,
                     "pseudo_label": i % 2, "my_score": 1.0 - (i % 2) * 0.9})
    return rows


def test_a_file_with_its_own_pseudo_label_works_with_a_config_naming_another_score_column(tmp_path, caplog):
    path = write_jsonl(tmp_path / "pairs.jsonl", labelled_rows())
    with caplog.at_level("INFO", logger="refinement.corpus"):
        corpus = corpus_from_yaml(path)
    assert np.array_equal(corpus.pseudo["train"], corpus.gold["train"])  # the file's pseudo_label, as given
    assert "no column 'smollm2_4shot' (score_column); round-0 labels: its 'pseudo_label' column" in caplog.text


def test_a_score_column_the_data_has_wins_over_pseudo_label_unless_none(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", labelled_rows())
    scored = corpus_from_yaml(path, "--score_column", "my_score")
    assert np.array_equal(scored.pseudo["train"], 1 - scored.gold["train"])  # thresholded scores, not pseudo_label
    assert scored.scores is not None
    given = corpus_from_yaml(path, "--score_column", "none")
    assert np.array_equal(given.pseudo["train"], given.gold["train"])


def test_missing_round_zero_labels_name_the_column_what_the_data_has_and_the_fix(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "pseudo_label"} for r in labelled_rows()]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as err:
        corpus_from_yaml(path)
    assert str(err.value) == (
        f"{path}: no round-0 labels: the data has no 'smollm2_4shot' (score_column) and no 'pseudo_label' "
        "(pseudo_label_column) column; it has prompt, response, split, label, my_score: pass --score_column <column> "
        "with --score_quantile 0.5 (or --score_threshold), add a pseudo_label column, or judge the pairs with an "
        "annotator: block")
    with pytest.raises(DataError, match="score_column 'my_score' needs a threshold"):
        corpus_from_yaml(path, "--score_column", "my_score", "--score_quantile", "none")


def test_the_corpus_reads_its_file_once(tmp_path, monkeypatch):
    import refinement.corpus as corpus_module

    reads = []
    real = corpus_module.read_table
    monkeypatch.setattr(corpus_module, "read_table", lambda *a, **k: reads.append(a) or real(*a, **k))
    path = write_jsonl(tmp_path / "pairs.jsonl", labelled_rows())
    corpus_from_yaml(path, "--score_column", "my_score", "--prompt_column", "prompt")
    assert len(reads) == 1
