#!/usr/bin/env bash
# The GPU check in one run (a lent GPU has 15 minutes including its
# start; this script stops itself after ${TOTAL_S:-600} s, each step under
# its own cap, so it ends within 10 minutes):
#   1. cuda_tests: the CUDA tests of the Triton kernels
#      (tests/ops/test_triton_channelwise.py without the interpreter
#      cases, which the CPU runs cover); on an H200 each new shape costs
#      about 1 s of compilation per kernel and tile, hence the fixed tile
#      in most of them (at most ${CUDA_TESTS_S:-240} s; the slowest
#      tests' times are printed);
#   2. op_table: Triton against cuDNN NCDHW and cuDNN channels-last,
#      forward+backward, fp32 and bf16, at every X3D-M (batch 16) and
#      X3D-L (batch 8) channelwise layer shape
#      (tools/benchmark/gpu_op_speed.py);
#   3. model_table: X3D-M train step at batch 16, fp32 and bf16: ours
#      (Triton), ours with cuDNN's channelwise convolution ("ours, aten
#      channelwise conv") and MMAction2's X3D at its defaults
#      (tools/benchmark/model_speed.py);
#   4. cpu_op_tests, profile_m: the CPU operator's tests
#      (tests/ops/test_channelwise_conv3d.py, which need more than their
#      60 s on an H200 machine's CPU) and the profiler's top CUDA operators
#      of an X3D-M train step, as time allows.
# STEPS="cuda_tests op_table" runs only the steps named.
# With FULL=1 it then also makes the earlier tables of docs/benchmarks.md
# (X3D-XS and X3D-M at batch 8 with peak memory), past the 10 minutes.
# Every step's whole output goes to ${OUT:-work_dirs/gpu_tables}/; the
# summary lines are printed. A failing step does not stop the next; the
# exit status is that of the first failure.
#
# On a machine with torch and Triton but without the OpenMMLab stack or a
# package index, the stack comes as wheels in ${WHEELS:-.whl}/ (written by
# tools/benchmark/gpu_wheels.py where the index is reachable): when that
# folder holds wheels, they are installed with pip --no-index --no-deps
# into a fresh folder under /tmp that goes first on PYTHONPATH, beside the
# machine's own torch and Triton. Without the folder the installed stack
# is used.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$(command -v python3 || echo python)}
OUT=${OUT:-work_dirs/gpu_tables}
TOTAL_S=${TOTAL_S:-600}
STEPS=${STEPS:-cuda_tests op_table model_table cpu_op_tests profile_m}
WHEELS=${WHEELS:-.whl}
export PYTHONUNBUFFERED=1
# The Triton kernels are the CUDA default; X3D_PLUGIN_TRITON=0 in the
# environment would time cuDNN in their place.
mkdir -p "$OUT"
STATUS=0

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    if compgen -G "$WHEELS/torch-*.whl" >/dev/null ||
        compgen -G "$WHEELS/triton-*.whl" >/dev/null; then
        echo "== $WHEELS/ holds a torch or Triton wheel; the run uses the" \
            "machine's own: remove it and run again"
        exit 2
    fi
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/x3d_site.XXXXXX")
    trap 'rm -rf "${SITE:?}"' EXIT
    echo "== wheels: $(compgen -G "$WHEELS/*.whl" | wc -l) from $WHEELS/" \
        "into $SITE"
    if ! PIP_ROOT_USER_ACTION=ignore $PYTHON -m pip install -q --no-index \
        --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
        "$WHEELS"/*.whl; then
        echo "== wheels: pip install failed"
        exit 1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# The checkout's x3d_plugin is the one measured, installed or not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# step NAME CAP_SECONDS FILTER COMMAND...: runs COMMAND for at most
# CAP_SECONDS (less if the total budget is nearly spent; skipped under 20 s
# left), writes its output to $OUT/NAME.txt and prints the lines matching
# the extended regular expression FILTER.
step() {
    local name=$1 cap=$2 filter=$3
    shift 3
    if [[ " $STEPS " != *" $name "* ]]; then
        echo "== $name: not in STEPS"
        return 0
    fi
    local left=$((TOTAL_S - SECONDS))
    if ((left < 20)); then
        echo "== $name: skipped ($SECONDS s used of $TOTAL_S)"
        return 0
    fi
    ((cap > left)) && cap=$left
    echo "== $name (at most $cap s; started at $SECONDS s)"
    timeout "$cap" "$@" 2>&1 | tee "$OUT/$name.txt" | grep -E "$filter"
    local rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        local why=''
        ((rc == 124)) && why=' (cap reached)'
        echo "== $name: exit status $rc$why"
        ((STATUS == 0)) && STATUS=$rc
    fi
    return 0
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    | tee "$OUT/gpu.txt"
$PYTHON -c 'import torch, triton; print("torch", torch.__version__,
"cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
"triton", triton.__version__)' 2>&1 | tee "$OUT/versions.txt"
if ! $PYTHON -c 'import x3d_plugin, mmaction, mmcv, mmengine
print("x3d_plugin", x3d_plugin.__version__, "from", x3d_plugin.__path__[0],
"mmaction2", mmaction.__version__, "mmcv", mmcv.__version__,
"mmengine", mmengine.__version__)' 2>&1 | tee -a "$OUT/versions.txt"; then
    echo "== the stack does not import: install it (requirements/stack.txt)" \
        "or put its wheels in $WHEELS/ (tools/benchmark/gpu_wheels.py)"
    exit 1
fi

step cuda_tests "${CUDA_TESTS_S:-240}" \
    'passed|failed|error|FAILED|ERROR|SKIPPED|s call' \
    $PYTHON -m pytest tests/ops/test_triton_channelwise.py -q -rfEs \
    -p no:cacheprovider -k 'not interpreted' --durations=12
step op_table 170 '^\||diff:|unavailable|no CUDA|Error' \
    $PYTHON tools/benchmark/gpu_op_speed.py --archs m l --dtypes fp32 bf16 \
    --repeats 10 --budget-ms 1000
step model_table 160 '^\||outputs agree|device:|Error|differs' \
    $PYTHON tools/benchmark/model_speed.py --device cuda --archs m \
    --batch 16 --rounds 3 --warmup 2 --precision fp32 bf16
step cpu_op_tests 60 'passed|failed|error|FAILED|ERROR' \
    $PYTHON -m pytest tests/ops/test_channelwise_conv3d.py -q -rfE \
    -p no:cacheprovider
step profile_m 45 '^\||one train step' \
    $PYTHON tools/benchmark/profile_ops.py --device cuda --arch m \
    --batch 8 --top 8

if [[ ${FULL:-0} == 1 ]]; then
    TOTAL_S=$((SECONDS + 600))
    step model_xs_m_b8 600 '^\||outputs agree|device:' \
        $PYTHON tools/benchmark/model_speed.py --device cuda --archs xs m \
        --batch 8 --rounds 5 --warmup 3 --precision fp32 bf16 \
        --memory-batch 8
fi
echo "== done in $SECONDS s, status $STATUS; outputs in $OUT/"
exit "$STATUS"
