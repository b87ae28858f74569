"""The models and save steps of an RL run: the policy and its tokenizer from TRL's `ModelConfig` (path, revision,
dtype, attention, LoRA through `get_peft_config`), and the trained policy written as an adapter and a merged model.

    model_args = ModelConfig(model_name_or_path=path, use_peft=True, lora_target_modules=["q_proj", "v_proj"])
    check_model_args(model_args)
    tokenizer = load_policy_tokenizer(path, model_args.model_revision)
    policy = load_policy(path, model_args, tokenizer)
    trainer = GRPOTrainer(model=policy, peft_config=policy_peft_config(model_args), ...)
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alignment import trl_api
from refinement.io import atomic_dir
from reward.scoring import whole_weights

logger = logging.getLogger(__name__)

# Tokens that can stand in for a pad token when a chat model pads with its eos (SmolLM2, Llama 3).
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|endoftext|>", "<pad>")


def check_model_args(model_args) -> None:
    """Stop in one line on ModelConfig settings the RL recipes cannot honour: no policy, a LoRA task other than a
    causal LM, or a quantized base (the merged model/ folder and PPO's value model need full weights)."""
    if not model_args.model_name_or_path:
        raise SystemExit("--model_name_or_path is required: the policy to align (embedded:smollm2, a folder, a Hub id)")
    if model_args.use_peft and model_args.lora_task_type != "CAUSAL_LM":
        raise SystemExit(f"lora_task_type {model_args.lora_task_type}: the policy is a causal LM; set CAUSAL_LM")
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise SystemExit("load_in_4bit / load_in_8bit: the RL recipes train an unquantized policy (its merged model/ "
                         "and PPO's value model need full weights); set both false")


def model_kwargs(model_args) -> dict:
    """`from_pretrained` keywords of the policy, as TRL's scripts build them: revision, attention, dtype."""
    dtype = model_args.dtype
    return {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
            "dtype": dtype if dtype in ("auto", None) else getattr(torch, dtype)}


def lora_target_modules(value: str | list[str] | None) -> str | list[str] | None:
    """ModelConfig turns a one-element list into a string, which peft reads as a regex over full module names (so
    `q_proj` alone would match nothing); one plain module name is kept as that module. A regex or `all-linear`
    passes through."""
    if isinstance(value, str) and value != "all-linear" and re.fullmatch(r"\w+", value):
        return [value]
    return value


def policy_peft_config(model_args):
    """TRL's get_peft_config of the policy (None without use_peft), one plain target module kept as a module."""
    config = trl_api.get_peft_config(model_args)
    if config is not None and isinstance(config.target_modules, str):
        config.target_modules = lora_target_modules(config.target_modules)
    return config


def load_policy_tokenizer(path: str, revision: str = "main") -> PreTrainedTokenizerBase:
    """The policy's tokenizer, left-padded (generation continues from the right), with a pad token that is not
    its eos: PPO masks every pad-id token, so a pad equal to eos would hide the eos tokens a chat template puts
    inside the prompt (SmolLM2, Llama 3) and the reply's own eos. An unused special token of the vocabulary
    stands in; without one the eos stays (with a warning)."""
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, padding_side="left")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer
    vocab = tokenizer.get_vocab()
    taken = {tokenizer.eos_token_id, tokenizer.bos_token_id}
    for token in PAD_CANDIDATES:
        if token in vocab and vocab[token] not in taken:
            tokenizer.pad_token = token
            return tokenizer
    logger.warning("%s: no token other than eos can pad; PPO will also mask eos tokens inside prompts", path)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_pad_token(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    """The model's config and generation config pad with the tokenizer's pad token."""
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_policy(path: str, model_args, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    """The policy as a causal LM (the resolved `path` of model_args.model_name_or_path), padding as `tokenizer`."""
    return set_pad_token(AutoModelForCausalLM.from_pretrained(path, **model_kwargs(model_args)), tokenizer)


# ---------------------------------------------------------------------------------------------- save


def zero3_gathered(trainer, module: torch.nn.Module):
    """Full parameters of `module` on every rank under DeepSpeed ZeRO-3 (a no-op otherwise)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def save_policy(trainer, policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path, merge: bool,
                load_base: Callable[[], torch.nn.Module]) -> dict:
    """out/adapter (LoRA) and out/model (the adapter merged into `load_base()`, or the fully trained policy), the
    tokenizer beside each. Every rank enters (ZeRO-3 gathers); only the main process writes."""
    is_peft = hasattr(policy, "peft_config")
    first = out / ("adapter" if is_peft else "model")
    with zero3_gathered(trainer, policy):
        if trainer.accelerator.is_main_process:
            with atomic_dir(first, replace=True) as tmp:
                policy.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    trainer.accelerator.wait_for_everyone()
    outputs = {"adapter": str(first) if is_peft else None, "model": None if is_peft else str(first)}
    if is_peft and merge and trainer.accelerator.is_main_process:
        with whole_weights():
            outputs["model"] = str(merge_adapter(load_base(), first, out / "model", tokenizer))
    return outputs


def merge_adapter(base: torch.nn.Module, adapter_dir: Path, target: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """`base` with the saved adapter merged in, written to `target` as a plain causal-LM folder."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    with atomic_dir(target, replace=True) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
