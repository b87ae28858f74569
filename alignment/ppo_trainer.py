"""TRL 1.12's PPOTrainer with checkpoints that resume, in one process, under DDP and under DeepSpeed.

TRL's experimental PPOTrainer writes Trainer checkpoints (the policy, the optimizer, the scheduler, the RNG states,
trainer_state.json) but its `train()` always starts at update 1, and no checkpoint holds the value model, which the
optimizer's state belongs to. `ResumablePPOTrainer` adds what a resume needs and nothing else:

- every checkpoint also holds the value model (`checkpoint-N/value_model/`), written before the Trainer's own files
  so that a checkpoint with trainer_state.json (the Trainer's last file) is complete;
- the data order no longer depends on the global RNG (the sampler gets its own generator, seeded by `args.seed`), so
  the batches a rerun skips are the ones the killed run consumed;
- `train(resume_from_checkpoint=...)` loads the policy (adapter or full weights), the value model, optimizer and
  scheduler, the log history and step/episode counters, skips the consumed batches, restores every process's RNG
  at the point the checkpoint was written and runs the remaining updates. A resumed run ends with the weights,
  logs and checkpoints of the run that was never interrupted.

Two places where TRL's trainer stops before a first checkpoint are mended too. Under DeepSpeed (ZeRO-2/3) its
save_model hands transformers the bare policy as the engine; here a checkpoint's weights are the engine's own
checkpoint (policy, value model and optimizer), which a resume loads. Under DDP (`recipes/accelerate/multi_gpu.yaml`)
its train() reads `self.model.policy`, which the DDP wrapper hides; here the wrapper exposes it."""
from __future__ import annotations

import math
import os

import torch
from accelerate.data_loader import get_sampler
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from alignment.trl_api import PPOTrainer

VALUE_MODEL_FOLDER = "value_model"


def absolute_steps(steps: float | None, max_steps: int) -> float | None:
    """An interval given as a fraction of training (< 1) in updates, as TRL's PPO train() computes it."""
    return math.ceil(max_steps * steps) if steps is not None and steps < 1 else steps


class ReplayedBatches:
    """The trainer's dataloader, whose first pass skips the batches a checkpoint already consumed and restores the
    RNG states at the moment that checkpoint was written (before the next epoch starts when it ended one, after
    the current epoch's iterator exists otherwise: opening an epoch draws from the RNG). Later passes are the
    dataloader's own."""

    def __init__(self, dataloader: DataLoader, consumed: int, restore_rng):
        self.dataloader, self.consumed, self.restore_rng = dataloader, consumed, restore_rng

    def __iter__(self):
        if self.consumed is None:
            yield from self.dataloader
            return
        epochs, within = divmod(self.consumed, len(self.dataloader))
        self.consumed = None
        for _ in range(epochs):
            for _ in self.dataloader:
                pass
        if within == 0:
            self.restore_rng()
            yield from self.dataloader
            return
        batches = iter(self.dataloader)
        for _ in range(within):
            next(batches)
        self.restore_rng()
        yield from batches


class _ResumedCounters(TrainerCallback):
    """Puts the checkpoint's step and episode back after PPO's train() zeroed them (it does so right before
    on_train_begin), with the whole run's length and intervals."""

    def __init__(self, saved, max_steps: int):
        self.saved, self.max_steps = saved, max_steps

    def on_train_begin(self, args, state, control, **kwargs):
        state.global_step, state.episode = self.saved.global_step, self.saved.episode
        state.log_history, state.total_flos = self.saved.log_history, self.saved.total_flos
        state.max_steps = self.max_steps
        for name in ("logging_steps", "eval_steps", "save_steps"):
            setattr(state, name, absolute_steps(getattr(args, name), self.max_steps))


class ResumablePPOTrainer(PPOTrainer):
    """PPOTrainer whose checkpoints hold the value model and whose `train` takes `resume_from_checkpoint`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            # TRL's train() and checkpoints read self.model.policy and .config, which DDP (several processes, no
            # DeepSpeed) hides; plain attributes, not submodules, so DDP's parameters and state_dict stay as they are.
            wrapper = self.accelerator.unwrap_model(self.model)
            for name in ("policy", "value_model", "config"):
                object.__setattr__(self.model, name, getattr(wrapper, name))
        # transformers.Trainer.__init__ (which PPOTrainer skips) sets this; a process that does not save reads it
        self.is_distributed_loading_by_transformers = False
        sampler = get_sampler(self.dataloader)
        if getattr(sampler, "generator", False) is None:  # one process: the order would come from the global RNG
            sampler.generator = torch.Generator().manual_seed(self.args.seed)

    def _save_checkpoint(self, model, trial):
        if not self.is_deepspeed_enabled and self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            value_model = self.accelerator.unwrap_model(self.model).value_model
            value_model.save_pretrained(os.path.join(self._get_output_dir(trial=trial), folder, VALUE_MODEL_FOLDER))
        super()._save_checkpoint(model, trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Under DeepSpeed a checkpoint's weights are the engine's own checkpoint (written with the optimizer right
        after this call): TRL's save_model would hand transformers the bare policy as the engine there, and fail."""
        if self.is_deepspeed_enabled and _internal_call:
            return
        super().save_model(output_dir, _internal_call)

    def train(self, resume_from_checkpoint: str | None = None):
        if resume_from_checkpoint is None:
            return super().train()
        saved = self._load_checkpoint(resume_from_checkpoint)
        total = self.args.num_total_batches
        counters = _ResumedCounters(saved, total)
        self.callback_handler.callbacks.insert(0, counters)  # before the progress bar reads max_steps
        dataloader = self.dataloader
        self.dataloader = ReplayedBatches(dataloader, saved.global_step,  # one batch per update
                                          lambda: self._load_rng_state(resume_from_checkpoint))
        self.args.num_total_batches = total - saved.global_step
        try:
            return super().train()
        finally:
            self.args.num_total_batches, self.dataloader = total, dataloader
            self.callback_handler.callbacks.remove(counters)

    def _load_checkpoint(self, checkpoint: str):
        """Weights, optimizer and scheduler from `checkpoint`; returns its trainer state."""
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME

        if self.is_deepspeed_enabled:  # the engine's checkpoint: policy, value model and optimizer
            from transformers.integrations.deepspeed import deepspeed_load_checkpoint

            deepspeed_load_checkpoint(self.model, checkpoint, load_module_strict=not self.is_peft_model)
        else:
            wrapper = self.accelerator.unwrap_model(self.model)
            self._load_from_checkpoint(checkpoint, model=wrapper.policy)
            value = AutoModelForSequenceClassification.from_pretrained(os.path.join(checkpoint, VALUE_MODEL_FOLDER))
            wrapper.value_model.load_state_dict(value.state_dict())
            # on CPU (the optimizer moves its state to each parameter's device)
            self.optimizer.load_state_dict(torch.load(os.path.join(checkpoint, OPTIMIZER_NAME), weights_only=True,
                                                      map_location="cpu"))
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True))
        return type(self.state).load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
