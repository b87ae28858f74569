"""Fine-tune a one-logit sequence classifier g(x) on pseudo-labeled texts with a UU risk (LoRA, QLoRA, full).

One refinement round (../shared/METHOD.md): train a fresh classifier on the pseudo-split (Cp, Cn) with the
robust UU risk, keep the epoch whose risk on a pseudo-labeled validation split is lowest (no gold labels),
and export a stock `AutoModelForSequenceClassification` folder. The loop relabels the corpus with
`predict_logits` on that exported folder, so the relabels are, by construction, the shipped model's signs.

Training runs through a `transformers.Trainer` subclass, so Accelerate / DeepSpeed launchers work unchanged.
Label convention: pseudo-label 1 = harmless (Cp), 0 = harmful (Cn); g(x) > 0 means harmless.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from refinement.io import atomic_dir, distributed_state, map_by_length
from refinement.losses import MissingPseudoClassError
from refinement.sampling import stratified_order

logger = logging.getLogger(__name__)

Risk = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("lora", "qlora", "full")
EXPORT_SUBDIR = "model"
METRIC = "val_risk"


@dataclass
class FinetuneConfig:
    """Hyper-parameters; defaults are the paper's classifier setup (LoRA r 8 / alpha 32 / dropout 0.05,
    lr 1e-4, cosine with 3% warmup, 3 epochs, batch 16, max length 512).

    bf16: bf16 autocast for training. Forced on for `qlora` to match the paper (bf16 compute around NF4
    layers, `bnb_4bit_compute_dtype=torch.bfloat16`), on CPU as on GPU. TRL's trainers also need it on CPU
    to avoid a float/bf16 mismatch (NOTES-stack §1b); this trainer keeps the trainable parameters in fp32,
    so here the flag is about running the paper's computation, not about a crash.
    lora_target_modules: None = peft's default for the architecture (q_proj/v_proj for Llama), or a list,
    or "all-linear".
    deepspeed: None, a path to a DeepSpeed JSON config, or the config as a dict (passed to Trainer as is).
    """

    mode: str = "qlora"
    max_length: int = 512
    learning_rate: float = 1e-4
    num_train_epochs: int = 3
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | dict | None = None
    seed: int = 42
    logging_steps: int = 10

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.per_device_train_batch_size < 2:
            raise ValueError("per_device_train_batch_size must be >= 2: a batch needs both pseudo-classes")
        if self.mode == "qlora":
            self.bf16 = True


# ---------------------------------------------------------------------------------------------- sampling


class StratifiedSampler(torch.utils.data.Sampler[int]):
    """`stratified_order` as a sampler; a new order per epoch (via `set_epoch`), the same on all ranks."""

    def __init__(self, pseudo_labels: Sequence[int], batch_size: int, seed: int) -> None:
        self.pseudo_labels, self.batch_size, self.seed = list(pseudo_labels), batch_size, seed
        self.epoch = 0
        self._length = len(stratified_order(self.pseudo_labels, batch_size, seed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(stratified_order(self.pseudo_labels, self.batch_size, self.seed + self.epoch))

    def __len__(self) -> int:
        return self._length


# ---------------------------------------------------------------------------------------------- trainer


class UURiskTrainer(Trainer):
    """Trainer whose loss is `risk(g(x), pseudo_labels)` on stratified batches.

    The risk is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps itself
    (`loss_is_scaled_for_ga = False`). Evaluation returns the logits and pseudo-labels without a per-batch
    loss: a UU risk is only meaningful over a set holding both pseudo-classes, so the validation risk is
    computed once over the whole set in `compute_metrics` (see `val_risk_metric`).
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, risk: Risk, **kwargs: Any) -> None:
        self.risk = risk
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """risk(logits[:, 0], pseudo-labels); a NaN/inf training loss stops the run; no silent skipping."""
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.risk(outputs.logits[:, 0], labels)
        if model.training and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0.0:.2f}); lower the learning rate or check inputs and priors"
            )
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """(None, g(x), pseudo-labels) for one evaluation batch."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.pop("labels")
        with torch.no_grad():
            logits = model(**inputs).logits[:, 0].float()
        return None, logits, labels

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        labels = [int(item["labels"]) for item in dataset]
        return StratifiedSampler(labels, self._train_batch_size, self.args.seed)


def val_risk_metric(risk: Risk) -> Callable[[EvalPrediction], dict[str, float]]:
    """`compute_metrics` giving `risk` over the whole pseudo-labeled validation set (no gold labels)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = torch.as_tensor(np.asarray(prediction.predictions), dtype=torch.float32).reshape(-1)
        labels = torch.as_tensor(np.asarray(prediction.label_ids)).reshape(-1)
        return {METRIC: float(risk(logits, labels))}

    return compute_metrics


class _ValRiskLogger(TrainerCallback):
    """Logs the validation risk of each epoch, the quantity the best epoch is chosen by."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics and f"eval_{METRIC}" in metrics:  # once, not per rank
            logger.info("epoch %.0f: %s = %.6f", state.epoch or 0, METRIC, metrics[f"eval_{METRIC}"])


# ---------------------------------------------------------------------------------------------- building


def load_tokenizer(model_name_or_path: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token (eos when it has none; pooling reads the last non-pad token)."""
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(model_name_or_path: str, tokenizer: PreTrainedTokenizerBase,
                    config: FinetuneConfig) -> nn.Module:
    """One-logit classifier ready to train: fp32 for `full`, fp32 + LoRA for `lora`, NF4 + LoRA for `qlora`.

    `config.pad_token_id` is set so the stock head pools the last non-pad token of each row of a padded batch.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    kwargs: dict[str, Any] = {"num_labels": 1, "dtype": torch.float32}
    if config.mode == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.mode == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if config.mode == "full":
        return model
    lora = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_target_modules)
    return get_peft_model(model, lora)  # SEQ_CLS adds the `score` head to modules_to_save, so it trains


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], pseudo_labels: Sequence[int],
           max_length: int) -> list[dict[str, Any]]:
    """Unpadded token ids per item (the collator pads each batch to its own longest row)."""
    if len(texts) != len(pseudo_labels):
        raise ValueError(f"{len(texts)} texts but {len(pseudo_labels)} pseudo-labels")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)}
            for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], pseudo_labels)]


def training_arguments(config: FinetuneConfig, checkpoint_dir: str) -> TrainingArguments:
    """Evaluate and save every epoch; the epoch with the lowest validation risk is reloaded at the end."""
    return TrainingArguments(
        output_dir=checkpoint_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5 dropped `warmup_ratio`: a float < 1 is a ratio
        weight_decay=config.weight_decay,
        bf16=config.bf16,
        use_cpu=not torch.accelerator.is_available(),  # else transformers refuses bf16 on a CPU-only machine
        dataloader_pin_memory=torch.accelerator.is_available(),
        deepspeed=config.deepspeed,
        seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # plus the best one, which the Trainer always keeps
        save_only_model=config.deepspeed is None,  # DeepSpeed cannot reload the best model from weights only
        load_best_model_at_end=True,
        metric_for_best_model=METRIC,
        greater_is_better=False,
        label_names=["labels"],
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
    )


def fit(model_name_or_path: str, train_texts: Sequence[str], train_pseudo: Sequence[int],
        val_texts: Sequence[str], val_pseudo: Sequence[int], risk: Risk, config: FinetuneConfig,
        checkpoint_dir: str, val_risk: Risk | None = None,
        callbacks: Sequence[TrainerCallback] = ()) -> UURiskTrainer:
    """Train with `risk`, pick the epoch by `val_risk` (default: `risk`) over the validation set, and return
    the trainer holding that epoch's model (`trainer.model`, possibly a PeftModel) and its tokenizer
    (`trainer.processing_class`). Checkpoints are left in `checkpoint_dir` for the caller. `callbacks` are added
    to the Trainer's (bench/gpu_smoke.py times the steps with one)."""
    for name, labels in (("train", train_pseudo), ("validation", val_pseudo)):
        if len({int(y) for y in labels}) < 2:
            raise MissingPseudoClassError(f"the {name} set must hold both pseudo-classes")
    tokenizer = load_tokenizer(model_name_or_path)
    trainer = UURiskTrainer(
        model=load_classifier(model_name_or_path, tokenizer, config),
        args=training_arguments(config, checkpoint_dir),
        train_dataset=encode(tokenizer, train_texts, train_pseudo, config.max_length),
        eval_dataset=encode(tokenizer, val_texts, val_pseudo, config.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=val_risk_metric(val_risk or risk),
        callbacks=[_ValRiskLogger(), *callbacks],
        risk=risk,
    )
    trainer.train()
    return trainer


def epoch_selection(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch validation risks from a Trainer log history and the epoch with the lowest one."""
    risks = {round(entry["epoch"]): entry[f"eval_{METRIC}"]
             for entry in log_history if f"eval_{METRIC}" in entry}
    best = min(risks, key=risks.get)
    return {"val_risk_per_epoch": risks, "best_epoch": best, "best_val_risk": risks[best]}


# ---------------------------------------------------------------------------------------------- export


def _dequantized_linear(layer: nn.Module, delta: torch.Tensor | None = None) -> nn.Linear:
    """A plain fp32 Linear holding a 4-bit Linear's dequantized weight (+ a LoRA delta, added in fp32)."""
    import bitsandbytes.functional as bnb_functional

    data, state = layer.weight.data, layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        # On AVX512-BF16 CPUs an eval-mode forward repacks the weight into a CPU-kernel layout that
        # dequantize_4bit misreads; undo it as bnb's own state_dict saving does (on a copy: the layer stays).
        data, state = bnb_functional._convert_weight_packed_for_cpu_inverse(data, copy.copy(state))
    weight = bnb_functional.dequantize_4bit(data, state).float()
    if delta is not None:
        weight = weight + delta.float()
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                       device=weight.device, dtype=torch.float32)
    linear.weight.data.copy_(weight)
    if layer.bias is not None:
        linear.bias.data.copy_(layer.bias.data.float())
    return linear


def _replace_4bit_layers(model: nn.Module) -> None:
    """Swap, in place, every bitsandbytes 4-bit Linear for a plain fp32 Linear; a LoRA layer around one is
    replaced as a whole, its delta merged in fp32 (no re-quantization, so no second rounding)."""
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), bnb.nn.Linear4bit):
            if any(module.lora_bias.get(a, False) for a in module.active_adapters):
                raise NotImplementedError("exporting LoRA layers with a bias is not supported")
            delta = sum(module.get_delta_weight(a).float() for a in module.active_adapters
                        if a in module.lora_A)
            model.set_submodule(name, _dequantized_linear(module.get_base_layer(), delta))
    for name, module in list(model.named_modules()):
        if isinstance(module, bnb.nn.Linear4bit):
            model.set_submodule(name, _dequantized_linear(module))


def _plain_model(model: nn.Module) -> PreTrainedModel:
    """The trained classifier without peft wrappers or 4-bit layers. Consumes `model` (merged in place)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        _replace_4bit_layers(model)
        model = model.merge_and_unload()  # merges plain LoRA layers, unwraps the modules_to_save head
    return model


def _stock_classifier(model: PreTrainedModel, pad_token_id: int) -> PreTrainedModel:
    """A fresh fp32 `AutoModelForSequenceClassification` (no quantization config) with `model`'s weights."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.num_labels, config.pad_token_id, config.dtype = 1, pad_token_id, torch.float32
    stock = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    stock.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, strict=True)
    return stock.eval()


def export_classifier(model: nn.Module, tokenizer: PreTrainedTokenizerBase, export_dir: str) -> str:
    """Write a stock classifier folder (fp32 safetensors, config with num_labels=1 and pad_token_id,
    tokenizer) that plain `AutoModelForSequenceClassification.from_pretrained` loads: LoRA merged, 4-bit
    layers dequantized. Consumes `model`. The folder appears atomically: written beside it, then renamed."""
    stock = _stock_classifier(_plain_model(model), tokenizer.pad_token_id)
    with atomic_dir(Path(export_dir), replace=True) as staging:
        stock.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return export_dir


def train_finetuned(model_name_or_path: str, train_texts: list[str], train_pseudo: list[int],
                    val_texts: list[str], val_pseudo: list[int], risk: Risk, config: FinetuneConfig,
                    output_dir: str, val_risk: Risk | None = None) -> str:
    """One refinement round: fit, keep the best epoch by validation risk, export to `output_dir/model`.

    `val_risk` (default: the training risk) is the selection metric, e.g. robust UU while training with PN.

    Checkpoints live in a fresh folder under `output_dir` (never shared between rounds) and are removed
    afterwards, also on failure. The per-epoch validation risks and the chosen epoch are written to
    `output_dir/epoch_selection.json`. Returns the export path.

    Under a multi-process launch (accelerate/torchrun, Trainer DDP) every rank calls this with the same
    `output_dir` and trains together: the checkpoints go to `output_dir/.checkpoints`, the same folder on every
    rank (the main process clears it first), so each rank reloads the best checkpoint the main process saved;
    the main process alone writes epoch_selection.json and the export, which every rank may read on return.
    """
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    state = distributed_state()
    if state.num_processes > 1:
        checkpoint_dir = os.path.join(output_dir, ".checkpoints")
        if state.is_main_process:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # left by a killed run
            os.makedirs(checkpoint_dir)
        state.wait_for_everyone()
    else:
        checkpoint_dir = tempfile.mkdtemp(prefix=".checkpoints-", dir=output_dir)
    is_main = state.is_main_process
    try:
        trainer = fit(model_name_or_path, train_texts, train_pseudo, val_texts, val_pseudo, risk, config,
                      checkpoint_dir, val_risk)
        export_dir = os.path.join(output_dir, EXPORT_SUBDIR)
        if trainer.is_world_process_zero():
            selection = epoch_selection(trainer.state.log_history)
            logger.info("best epoch %d (val_risk %.6f)", selection["best_epoch"], selection["best_val_risk"])
            Path(output_dir, "epoch_selection.json").write_text(json.dumps(selection, indent=2))
            export_classifier(trainer.model, trainer.processing_class, export_dir)
        trainer.accelerator.wait_for_everyone()
        return export_dir
    finally:
        if is_main:  # the folder is shared between ranks: the others are past it or failing too
            shutil.rmtree(checkpoint_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- inference


def predict_logits(model_dir_or_model: str | nn.Module, texts: Sequence[str], batch_size: int = 32,
                   max_length: int = 512, tokenizer: PreTrainedTokenizerBase | None = None) -> np.ndarray:
    """g(x) = logits[:, 0] for every text, in input order (float32 array).

    Takes an exported folder (its own tokenizer) or an in-memory model plus `tokenizer`. Texts are batched by
    length so padding stays short; the model is put in eval mode for the call and restored afterwards.

    A folder is the loop's relabelling of the corpus: under a multi-process launch every process loads it,
    scores its own share of the texts (`refinement.io.map_by_length`) and receives every logit, so all
    processes must call this together with the same texts. An in-memory model scores all `texts` in the
    calling process alone (an RL reward scores each rank's own completions).
    """
    from_folder = isinstance(model_dir_or_model, (str, os.PathLike))
    if from_folder:
        tokenizer = tokenizer or load_tokenizer(str(model_dir_or_model))
        # Each process scores on its own accelerator (CPU here), not on the CPU of a GPU machine.
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir_or_model)).to(
            distributed_state().device)
    elif tokenizer is None:
        raise ValueError("an in-memory model needs its tokenizer")
    else:
        model = model_dir_or_model
    device = next(model.parameters()).device

    def score(positions: np.ndarray) -> np.ndarray:
        logits = np.empty(len(positions), dtype=np.float32)
        for start in range(0, len(positions), batch_size):
            batch = tokenizer([texts[i] for i in positions[start:start + batch_size]], padding=True,
                              truncation=True, max_length=max_length, return_tensors="pt").to(device)
            logits[start:start + batch_size] = model(**batch).logits[:, 0].float().cpu().numpy()
        return logits

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return map_by_length(score, [len(text) for text in texts], across_processes=from_folder)
    finally:
        model.train(was_training)
