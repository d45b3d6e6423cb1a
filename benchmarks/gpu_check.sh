#!/usr/bin/env bash
# GPU check for a lent GPU machine (no internet): synthetic PCam, mixed precision,
# training and inference images/s for MobileNet and ResNet50, minutes per full
# PCam epoch, and a multi-GPU line when several GPUs are visible. Under 8 minutes.
#
# Usage (from anywhere; runs in the repository root):
#   benchmarks/gpu_check.sh [--wheels DIR] [--smoke] [gpu_check.py options]
#     --wheels DIR   install every DIR/*.whl first (pip --no-index --no-deps into
#                    /tmp/pcam-site, put on PYTHONPATH); otherwise tensorflow,
#                    keras, h5py, numpy, psutil must already import
#     --smoke        tiny sizes: a dry run on a CPU
#   PYTHON=python3.11 benchmarks/gpu_check.sh   picks the interpreter (default python3)
#   GPU_CHECK_LIMIT=480                          seconds before the check is stopped
# Figures go to stdout and, with --json FILE, to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
wheels=""
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done

if [[ -n $wheels ]]; then
    compgen -G "$wheels/*.whl" >/dev/null || { echo "no .whl files in $wheels" >&2; exit 2; }
    echo "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into /tmp/pcam-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/pcam-site "$wheels"/*.whl
    export PYTHONPATH=/tmp/pcam-site${PYTHONPATH:+:$PYTHONPATH}
fi

missing=$("$PY" - <<'EOF'
import importlib.util
need = ("tensorflow", "keras", "h5py", "numpy", "psutil")
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [[ -n $missing ]]; then
    echo "$PY ($("$PY" --version 2>&1)) lacks: $missing. Install them (pip install -r" \
         "requirements.txt; tensorflow[and-cuda] for the GPU) or pass --wheels DIR." >&2
    exit 2
fi

export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
echo "host: $(hostname), $(nproc) cores, $("$PY" --version 2>&1)"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader \
    2>/dev/null || echo "nvidia-smi: not available"
exec timeout "${GPU_CHECK_LIMIT:-480}" "$PY" benchmarks/gpu_check.py "${args[@]}"
