"""Iterative label refinement with robust UU learning (Asano, Kozuno, Baba, NeurIPS 2025).

Modules, one job each: `data` (rows, loaders, format_example, splits), `losses` (PN / UU / robust UU risks),
`priors` (oracle and few-labeled pi, theta_p, theta_n), `features` + `heads` (frozen backbone), `finetune`
(LoRA / QLoRA / full through transformers.Trainer), `loop` (rounds, resume, selection; `run_refinement`),
`config` (RefineConfig, the recipe's flags). Import what you need: `from refinement.loop import run_refinement`.
"""
