"""Safety alignment: prompt sets (prompts), the project's demo corpus (demo, demo_data/), refusal detection
(refusal), safety evaluation (evaluate) and what the RL recipes share (rl); every TRL name comes through trl_api."""
