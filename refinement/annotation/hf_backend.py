"""The default judge: a local causal LM answering yes/no with one forward pass per item (no generation).

Items are sorted by length and batched with left padding, so the last position of every row is its own next-token
position and padding stays short. The prefix shared by every item (system line and few-shot demonstrations) is
encoded once and its key/value cache reused by every batch; `reuse_prefix=False` re-encodes it per item (the
same token ids, for the benchmark and for models whose cache cannot be shared)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from ..embedded import resolve_model
from .scoring import NO_WORDS, YES_WORDS, single_token_ids, yes_probability

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersJudge:
    def __init__(self, model_name_or_path: str = "embedded:smollm2", batch_size: int = 16, dtype: str = "bfloat16",
                 reuse_prefix: bool = True, min_answer_mass: float = 0.0, device: str | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: choose one of {', '.join(DTYPES)}")
        self.model_id = model_name_or_path
        path = resolve_model(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"{model_name_or_path}: the tokenizer has no chat template; the judge needs an "
                             "instruction-tuned (chat) model")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device).eval()
        self.device = torch.device(device)
        self.batch_size, self.reuse_prefix, self.min_answer_mass = batch_size, reuse_prefix, min_answer_mass
        self.yes_ids = single_token_ids(self.tokenizer, YES_WORDS)
        self.no_ids = single_token_ids(self.tokenizer, NO_WORDS)
        self.settings = f"transformers dtype={dtype} min_answer_mass={min_answer_mass}"
        self._prefix_cache: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def token_ids(self, prefix: list[dict], items: Sequence[list[dict]]) -> tuple[list[int], list[list[int]]]:
        """Token ids of the shared prefix and of each item's continuation (ending with the answer prompt)."""
        prefix_text = self.tokenizer.apply_chat_template(prefix, tokenize=False)
        suffixes = []
        for item in items:
            full = self.tokenizer.apply_chat_template(prefix + item, tokenize=False, add_generation_prompt=True)
            if not full.startswith(prefix_text):
                raise ValueError(f"{self.model_id}: the chat template renders the prefix differently when more "
                                 "turns follow; use reuse_prefix=False")
            suffixes.append(full[len(prefix_text):])
        encode = self.tokenizer  # lengths are the judge's business (truncated upstream), not model_max_length's
        prefix_ids = encode(prefix_text, add_special_tokens=False, verbose=False)["input_ids"]
        return prefix_ids, encode(suffixes, add_special_tokens=False, verbose=False)["input_ids"]

    def p_yes(self, prefix: list[dict], items: Sequence[list[dict]]) -> np.ndarray:
        prefix_ids, suffix_ids = self.token_ids(prefix, items)
        out = np.empty(len(items), dtype=float)
        order = sorted(range(len(items)), key=lambda i: len(suffix_ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                if self.reuse_prefix:
                    logits = self._forward_with_prefix(prefix_ids, [suffix_ids[i] for i in rows])
                else:
                    logits = self._forward([prefix_ids + suffix_ids[i] for i in rows])
                p, _ = yes_probability(logits, self.yes_ids, self.no_ids, self.min_answer_mass)
                out[rows] = p.cpu().numpy()
        return out

    def _left_padded(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        return ids, mask

    def _forward(self, sequences: list[list[int]], cache: DynamicCache | None = None,
                 past_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits after each (left-padded) sequence; positions count real tokens only, so a padded
        row sees exactly what it would see alone."""
        ids, mask = self._left_padded(sequences)
        offset = 0 if past_mask is None else past_mask.shape[1]
        positions = (offset + mask.cumsum(-1) - 1).clamp(min=offset)
        if past_mask is not None:
            mask = torch.cat([past_mask, mask], dim=1)
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=cache is not None, logits_to_keep=1)
        return output.logits[:, -1, :]

    def _prefix_states(self, prefix_ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._prefix_cache is None or self._prefix_cache[0] != prefix_ids:
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([prefix_ids], device=self.device)
            self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            self._prefix_cache = (prefix_ids, [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix_cache[1]

    def _forward_with_prefix(self, prefix_ids: list[int], suffixes: list[list[int]]) -> torch.Tensor:
        batch = len(suffixes)
        # expand() shares the prefix's memory across rows; the cache concatenates new keys into fresh tensors.
        states = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                  for k, v in self._prefix_states(prefix_ids)]
        cache = DynamicCache(ddp_cache_data=states, config=self.model.config)
        past_mask = torch.ones(batch, len(prefix_ids), dtype=torch.long, device=self.device)
        return self._forward(suffixes, cache=cache, past_mask=past_mask)

