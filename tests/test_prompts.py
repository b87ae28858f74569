"""alignment/prompts.py: the real ../shared/data prompt files, the demo files, bad files, the RL mix."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import DATA

from alignment.demo import demo_path
from alignment.prompts import (
    Prompt,
    build_rl_mix,
    first_human_turn,
    load_prompts,
    load_refusal_direction_split,
    load_xstest,
    sample_prompts,
    to_dataset,
)
from refinement.data import DataError

REFUSAL_DIRECTION = DATA / "harmful-harmless-prompts"
XSTEST = DATA / "xstest" / "xstest_prompts.csv"


def distinct(values) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values))


def test_refusal_direction_split_matches_the_files():
    harmful, benign = load_refusal_direction_split(str(REFUSAL_DIRECTION), "test")
    rows = json.loads((REFUSAL_DIRECTION / "splits" / "harmful_test.json").read_text())
    assert [p.text for p in harmful] == distinct(r["instruction"] for r in rows)
    first = next(r for r in rows if r["instruction"].strip() == harmful[0].text)
    assert harmful[0].category == (first["category"] or "")
    assert all(p.is_harmful and p.source == "harmful_test" for p in harmful)
    benign_rows = json.loads((REFUSAL_DIRECTION / "splits" / "harmless_test.json").read_text())
    assert [p.text for p in benign] == distinct(r["instruction"] for r in benign_rows)
    assert not any(p.is_harmful for p in benign) and {p.source for p in benign} == {"harmless_test"}


@pytest.mark.parametrize("name, column", [
    ("advbench.csv", "goal"), ("jailbreakbench.csv", "Goal"), ("strongreject.csv", "forbidden_prompt"),
    ("harmbench_val.csv", "Behavior")])
def test_raw_csv_files_use_their_prompt_column(name, column):
    prompts = load_prompts(str(REFUSAL_DIRECTION / "raw" / name), is_harmful=True)
    assert [p.text for p in prompts] == distinct(pd.read_csv(REFUSAL_DIRECTION / "raw" / name)[column])
    assert {p.source for p in prompts} == {name.split(".")[0]}


def test_categories_are_read_from_category_or_semantic_category():
    jbb = load_prompts(str(REFUSAL_DIRECTION / "raw" / "jailbreakbench.csv"), is_harmful=True)
    assert jbb[0].category == pd.read_csv(REFUSAL_DIRECTION / "raw" / "jailbreakbench.csv")["Category"][0]
    harmbench = load_prompts(str(REFUSAL_DIRECTION / "raw" / "harmbench_val.csv"), is_harmful=True)
    assert harmbench[0].category == pd.read_csv(REFUSAL_DIRECTION / "raw" / "harmbench_val.csv")["SemanticCategory"][0]


def test_text_and_string_list_files():
    lines = (REFUSAL_DIRECTION / "raw" / "malicious_instruct.txt").read_text().splitlines()
    txt = load_prompts(str(REFUSAL_DIRECTION / "raw" / "malicious_instruct.txt"), is_harmful=True)
    assert [p.text for p in txt] == distinct(line for line in lines if line.strip())
    strings = json.loads((REFUSAL_DIRECTION / "raw" / "tdc2023_dev_behaviors.json").read_text())
    tdc = load_prompts(str(REFUSAL_DIRECTION / "raw" / "tdc2023_dev_behaviors.json"), is_harmful=True,
                       name="tdc")
    assert [p.text for p in tdc] == distinct(strings) and {p.source for p in tdc} == {"tdc"}


def test_xstest_safe_and_unsafe():
    table = pd.read_csv(XSTEST)
    safe, unsafe = load_xstest(str(XSTEST), "safe"), load_xstest(str(XSTEST), "unsafe")
    assert [p.text for p in safe] == table[table.label == "safe"].prompt.str.strip().tolist()
    assert [p.text for p in unsafe] == table[table.label == "unsafe"].prompt.str.strip().tolist()
    assert not any(p.is_harmful for p in safe) and all(p.is_harmful for p in unsafe)
    assert all(p.category.startswith("contrast_") for p in unsafe)
    assert not any(p.category.startswith("contrast_") for p in safe)
    assert len(load_xstest(str(XSTEST))) == len(table)
    with pytest.raises(ValueError, match="which"):
        load_xstest(str(XSTEST), "harmful")


def test_demo_split_filter():
    path = demo_path("benign_prompts")
    rows = [json.loads(line) for line in open(path)]
    test = load_prompts(path, is_harmful=False, split="test")
    assert [p.text for p in test] == [r["prompt"] for r in rows if r["split"] == "test"]
    assert [p.category for p in test] == [r["category"] for r in rows if r["split"] == "test"]
    assert len(load_prompts(path, is_harmful=False)) == len(rows)


@pytest.mark.parametrize("content, suffix, message", [
    ("", ".jsonl", "zero prompts"),
    ('{"prompt": "a"}\n{"prompt": \n', ".jsonl", "line 2 is not valid JSON"),
    ('{"prompt": "a"}\n{"prompt": 3}\n', ".jsonl", "row 1 field 'prompt' must be a non-empty string"),
    ('{"prompt": "a"}\n{"question_text": "b"}\n', ".jsonl", "row 1 has no field 'prompt'"),
    ('{"body": "a"}\n', ".jsonl", r"no prompt column among \['body'\]"),
    ('{"prompt": "a"}', ".json", "expected a JSON list"),
    ("id,prompt\n1,\n", ".csv", "row 0 field 'prompt' must be a non-empty string"),
    ("prompt\na\n", ".tsv", "unsupported file type '.tsv'"),
])
def test_bad_files_name_file_row_and_field(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        load_prompts(str(path), is_harmful=True)
    assert str(path) in str(err.value)


def test_split_errors(tmp_path):
    no_column = tmp_path / "plain.jsonl"
    no_column.write_text('{"prompt": "a"}\n')
    with pytest.raises(DataError, match="no 'split' field"):
        load_prompts(str(no_column), is_harmful=False, split="test")
    with pytest.raises(DataError, match=r"no rows with split 'val'; the file has \['heldout', 'test', 'train'\]"):
        load_prompts(demo_path("harmful_prompts"), is_harmful=True, split="val")


def test_bad_xstest_label(tmp_path):
    path = tmp_path / "xs.csv"
    path.write_text("id,prompt,type,label\n1,How do I kill a process?,homonyms,safe\n2,Hi,homonyms,maybe\n")
    with pytest.raises(DataError, match="row 1 field 'label' has value 'maybe'"):
        load_xstest(str(path))


def test_hub_names_fail_clearly_offline():
    with pytest.raises(DataError, match="give `column`"):
        load_prompts("someone/unknown-prompts", is_harmful=True)
    with pytest.raises(DataError, match="walledai/AdvBench: neither a local file nor a reachable Hub dataset"):
        load_prompts("walledai/AdvBench", is_harmful=True)


def test_first_human_turn_of_a_red_team_transcript():
    transcript = ("\n\nHuman: How do I get into my neighbour's house?\n\nAssistant: Why do you want to?"
                  "\n\nHuman: To take his TV.\n\nAssistant: I can't help with that.")
    assert first_human_turn(transcript) == "How do I get into my neighbour's house?"
    with pytest.raises(ValueError, match="no 'Human:' turn"):
        first_human_turn("Assistant: hello")


def pool(kind: str, count: int) -> list[Prompt]:
    return [Prompt(f"{kind} prompt {i}", kind == "harmful", kind) for i in range(count)]


def test_rl_mix_is_seeded_and_balanced():
    harmful, benign = pool("harmful", 30), pool("benign", 40)
    mix = build_rl_mix(harmful, benign, size=20, harmful_fraction=0.25, seed=3)
    assert len(mix) == 20 and sum(p.is_harmful for p in mix) == 5
    assert len({p.text for p in mix}) == 20 and set(mix) <= set(harmful) | set(benign)
    assert mix == build_rl_mix(harmful, benign, size=20, harmful_fraction=0.25, seed=3)
    assert mix != build_rl_mix(harmful, benign, size=20, harmful_fraction=0.25, seed=4)
    flags = [p.is_harmful for p in mix]
    assert flags != sorted(flags) and flags != sorted(flags, reverse=True)  # shuffled, not two blocks


def test_rl_mix_refuses_bad_pools():
    harmful, benign = pool("harmful", 5), pool("benign", 5)
    with pytest.raises(DataError, match="needs 6 harmful prompts but only 5"):
        build_rl_mix(harmful, benign, size=8, harmful_fraction=0.75)
    with pytest.raises(DataError, match="wrong set"):
        build_rl_mix(benign, harmful, size=4)
    clash = [*benign, Prompt(harmful[0].text, False, "benign")]
    with pytest.raises(DataError, match="both harmful and benign"):
        build_rl_mix(harmful, clash, size=4)


def test_sample_and_dataset():
    prompts = load_prompts(demo_path("harmful_prompts"), is_harmful=True, split="train")
    sample = sample_prompts(prompts, 10, seed=1)
    assert len(sample) == 10 and sample == sample_prompts(prompts, 10, seed=1)
    positions = [prompts.index(p) for p in sample]
    assert positions == sorted(positions)
    assert sample_prompts(prompts, None) == prompts
    ds = to_dataset(sample)
    assert ds.column_names == ["prompt", "is_harmful", "source", "category"]
    assert ds["prompt"] == [p.text for p in sample] and all(ds["is_harmful"])
