#!/usr/bin/env bash
# GPU smoke test, for a machine with at least one CUDA GPU (not used by the tests or CI):
#   1. one QLoRA refinement round of the embedded SmolLM2 as a classifier (recipes/refine_classifier.py, mode qlora,
#      1 epoch on a small subset of the demo pairs, round-0 labels = the `refusal` column: noisy, theta_p > theta_n),
#   2. its export as a reward model (recipes/export_reward_model.py): same tokenizer as the policy,
#   3. 2 steps each of PPO and GRPO on SmolLM2 with LoRA under DeepSpeed ZeRO-2 and ZeRO-3 (one process), PPO
#      reading the classifier natively under ZeRO-2 and through the re-tokenizing adapter under ZeRO-3.
# Each step's log goes to $OUT/<step>.log; a summary table is printed; exit status 1 if any step failed.
#
#   bash bench/gpu_smoke.sh                 # after `make install`; about 5 minutes on one A100/H100
#   OUT=/tmp/smoke PY=python ACCELERATE=accelerate bash bench/gpu_smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
ACCELERATE=${ACCELERATE:-.venv/bin/accelerate}
OUT=${OUT:-runs/gpu_smoke}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_smoke: no CUDA GPU visible to $PY; nothing run" >&2
    exit 2
fi
rm -rf "$OUT" && mkdir -p "$OUT"

RESULTS=()
FAILED=0

# step NAME CHECK_PYTHON -- COMMAND...: run COMMAND (log in $OUT/NAME.log), then the check (a Python expression
# over `out`, the step's output folder, that must hold) and record ok/FAIL with the wall time.
step() {
    local name=$1 check=$2
    shift 3
    local start=$SECONDS status=ok
    echo "== $name: $*"
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    if ((rc != 0)); then
        status="FAIL (exit $rc, see $OUT/$name.log)"
    elif ! "$PY" -c "import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); assert $check, 'check failed'" \
            "$OUT/$name" >> "$OUT/$name.log" 2>&1; then
        status="FAIL (check: $check)"
    fi
    [[ $status == ok ]] || FAILED=1
    RESULTS+=("$(printf '%-14s %5ss  %s' "$name" $((SECONDS - start)) "$status")")
}

summary_steps='json.loads((out / "summary.json").read_text())["steps"] == 2 and (out / "model" / "config.json").is_file()'

step refine_qlora '(out / "model" / "config.json").is_file() and (out / "summary.json").is_file()' -- \
    "$PY" recipes/refine_classifier.py --dataset_path alignment/demo_data/pairs.jsonl --pseudo_label_column refusal \
    --output_dir "$OUT/refine_qlora" --model_name_or_path embedded:smollm2 --mode qlora --bf16 true \
    --num_rounds 1 --num_train_epochs 1 --max_train_items 128 --num_labeled 50 --per_device_train_batch_size 8 \
    --max_length 256 --lora_target_modules q_proj v_proj --seed 0

step reward_model 'json.loads((out / "config.json").read_text())["num_labels"] == 1' -- \
    "$PY" recipes/export_reward_model.py --run_dir "$OUT/refine_qlora" --output_dir "$OUT/reward_model"

for zero in zero2 zero3; do
    ppo_mode=$([[ $zero == zero2 ]] && echo native || echo adapter)
    step "ppo_$zero" "$summary_steps" -- \
        "$ACCELERATE" launch --config_file "recipes/accelerate/$zero.yaml" --num_processes 1 recipes/safety_ppo.py \
        --config recipes/configs/ppo/cpu_smollm2.yaml --reward_model "$OUT/reward_model" --reward_mode "$ppo_mode" \
        --output_dir "$OUT/ppo_$zero" --use_cpu false --bf16 true --total_episodes 8 --per_device_train_batch_size 4 \
        --evaluate false
    step "grpo_$zero" "$summary_steps" -- \
        "$ACCELERATE" launch --config_file "recipes/accelerate/$zero.yaml" --num_processes 1 recipes/safety_grpo.py \
        --config recipes/configs/grpo/cpu_smollm2.yaml --reward_model "$OUT/reward_model" \
        --output_dir "$OUT/grpo_$zero" --use_cpu false --bf16 true --max_steps 2 --evaluate false
done

echo
echo "gpu_smoke summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)):"
printf '%s\n' "${RESULTS[@]}"
exit $FAILED
