#!/usr/bin/env bash
# The GPU pass: everything StreamLab measures on a lent GPU, in one command that ends inside 9 minutes.
#
#   on the GPU machine (the device call; .whl carried, made here by env/gpu/wheels.sh):
#       STREAMLAB_COMMIT=<sha> STREAMLAB_DIRTY=false bash env/gpu/pass.sh      # writes into $OUT
#   here, before spending GPU minutes (every step at tiny sizes on the CPU, Triton interpreted):
#       bash env/gpu/pass.sh --dry-run [--out DIR]                             # default outputs/gpu_pass_dry/<time>
#   afterwards, here:  python -m shared.gpu_publish <the returned folder>
#
# Order: install the carried wheels (pip --no-index --no-deps --target), start gsplat's CUDA build
# in the background, then the machine's provenance and ceilings (copy bandwidth, bf16 matmul), the
# GPU-marked tests that need no gsplat, the ring-decode kernel, FlexAttention prefill, StreamDiT's
# 4B stand-in, STDO, then (gsplat built by then) the splat parity and bench, QUEEN, and the tests
# that need gsplat. Each step runs in its own process under its own timeout, cut to what is left of
# the pass's budget (PASS_BUDGET_S, default 540 s), so one hang costs only its own slot, and the
# merge always runs. What comes back (at most 8 files): gpu_pass.json (every figure, each step's
# status and time, provenance), junit_gpu.xml, junit_gsplat.xml, pass.log, gsplat_build.log.
#
# The dry run uses this machine's Python and packages, but with the packages that the GPU image
# lacks and the wheels do not carry made unimportable (env/gpu/dry_run/sitecustomize.py), so a step
# that would fail to import there fails here too.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DRY=0
DEST=""
while (( $# )); do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) DEST=${2:?--out needs a folder}; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "env/gpu/pass.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUDGET=${PASS_BUDGET_S:-540}
MERGE_RESERVE=20
if (( DRY )); then
  PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
  DEST=${DEST:-outputs/gpu_pass_dry/$(date -u +%Y%m%d-%H%M%S)}
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  export PYTHONPATH="$ROOT/env/gpu/dry_run:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  DRY_FLAG=(--dry-run)
else
  PY=${PYTHON:-python3}
  DEST=${DEST:-${OUT:?env/gpu/pass.sh: set OUT or pass --out DIR (or --dry-run on a CPU)}}
  DRY_FLAG=()
fi
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d)
LOG="$DEST/pass.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled STREAMLAB_PROGRESS=0 MPLBACKEND=Agg
export STREAMLAB_OUTPUTS="$WORK/outputs"

say() { echo "[pass $(printf '%3d' "$SECONDS")s] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$WORK/status.tsv"; }

# run_step NAME SLOT_SECONDS COMMAND...: COMMAND under `timeout`, its output appended to pass.log.
run_step() {
  local name=$1 slot=$2 left t0 code note
  shift 2
  left=$(( BUDGET - MERGE_RESERVE - SECONDS ))
  if (( left < 10 )); then
    say "$name: skipped, the pass's budget is spent"
    record "$name" -1 0 "skipped: budget spent"
    return
  fi
  (( slot > left )) && slot=$left
  say "$name: start (timeout ${slot}s)"
  t0=$SECONDS
  timeout --kill-after=10 "$slot" "$@" >> "$LOG" 2>&1
  code=$?
  case $code in
    0) note=ok ;;
    124|137) note="timed out after ${slot}s" ;;
    *) note="failed (exit $code)" ;;
  esac
  record "$name" "$code" $(( SECONDS - t0 )) "$note"
  say "$name: $note in $(( SECONDS - t0 ))s"
}

# ---- wheels (GPU machine only) ------------------------------------------------------------------
if (( ! DRY )); then
  if compgen -G ".whl/*.whl" > /dev/null; then
    t0=$SECONDS
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/streamlab-site .whl/*.whl >> "$LOG" 2>&1; then
      record wheels 0 $(( SECONDS - t0 )) "ok: $(ls .whl/*.whl | wc -l) wheels"
    else
      record wheels 1 $(( SECONDS - t0 )) "failed: see pass.log"
    fi
  else
    record wheels 1 0 "no .whl/ carried: run bash env/gpu/wheels.sh here and carry .whl"
  fi
  export PYTHONPATH="/tmp/streamlab-site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
say "python $("$PY" -c 'import sys; print(sys.version.split()[0])'), dest $DEST"

# ---- gsplat's CUDA build, in the background (minutes with nvcc; the steps that need it wait) ----
if (( DRY )); then
  build=("$PY" -c "import gsplat; print('gsplat', gsplat.__version__, 'imports (no CUDA build on a CPU)')")
else
  build=(env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${GSPLAT_JOBS:-12} "$PY" -c
         "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat CUDA build failed'; print('gsplat CUDA backend built')")
fi
BUILD_SLOT=$(( BUDGET - MERGE_RESERVE - 150 ))
( t0=$SECONDS; timeout --kill-after=10 "$BUILD_SLOT" "${build[@]}" > "$DEST/gsplat_build.log" 2>&1; code=$?
  echo -e "$code\t$(( SECONDS - t0 ))" > "$WORK/gsplat_build.done" ) &
BUILD_PID=$!

step() { run_step "$1" "$2" "$PY" env/gpu/steps.py "$1" --work "$WORK" "${DRY_FLAG[@]}"; }
tests() {  # NAME SLOT FILES...: the gpu-marked tests of FILES, with a junit report
  local name=$1 slot=$2
  shift 2
  run_step "tests_$name" "$slot" "$PY" -m pytest -q -m gpu -p no:cacheprovider -o junit_family=xunit1 \
    --junitxml="$DEST/junit_$name.xml" "$@"
}

step machine 60
tests gpu 120 tests/test_gpu.py tests/kernels/test_ring_decode.py experiments/streamdit/tests/test_bench.py \
  experiments/careless_whisper/tests/test_train.py
step ring_decode 100
step flex_prefill 75
step streamdit 150
step stdo 45

# ---- the steps that need gsplat's CUDA backend ---------------------------------------------------
left=$(( BUDGET - MERGE_RESERVE - 30 - SECONDS ))
if (( left > 0 )) && kill -0 "$BUILD_PID" 2>/dev/null; then
  say "waiting for gsplat's build (at most ${left}s)"
  waited=0
  while kill -0 "$BUILD_PID" 2>/dev/null && (( waited < left )); do sleep 2; waited=$(( waited + 2 )); done
fi
if [[ -f "$WORK/gsplat_build.done" ]]; then
  IFS=$'\t' read -r code seconds < "$WORK/gsplat_build.done"
  record gsplat_build "$code" "$seconds" "$( [[ $code == 0 ]] && echo ok || echo "failed (exit $code): see gsplat_build.log")"
else
  record gsplat_build -1 $(( SECONDS )) "still building when the pass needed it"
fi
say "gsplat build: $(tail -1 "$WORK/status.tsv" | cut -f4)"
step splat 60
step queen 90
tests gsplat 60 tests/kernels/test_splat.py experiments/queen/tests/test_queen.py
kill "$BUILD_PID" 2>/dev/null

# ---- merge: one gpu_pass.json, and a summary for whoever reads the output ----------------------
timeout 60 "$PY" env/gpu/steps.py merge --work "$WORK" --out "$DEST" "${DRY_FLAG[@]}" 2>&1 | tee -a "$LOG"
code=${PIPESTATUS[0]}
say "done: $(ls "$DEST" | tr '\n' ' ')"
rm -rf "$WORK"
exit "$code"
