"""The refined classifier as a reward model.

export.py     a refinement run's round -> self-describing stock classifier folder (checked by reloading)
card.py       its model card (README.md + Hub metadata), rendered from the exported config alone
hub.py        push to the Hugging Face Hub (create_repo + upload_folder), or a dry run
scoring.py    an exported folder loaded with plain transformers; the logit transforms
texts.py      TRL prompts/completions (plain or conversational) -> the classifier's training text format
functions.py  TRL reward callables (GRPO/RLOO), also by dotted path for `trl grpo --reward_funcs`
task.py       model-free reward functions beside it: non_refusal (a Lagrangian task), MissingEosPenalty
relevance.py  the relevance task reward: cosine of request and reply under a sentence encoder
ppo.py        PPO reward models on the policy's token ids: native, or the re-tokenizing adapter
lagrangian.py safe RL: reward = task − λ·cost, λ by safe-rlhf's dual ascent in a TrainerCallback
evaluate.py   pairwise (HH-RLHF) and pointwise (BeaverTails, XSTest) accuracy of reward models side by side

Label convention: 1 = harmless; the one logit is higher for more harmless text."""
