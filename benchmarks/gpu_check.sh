#!/usr/bin/env bash
# The GPU checks of issue 19 in one command, under 8 minutes on one H200: the gpu tests
# and the device-sensitive test files, training throughput (plain loop, trainer eager,
# CUDA graphs, torch.compile) and search throughput (--workers-per-gpu 1 / --workers 4 /
# --workers-per-gpu auto, trials per minute and GPU busy share). Every figure lands in
# $OUT/gpu_check.json (benchmarks/gpu_check.py says what each one is); nvidia-smi's view
# goes to $OUT/nvidia-smi.txt. Extra arguments go to gpu_check.py (e.g. --parts search).
#
# The device machine's image has torch but not pydantic: carry the wheels (see
# /work/.library/device/README.md). Once, here, in the repo's root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing_extensions==4.16.0
# Then the device tool's run, with carry [".whl"] and timeout_s 540:
#   bash benchmarks/gpu_check.sh
# (this script installs the carried wheels itself and puts the repo on PYTHONPATH).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || echo "gpu_check: installing the carried wheels failed"
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "gpu_check: no nvidia-smi"
timeout 500 python3 benchmarks/gpu_check.py --device cuda --out "$OUT" "$@"
status=$?
python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=1))" \
    "$OUT/gpu_check.json" 2>/dev/null | head -c 9000
exit $status
