#!/usr/bin/env bash
# Builds .gpu_wheels/ (git-ignored): the wheels bench/gpu_smoke.sh needs on the GPU machine, which has Python 3.12,
# torch 2.11+cu130, transformers 5.17, accelerate 1.15, peft and most scientific packages, but no trl, datasets,
# bitsandbytes or deepspeed, and cannot download anything. docs/gpu.md has the `run` command that installs them.
#   bash bench/gpu_wheels.sh        # needs PyPI; prints the folder's size (it travels with each call: <= 64 MiB)
#
# - the project's pins: trl, datasets, transformers, peft (the machine's own transformers/peft are older);
# - bitsandbytes 0.50.2, slimmed to its CUDA 13 and CPU libraries: the machine's torch is built for CUDA 13.0, and
#   the full wheel (43 MB, one library per CUDA release) would leave too little room;
# - deepspeed 0.19.8, which PyPI has as source only: built here as a pure-Python wheel (DS_BUILD_OPS=0; its CUDA ops
#   compile on first use, with the machine's nvcc), for the ZeRO-2 step;
# - what those need and the machine lacks: dill and multiprocess (datasets), pydantic and hjson (deepspeed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
DEST=.gpu_wheels
LIMIT_MIB=56  # the working tree travels too (64 MiB per call in all)
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
           --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d "$DEST" \
    trl==1.12.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 \
    dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 hjson==3.1.0
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" deepspeed==0.19.8

# Keep bitsandbytes' CUDA 13 and CPU libraries only; RECORD loses the lines of the files left out.
"$PY" - "$DEST"/bitsandbytes-0.50.2-*.whl <<'PYTHON'
import re, sys, zipfile
from pathlib import Path

path = Path(sys.argv[1])
keep = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\.so$")
dropped = lambda name: "libbitsandbytes_" in name and not keep.search(name)
slim = path.with_suffix(".slim")
with zipfile.ZipFile(path) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if dropped(item.filename):
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = "".join(line for line in data.decode().splitlines(keepends=True)
                           if not dropped(line.split(",")[0])).encode()
        target.writestr(item, data)
slim.replace(path)
PYTHON

ls -l "$DEST"
size=$(du -sm "$DEST" | cut -f1)
echo "gpu_wheels: $(ls "$DEST" | wc -l) wheels, ${size} MiB in $DEST"
if ((size > LIMIT_MIB)); then
    echo "gpu_wheels: $DEST is over ${LIMIT_MIB} MiB; it would not travel beside the working tree" >&2
    exit 1
fi
