"""Safety alignment: prompt sets (prompts), the project's demo corpus (demo, demo_data/), refusal detection
(refusal) and safety evaluation (evaluate); every TRL name comes through trl_api."""
