"""PPO/GRPO on the refined reward, safety evaluation and generative self-refinement: see issues 5 and 6."""
