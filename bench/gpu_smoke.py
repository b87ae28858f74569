"""The Python steps of bench/gpu_smoke.sh (one CUDA GPU; models built in-process, nothing downloaded).

    python bench/gpu_smoke.py prepare WORK            # tiny Llama (tests/tiny_models.py) + a small noisy corpus
    python bench/gpu_smoke.py check-export WORK       # the exported reward model reloads with the round's logits
    python bench/gpu_smoke.py throughput WORK         # tokens/s: UU QLoRA round vs a plain Trainer PN loop

Each measured row is printed as one line `ROW|name|status|seconds|detail` for the smoke table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

# Llama-3.2-1B's shape (config.json of meta-llama/Llama-3.2-1B); random weights: speed needs no training.
LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
SEQUENCE_LENGTH, BATCH_SIZE, TRAIN_ITEMS, WARMUP_STEPS = 256, 16, 512, 3


def row(name: str, status: str, started: float, detail: str) -> None:
    print(f"ROW|{name}|{status}|{time.perf_counter() - started:.0f}|{detail}", flush=True)


def prepare(work: Path) -> None:
    from test_distributed import tiny_rows
    from tiny_models import build_tiny_llama

    work.mkdir(parents=True, exist_ok=True)
    build_tiny_llama(work / "tiny")
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))


def check_export(work: Path) -> None:
    """Logits of the exported reward model, reloaded as a stock classifier on the GPU, against the logits the
    refinement round relabelled the corpus with (its relabels.jsonl)."""
    from refinement.config import RefineConfig
    from refinement.corpus import load_corpus
    from refinement.finetune import predict_logits

    started = time.perf_counter()
    corpus = load_corpus(RefineConfig(dataset_path=str(work / "pairs.jsonl"), output_dir=str(work / "refine"),
                                      model_name_or_path=str(work / "tiny"), mode="qlora", num_labeled=0, seed=42))
    relabels = [json.loads(line) for line in (work / "refine" / "round_01" / "relabels.jsonl").open()]
    worst = 0.0
    for split, texts in corpus.texts.items():
        expected = np.array([r["logit"] for r in relabels if r["split"] == split], dtype=np.float32)
        reloaded = predict_logits(str(work / "reward_model"), texts, max_length=64)
        worst = max(worst, float(np.abs(reloaded - expected).max()))
    status = "ok" if worst <= 1e-4 else "FAIL"
    row("export_reload", status, started,
        f"max abs logit difference {worst:.2e} over {len(relabels)} items (limit 1e-4)")
    if status != "ok":
        sys.exit(1)


class StepTimer:
    """Trainer callback: wall time of each optimizer step after the first WARMUP_STEPS (CUDA synchronised)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def on_step_end(inner, args, state, control, **kwargs):  # noqa: N805
                torch.cuda.synchronize()
                self.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = _Timer()

    def tokens_per_second(self, tokens_per_step: int) -> tuple[float, int]:
        timed = self.ends[WARMUP_STEPS:]
        return tokens_per_step * (len(timed) - 1) / (timed[-1] - timed[0]), len(timed) - 1


def build_llama_1b_shape(folder: Path) -> None:
    from tiny_models import build_tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(**LLAMA_32_1B, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def long_texts(count: int, seed: int) -> list[str]:
    """Texts longer than SEQUENCE_LENGTH tokens, so every row is cut to exactly that length (no padding)."""
    from tiny_models import _corpus

    sentences, rng = _corpus(), random.Random(seed)
    return [" ".join(rng.choice(sentences) for _ in range(SEQUENCE_LENGTH // 2)) for _ in range(count)]


def throughput(work: Path) -> None:
    """The same 512 rows of 256 tokens in batches of 16, one epoch, on the 1B-shaped model: the UU QLoRA round
    (refinement.finetune.fit: stratified batches, robust UU risk, per-epoch validation) against a stock
    transformers.Trainer with the stock BCE (PN) loss on the same QLoRA model and on the bf16 LoRA model."""
    from transformers import DataCollatorWithPadding, Trainer

    from refinement.finetune import FinetuneConfig, encode, fit, load_classifier, load_tokenizer, training_arguments
    from refinement.losses import risk_for

    folder = work / "llama32_1b_shape"
    build_llama_1b_shape(folder)
    texts, labels = long_texts(TRAIN_ITEMS, 0), [i % 2 for i in range(TRAIN_ITEMS)]
    val_texts, val_labels = long_texts(64, 1), [i % 2 for i in range(64)]
    tokens_per_step = BATCH_SIZE * SEQUENCE_LENGTH
    base = dict(max_length=SEQUENCE_LENGTH, num_train_epochs=1, per_device_train_batch_size=BATCH_SIZE,
                per_device_eval_batch_size=BATCH_SIZE, lora_target_modules=["q_proj", "v_proj"], logging_steps=1000)

    timer = StepTimer()
    risk = risk_for("robust_uu", 0.5, 0.8, 0.2)
    started = time.perf_counter()
    trainer = fit(str(folder), texts, labels, val_texts, val_labels, risk, FinetuneConfig(mode="qlora", **base),
                  str(work / "checkpoints_uu"), callbacks=[timer.callback])
    speed, steps = timer.tokens_per_second(tokens_per_step)
    row("uu_qlora_round", "ok", started, f"{speed:,.0f} tokens/s over {steps} steps "
        "(refinement.finetune.fit; the seconds include validation and the checkpoint)")
    del trainer
    torch.cuda.empty_cache()

    tokenizer = load_tokenizer(str(folder))
    dataset = [{**item, "labels": [float(item["labels"])]}  # BCE on the one logit: labels shaped like the logits
               for item in encode(tokenizer, texts, labels, SEQUENCE_LENGTH)]
    for mode in ("qlora", "lora"):
        started = time.perf_counter()
        config = FinetuneConfig(mode=mode, bf16=True, **base)
        model = load_classifier(str(folder), tokenizer, config)
        model.get_base_model().config.problem_type = "multi_label_classification"  # stock BCE-with-logits loss
        args = dataclasses.replace(training_arguments(config, str(work / f"checkpoints_pn_{mode}")),
                                   eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
        timer = StepTimer()
        Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                data_collator=DataCollatorWithPadding(tokenizer), callbacks=[timer.callback]).train()
        speed, steps = timer.tokens_per_second(tokens_per_step)
        what = "4-bit NF4 + LoRA" if mode == "qlora" else "fp32 weights, bf16 autocast + LoRA"
        row(f"trainer_pn_{mode}", "ok", started,
            f"{speed:,.0f} tokens/s over {steps} steps (stock Trainer, BCE, {what})")
        del model
        torch.cuda.empty_cache()
    shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "check-export", "throughput"))
    parser.add_argument("work", type=Path)
    args = parser.parse_args()
    {"prepare": prepare, "check-export": check_export, "throughput": throughput}[args.step](args.work)


if __name__ == "__main__":
    main()
