"""The refined classifier as a reward model (export, Hub push, TRL reward functions): see issue 4.

A refinement run already ships its classifier as a stock AutoModelForSequenceClassification folder
(`<output_dir>/model`, one logit, higher = more harmless), loadable by TRL as a reward model by path."""
