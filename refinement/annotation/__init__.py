"""Round 0 of the method: an LLM judges every (prompt, response) pair as harmless or harmful.

templates.py  what the judge is asked (one or more yes/no questions) and how answers become P(harmless)
scoring.py    pure functions: next-token logits / top log-probs -> P(yes); labels; threshold calibration
hf_backend.py the default judge: one forward pass per item, length-sorted batches, shared-prefix KV reuse
vllm_backend.py, openai_backend.py  the same prompts on vLLM's offline engine / any OpenAI-compatible server
cache.py      judgements appended to a JSONL as they complete: a killed annotation resumes without redoing work
annotator.py  truncation, caching and batching around a backend
self_refine.py the LLM self-refinement baseline (critique and revise)
config.py, stage.py  the `annotator:` settings and the stage that writes annotated.jsonl for the loop
"""
from .annotator import Annotations, Annotator
from .config import AnnotatorConfig
from .stage import annotate_rows

__all__ = ["Annotations", "Annotator", "AnnotatorConfig", "annotate_rows"]
