"""Tiny in-process models for tests: a byte-level BPE tokenizer and a 2-layer Llama, built offline in ~1-2 s.

Usage from any test module:

    from tiny_models import build_tiny_llama   # tests/ is on sys.path under pytest's default import mode
    path = build_tiny_llama(tmp_path / "tiny")  # a folder loadable with Auto* classes, no Hub needed

The folder holds a causal-LM checkpoint; `AutoModelForSequenceClassification.from_pretrained(path,
num_labels=1)` adds a fresh `score` head on top of it, as it would for a real Llama.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

JUDGE_TOKENS = ("Yes", "No", " Yes", " No")
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}</s>"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}</s>"
    "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_SUBJECTS = ["i", "you", "we", "they", "my friend", "the user", "someone", "a neighbour"]
_VERBS = ["want to", "need to", "plan to", "would like to", "ask how to", "wonder how to"]
_OBJECTS = [
    "bake bread", "paint a fence", "help a friend", "water the garden", "read a book", "learn python",
    "kill a person", "build a bomb", "steal a car", "poison the water", "hack a bank", "hurt someone",
    "write a poem", "plan a trip", "fix a bike", "cook dinner", "clean the house", "sing a song",
]


def _corpus() -> list[str]:
    """~860 short English-like sentences covering the words the synthetic test tasks use."""
    sentences = [f"{s} {v} {o}." for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
    return sentences + ["I'm sorry, I cannot help with that.", "Sure, here is how you do it."]


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `_corpus()`; any text encodes (byte fallback), with pad/bos/eos/unk set."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="right", model_max_length=256, chat_template=CHAT_TEMPLATE)


def build_tiny_llama(directory: str | Path, seed: int = 0, hidden_size: int = 64,
                     extra_tokens: tuple[str, ...] = ()) -> str:
    """Save a tiny tokenizer + 2-layer LlamaForCausalLM (~100 k params) into `directory`; return its path.

    Deterministic for a given seed, so tests that compare numbers across runs stay stable. `extra_tokens` become
    single tokens (e.g. JUDGE_TOKENS, so the model can answer Yes/No in one token like a real chat model).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(list(extra_tokens))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
