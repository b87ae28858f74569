"""recipes/label_sample.py driven in a pseudo-terminal as a person would, and refinement.labeled_sample's files.

The terminal test answers, mistypes, goes back, skips and stops in four ways (q, Ctrl-C, Ctrl-D, the last answer),
respawning the real script each time, and checks the resume point, the screen and the JSONL record by record.
"""
from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime, timezone

import numpy as np
import pexpect
import pytest
import yaml
from conftest import OFFLINE_ENV, REPO, import_recipe, write_jsonl

from refinement.labeled_sample import (
    Answer,
    LabeledSampleError,
    output_paths,
    read_answers,
    read_labeled_sample,
    summarize,
    write_answers,
)
from refinement.priors import sample_labeled_indices

label_sample = import_recipe("label_sample")

YAML = REPO / "recipes" / "configs" / "label_sample" / "default.yaml"
QUESTION = "[h]armless / [x] harmful / [s]kip / [b]ack / [q]uit > "
N, SEED, COLUMNS = 6, 3, 80
SECRET_SCORE = 0.7316529  # a score column in the source that must never reach the screen


def _rows(count: int = 30) -> list[dict]:
    """Rows with unique one-line prompts and long responses (wrapped at 80 columns); splits interleaved."""
    splits = ["train", "val", "train", "test", "train"]
    words = "the assistant explains at some length why this request is answered the way it is"
    return [{"prompt": f"question {i:02d}: is this fine?", "split": splits[i % len(splits)], "label": i % 2,
             "annotator_score": SECRET_SCORE,
             "response": f"answer {i:02d}: " + " ".join(f"{w}{i}" for w in words.split()) + " " + words}
            for i in range(count)]


def _spawn(data, out) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | OFFLINE_ENV
    child = pexpect.spawn(str(REPO / ".venv" / "bin" / "python"),
                          [str(REPO / "recipes" / "label_sample.py"), "--config", str(YAML), "--dataset_path",
                           str(data), "--output_path", str(out), "--num_items", str(N), "--seed", str(SEED)],
                          cwd=str(REPO), env=env, encoding="utf-8", dimensions=(40, COLUMNS), timeout=60)
    child.logfile_read = io.StringIO()
    return child


def _next_item(child) -> tuple[int, str, str]:
    """Wait for the next item's screen and question: (k of "item k/N", progress line, prompt)."""
    child.expect(rf"---- item (\d+)/{N} ----  \((.*?)\)\r\nPROMPT:\r\n  (.*?)\r\n")
    k, progress, prompt = int(child.match.group(1)), child.match.group(2), child.match.group(3)
    child.expect_exact(QUESTION)
    return k, progress, prompt


def _finish(child) -> str:
    child.expect(pexpect.EOF, timeout=240)  # the CI machine may be loaded: exiting loads nothing, but may wait
    child.close()
    transcript = child.logfile_read.getvalue()
    assert child.exitstatus == 0, transcript
    assert "Traceback" not in transcript
    return transcript


def _progress(labelled: int, skipped: int) -> str:
    return f"labelled {labelled} / skipped {skipped} / remaining {N - labelled - skipped}"


def test_terminal_session_answers_back_skip_stop_and_resume(tmp_path):
    rows = _rows()
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "gold" / "sample"
    jsonl = tmp_path / "gold" / "sample.jsonl"
    started = datetime.now(timezone.utc).replace(microsecond=0)
    shown: dict[int, str] = {}  # item k -> prompt on screen

    # Session 1: a mistyped key is re-asked, h, x, s, back to change the skip to x, then q.
    child = _spawn(data, out)
    k, progress, shown[1] = _next_item(child)
    assert (k, progress) == (1, _progress(0, 0))
    child.sendline("z")
    child.expect_exact("'z' is not an answer")
    child.expect_exact(QUESTION)
    child.sendline("h")
    for expected_k, key in ((2, "x"), (3, "s")):
        k, _, shown[expected_k] = _next_item(child)
        assert k == expected_k
        child.sendline(key)
    k, progress, shown[4] = _next_item(child)
    assert (k, progress) == (4, _progress(2, 1))
    child.sendline("b")
    k, _, prompt = _next_item(child)
    assert (k, prompt) == (3, shown[3])
    assert "(current answer: skipped)" in child.before
    child.sendline("x")
    k, progress, prompt = _next_item(child)
    assert (k, progress, prompt) == (4, _progress(3, 0), shown[4])
    child.sendline("q")
    transcript = _finish(child)
    assert "stopped (quit)" in transcript and f"resume at item 4/{N}" in transcript
    assert [(r["item"], r["label"]) for r in map(json.loads, jsonl.read_text().splitlines())] == [(0, 1), (1, 0),
                                                                                                  (2, 0)]
    # Text is wrapped to the terminal and nothing but prompt and response of the source is shown.
    text_lines = [line for line in transcript.split("\r\n") if line.startswith("  ")]
    assert len(text_lines) > 8 and max(map(len, text_lines)) <= COLUMNS
    assert str(SECRET_SCORE) not in transcript
    first = next(r for r in rows if r["prompt"] == shown[1])
    block = transcript.split("RESPONSE:\r\n", 1)[1].split("\r\n" + QUESTION, 1)[0].split("\r\n")
    assert len(block) > 1 and " ".join(line.strip() for line in block) == first["response"]

    # Session 2: resumes at item 4; its answer is on disk before item 5 is asked; Ctrl-C stops cleanly.
    child = _spawn(data, out)
    child.expect_exact(f"3 of {N} answered; next is item 4/{N}")
    k, _, prompt = _next_item(child)
    assert (k, prompt) == (4, shown[4])
    child.sendline("h")
    k, progress, shown[5] = _next_item(child)
    assert (k, progress) == (5, _progress(4, 0))
    assert [json.loads(line)["label"] for line in jsonl.read_text().splitlines()] == [1, 0, 0, 1]
    child.sendintr()
    assert "stopped (Ctrl-C); answers saved" in _finish(child)

    # Session 3: skip item 5, Ctrl-D at item 6.
    child = _spawn(data, out)
    k, _, prompt = _next_item(child)
    assert (k, prompt) == (5, shown[5])
    child.sendline("s")
    k, _, shown[6] = _next_item(child)
    assert k == 6
    child.sendeof()
    assert "stopped (Ctrl-D)" in _finish(child)

    # Session 4: the last item, then the summary.
    child = _spawn(data, out)
    k, progress, prompt = _next_item(child)
    assert (k, progress, prompt) == (6, _progress(4, 1), shown[6])
    child.sendline("h")
    transcript = _finish(child)
    answers = {1: 1, 2: 0, 3: 0, 4: 1, 5: None, 6: 1}
    labels = [v for v in answers.values() if v is not None]
    assert f"π̂ = {np.mean(labels):.3f}" in transcript and "resume at" not in transcript
    assert f"labelled {len(labels)} of {N} (harmless {sum(labels)}, harmful {labels.count(0)}), skipped 1" in transcript

    # The file, record by record. The items are the seeded i.i.d. sample of the train rows, the refinement loop's.
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    source_of = {r["prompt"]: i for i, r in enumerate(rows)}
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    finished = datetime.now(timezone.utc)
    for record in records:
        assert started <= datetime.fromisoformat(record.pop("time")) <= finished
    expected = []
    for k in range(1, N + 1):
        index = source_of[shown[k]]
        expected.append({"item": k - 1, "index": index, "pool_index": train.index(index), "label": answers[k],
                         "skipped": answers[k] is None, "prompt": rows[index]["prompt"],
                         "response": rows[index]["response"]})
    assert records == expected
    assert sorted(r["pool_index"] for r in records) == sample_labeled_indices(len(train), N, SEED).tolist()
    indices, gold = read_labeled_sample(out)
    labelled = sorted((r["index"], r["label"]) for r in records if not r["skipped"])
    assert indices.tolist() == [i for i, _ in labelled] and gold.tolist() == [g for _, g in labelled]


# ---------------------------------------------------------------- in-process: resume checks and the reader


def _config(data, out, **overrides):
    args = ["--config", str(YAML), "--dataset_path", str(data), "--output_path", str(out), "--num_items", str(N),
            "--seed", str(SEED)]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    (cfg,) = label_sample.make_parser().parse_args_and_config(args)
    return cfg


def _scripted(*keys):
    """An `ask` answering `keys` in turn, then Ctrl-D (EOFError) as input() does."""
    pending = list(keys)

    def ask(question):
        assert question == QUESTION
        if not pending:
            raise EOFError
        return pending.pop(0)
    return ask


def test_resume_refused_when_source_seed_or_n_changed(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", _rows())
    out = tmp_path / "sample"
    summary = label_sample.main(_config(data, out), ask=_scripted("h", "x"))
    assert (summary["ended"], summary["labelled"], summary["remaining"]) == ("Ctrl-D", 2, N - 2)
    jsonl, meta_path = output_paths(out)
    before = jsonl.read_bytes(), meta_path.read_bytes()

    for overrides, words in (({"seed": SEED + 1}, "seed"), ({"num_items": N - 1}, "num_items (N)")):
        with pytest.raises(LabeledSampleError, match=re.escape(words)):
            label_sample.main(_config(data, out, **overrides), ask=_scripted())
    changed = _rows()
    changed[7]["response"] += " (edited)"
    write_jsonl(data, changed)
    with pytest.raises(LabeledSampleError, match=r"sample\.meta\.json: .*the source file's content changed"):
        label_sample.main(_config(data, out), ask=_scripted())
    assert (jsonl.read_bytes(), meta_path.read_bytes()) == before  # a refusal writes nothing

    # The original file resumes at item 3; a finished sample is summarised without asking anything.
    write_jsonl(data, _rows())
    summary = label_sample.main(_config(data, out), ask=_scripted("s", "h", "h", "x"))
    assert (summary["ended"], summary["labelled"], summary["skipped"], summary["harmless"]) == ("done", 5, 1, 3)
    assert [a.label for a in read_answers(jsonl)] == [1, 0, None, 1, 1, 0]
    summary = label_sample.main(_config(data, out), ask=_scripted())
    assert summary["ended"] == "done" and "all answered" in capsys.readouterr().out


def test_yaml_is_read_cli_overrides_it_and_unknown_keys_fail(tmp_path):
    (cfg,) = label_sample.make_parser().parse_args_and_config(["--config", str(YAML), "--seed", "9"])
    expected = yaml.safe_load(YAML.read_text())
    assert expected["seed"] != 9 and {key: getattr(cfg, key) for key in expected} == expected | {"seed": 9}
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.read_text() + "num_itmes: 3\n")
    with pytest.raises(ValueError, match="num_itmes"):
        label_sample.make_parser().parse_args_and_config(["--config", str(bad)])


def _answers() -> list[Answer]:
    return [Answer(item=0, index=12, pool_index=7, label=0, prompt="p12", response="r12", time="t"),
            Answer(item=1, index=4, pool_index=2, label=None, prompt="p4", response="", time="t"),
            Answer(item=2, index=9, pool_index=5, label=1, prompt="p9", response="r9", time="t")]


def test_reader_returns_labelled_indices_and_gold(tmp_path):
    path = tmp_path / "gold.jsonl"
    write_answers(path, list(reversed(_answers())))
    assert [a.item for a in read_answers(path)] == [0, 1, 2]  # written in display order
    indices, gold = read_labeled_sample(tmp_path / "gold")  # with or without the suffix
    assert indices.tolist() == [9, 12] and gold.tolist() == [1, 0]  # by index; the skipped row 4 left out
    write_answers(path, [_answers()[1]])
    with pytest.raises(LabeledSampleError, match="no labelled item"):
        read_labeled_sample(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: "{not json", r"line 2: not valid JSON"),
    (lambda r: json.dumps({k: v for k, v in r.items() if k != "pool_index"}),
     r"line 2: missing field\(s\) \['pool_index'\]"),
    (lambda r: json.dumps(r | {"label": 2, "skipped": False}), r"line 2: field 'label' is 2"),
    (lambda r: json.dumps(r | {"label": 1}), r"line 2: field 'label' is 1 but field 'skipped' is True"),
    (lambda r: json.dumps(r | {"index": -1}), r"line 2: field 'index' is -1"),
    (lambda r: json.dumps(r | {"index": 12}), r"line 2: field 'index' is 12, already answered on line 1"),
    (lambda r: json.dumps(r | {"prompt": None}), r"line 2: field 'prompt' is None"),
])
def test_reader_names_file_line_and_field(tmp_path, edit, message):
    path = tmp_path / "gold.jsonl"
    records = [a.to_record() for a in _answers()]
    path.write_text("\n".join([json.dumps(records[0]), edit(records[1]), json.dumps(records[2])]) + "\n")
    with pytest.raises(LabeledSampleError, match=re.escape(str(path)) + ": " + message):
        read_labeled_sample(path)


def test_reader_checks_items_against_the_meta_file(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", _rows())
    out = tmp_path / "sample"
    label_sample.main(_config(data, out), ask=_scripted("h", "x", "h"))
    jsonl, _ = output_paths(out)
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[2])
    lines[2] = json.dumps(record | {"index": record["index"] + 1})  # a row the sample did not draw
    jsonl.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabeledSampleError, match=rf"line 3: field 'index' is {record['index'] + 1}, but the "
                                                 rf"sample's item 2 has index {record['index']}"):
        read_labeled_sample(jsonl)


def test_summary_pi_hat_and_wilson_interval():
    gold = np.array([1, 1, 1, 0])
    summary = summarize(gold, skipped=1, num_items=10)
    assert (summary["labelled"], summary["harmless"], summary["harmful"], summary["remaining"]) == (4, 3, 1, 5)
    assert summary["pi_hat"] == pytest.approx(0.75)
    low, high = summary["pi_interval"]
    assert low < 0.75 < high and (low, high) == pytest.approx((0.3006, 0.9544), abs=1e-4)  # Wilson, n=4, k=3
    assert summarize(np.zeros(0), skipped=2, num_items=2)["pi_hat"] is None
