"""Export a refinement run's classifier as a reward model folder (and optionally push it to the Hub).

    python recipes/export_reward_model.py --config recipes/configs/reward/export_cpu_minilm.yaml
    python recipes/export_reward_model.py --run_dir runs/mine --output_dir runs/reward/mine --round last
    HF_HUB_OFFLINE=0 python recipes/export_reward_model.py --config ... --push_to_hub --hub_model_id me/harmless-rm
    python recipes/export_reward_model.py --config ... --push_to_hub --hub_model_id me/harmless-rm --dry_run

The folder is written only after it reloads with plain transformers and reproduces the round's training-time
logits (reward.export). The Hub token comes from HF_TOKEN or `hf auth login` and is never printed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from refinement.cli import log_beside, run_recipe, start_recipe

start_recipe()  # before any Hugging Face library is imported

from alignment.trl_api import TrlParser
from reward.export import export_reward_model
from reward.hub import push_to_hub


@dataclass
class ExportConfig:
    run_dir: str = field(default=None, metadata={"help": "A finished refinement run (holds summary.json)."})
    output_dir: str = field(default=None, metadata={"help": "Where the reward model folder is written (replaced)."})
    round: str = field(default="selected", metadata={"help": "selected (the run's shipped round) | best_refined (the "
                                                      "trained round rated best, shipped or not) | last | N"})
    license: str = field(default="cc-by-nc-4.0", metadata={"help": "Model card licence; the embedded default "
                         "trains on BeaverTails labels (CC-BY-NC-4.0): set yours for other data."})
    model_name: str | None = field(default=None, metadata={"help": "Card title (default: hub_model_id or folder)."})
    verify_items: int = field(default=256, metadata={"help": "Items per split rescored after reloading."})
    tolerance: float = field(default=1e-3, metadata={"help": "Largest allowed |reloaded - training-time logit|."})
    batch_size: int = 32
    push_to_hub: bool = False
    hub_model_id: str | None = field(default=None, metadata={"help": "owner/name of the Hub repo."})
    hub_private: bool = True
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    dry_run: bool = field(default=False, metadata={"help": "List the files a push would upload and print the "
                          "card; upload nothing (needs hub_model_id)."})


def main(args: ExportConfig) -> str:
    if not args.run_dir or not args.output_dir:
        raise SystemExit("--run_dir and --output_dir are required (in the YAML or on the command line)")
    pushing = args.push_to_hub or args.dry_run
    if pushing and not args.hub_model_id:
        raise SystemExit("--push_to_hub and --dry_run need --hub_model_id")
    name = args.model_name or (args.hub_model_id or "").split("/")[-1] or None
    folder = export_reward_model(args.run_dir, args.output_dir, round=args.round, license=args.license,
                                 model_name=name, verify_items=args.verify_items, tolerance=args.tolerance,
                                 batch_size=args.batch_size, repo_id=args.hub_model_id)
    print(f"exported {args.run_dir} (round {args.round}) to {folder}")
    if pushing:
        push_to_hub(folder, args.hub_model_id, private=args.hub_private, revision=args.hub_revision,
                    dry_run=args.dry_run)
    return str(folder)


def make_parser() -> TrlParser:
    return TrlParser((ExportConfig,))


if __name__ == "__main__":
    run_recipe(main, make_parser().parse_args_and_config, log_file=log_beside)
