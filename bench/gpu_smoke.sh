#!/usr/bin/env bash
# GPU smoke check for one CUDA GPU, in under 8 minutes; every model is built in-process (nothing is downloaded):
#   refine_qlora    one QLoRA refinement round (recipes/refine_classifier.py, mode qlora, bf16) of a tiny random Llama
#                   on a small noisy corpus (bench/gpu_smoke.py prepare);
#   export_reload   its export as a reward model (recipes/export_reward_model.py), reloaded on the GPU: the logits
#                   must equal the round's relabelling logits;
#   grpo            two GRPO steps of the tiny policy against that reward, under DeepSpeed ZeRO-2 when deepspeed
#                   imports, else without it (recipes/accelerate/single_gpu.yaml); the row says which;
#   ppo, ppo_resume four PPO updates of the tiny policy under the same launcher config, saving every 2; then a run
#                   folder holding only checkpoint-2 is resumed to update 4 (the value model and the optimizer come
#                   back from the checkpoint: DeepSpeed's engine checkpoint under ZeRO-2);
#   grpo_vllm       the same with use_vllm (colocate) when vllm imports, else a "skipped" row;
#   uu_qlora_round, trainer_pn_qlora, trainer_pn_lora
#                   tokens/s on a random model of Llama-3.2-1B's shape: the UU QLoRA round against a stock
#                   transformers.Trainer PN loop on the same batches (bench/gpu_smoke.py throughput).
# Prints one table and writes it to $OUT/gpu_smoke.md, each step's log to $OUT/logs/; exit 1 if a step failed,
# 2 without a CUDA GPU. docs/gpu.md: the wheels the GPU machine lacks (bench/gpu_wheels.sh) and the `run` command.
#   bash bench/gpu_smoke.sh                               # after `make install`
#   PY=python3 OUT=/tmp/smoke bash bench/gpu_smoke.sh     # another Python (the GPU machine's)
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu_smoke}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_smoke: no CUDA GPU visible to $PY (torch.cuda.is_available() is false); nothing run" >&2
    exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_smoke.XXXXXX")
mkdir -p "$OUT/logs"
TABLE=$OUT/gpu_smoke.md
ROWS=()
FAILED=0

# step NAME COMMAND...: run COMMAND with its log in $OUT/logs/NAME.log. Its rows are the `ROW|name|status|seconds|
# detail` lines it prints (bench/gpu_smoke.py), else one row: NAME, ok, the seconds and $STEP_DETAIL; plus a FAIL row
# with the first error line when it exits non-zero.
step() {
    local name=$1 start=$SECONDS
    shift
    echo "== $name: $*"
    "$@" > "$OUT/logs/$name.log" 2>&1
    local rc=$? seconds=$((SECONDS - start)) printed
    printed=$(grep '^ROW|' "$OUT/logs/$name.log" | cut -d'|' -f2-)
    if [[ -n $printed ]]; then
        while IFS='|' read -r row status row_seconds detail; do
            ROWS+=("| $row | $status | $row_seconds | $detail |")
        done <<< "$printed"
    fi
    if ((rc != 0)); then
        FAILED=1
        ROWS+=("| $name | FAIL (exit $rc) | $seconds | $(grep -m1 -E 'Error|error:' "$OUT/logs/$name.log" | cut -c1-160) |")
    elif [[ -z $printed ]]; then
        ROWS+=("| $name | ok | $seconds | $STEP_DETAIL |")
    fi
}
# check NAME PYTHON_EXPRESSION: the step NAME passed only if the expression (over `work`, a pathlib.Path) holds.
check() {
    "$PY" -c "import json, pathlib, sys; work = pathlib.Path(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$WORK" \
        || { FAILED=1; ROWS+=("| $1 | FAIL (check) | | $2 |"); }
}

STEP_DETAIL="tiny Llama + 96 noisy pairs"
step prepare "$PY" bench/gpu_smoke.py prepare "$WORK"

STEP_DETAIL="1 round, 2 epochs, NF4 + LoRA q/v, bf16, oracle priors"
step refine_qlora "$PY" recipes/refine_classifier.py --dataset_path "$WORK/pairs.jsonl" --output_dir "$WORK/refine" \
    --model_name_or_path "$WORK/tiny" --mode qlora --num_rounds 1 --num_labeled 0 --round_selection last \
    --per_device_train_batch_size 8 --num_train_epochs 2 --max_length 64 --lora_target_modules q_proj v_proj \
    --learning_rate 5e-3
check refine_qlora '(work / "refine" / "round_01" / "model" / "config.json").is_file()'

STEP_DETAIL="recipes/export_reward_model.py"
step export "$PY" recipes/export_reward_model.py --run_dir "$WORK/refine" --output_dir "$WORK/reward_model"
step export_reload "$PY" bench/gpu_smoke.py check-export "$WORK"

GRPO_ARGS=(recipes/safety_grpo.py --config recipes/configs/grpo/cpu_smollm2.yaml --model_name_or_path "$WORK/tiny"
    --reward_model "$WORK/reward_model" --use_cpu false --bf16 true --max_steps 2 --evaluate false --max_prompts 16
    --per_device_train_batch_size 4 --num_generations 2 --max_completion_length 16)
if import_error=$("$PY" -c "import deepspeed" 2>&1); then
    GRPO_CONFIG=recipes/accelerate/zero2.yaml
    STEP_DETAIL="2 steps, DeepSpeed ZeRO-2 (recipes/accelerate/zero2.yaml), 1 process"
else
    GRPO_CONFIG=recipes/accelerate/single_gpu.yaml
    STEP_DETAIL="2 steps, no DeepSpeed (import failed: ${import_error##*$'\n'}), recipes/accelerate/single_gpu.yaml"
fi
step grpo "$PY" -m accelerate.commands.launch --config_file "$GRPO_CONFIG" --num_processes 1 "${GRPO_ARGS[@]}" \
    --output_dir "$WORK/grpo"
check grpo 'json.loads((work / "grpo" / "summary.json").read_text())["steps"] == 2'

PPO_ARGS=(recipes/safety_ppo.py --config recipes/configs/ppo/cpu_smollm2.yaml --model_name_or_path "$WORK/tiny"
    --reward_model "$WORK/reward_model" --use_cpu false --bf16 true --total_episodes 16 --evaluate false
    --max_prompts 16 --per_device_train_batch_size 4 --response_length 16 --save_steps 2 --save_total_limit 2)
STEP_DETAIL="4 updates, ${STEP_DETAIL#2 steps, }"
step ppo "$PY" -m accelerate.commands.launch --config_file "$GRPO_CONFIG" --num_processes 1 "${PPO_ARGS[@]}" \
    --output_dir "$WORK/ppo"
check ppo 'json.loads((work / "ppo" / "summary.json").read_text())["steps"] == 4'
mkdir -p "$WORK/ppo_resumed" && cp -r "$WORK/ppo/checkpoint-2" "$WORK/ppo_resumed/"
STEP_DETAIL="from checkpoint-2 to update 4, same launcher"
step ppo_resume "$PY" -m accelerate.commands.launch --config_file "$GRPO_CONFIG" --num_processes 1 "${PPO_ARGS[@]}" \
    --output_dir "$WORK/ppo_resumed"
check ppo_resume 'json.loads((work / "ppo_resumed" / "summary.json").read_text())["steps"] == 4 and "resuming from" in (work / "ppo_resumed" / "run.log").read_text()'

if "$PY" -c "import vllm" > /dev/null 2>&1; then
    STEP_DETAIL="2 steps, use_vllm colocate, recipes/accelerate/single_gpu.yaml"
    step grpo_vllm "$PY" -m accelerate.commands.launch --config_file recipes/accelerate/single_gpu.yaml \
        --num_processes 1 "${GRPO_ARGS[@]}" --output_dir "$WORK/grpo_vllm" --use_vllm true --vllm_mode colocate \
        --vllm_gpu_memory_utilization 0.2
    check grpo_vllm 'json.loads((work / "grpo_vllm" / "summary.json").read_text())["steps"] == 2'
else
    ROWS+=("| grpo_vllm | skipped | | vllm is not importable by $PY |")
fi

step throughput "$PY" bench/gpu_smoke.py throughput "$WORK"

{
    echo "GPU smoke check, $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1);" \
        "$("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
    echo
    echo "| step | status | seconds | detail |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
} > "$TABLE"
echo
cat "$TABLE"
rm -rf "$WORK"
exit $FAILED
