#!/usr/bin/env bash
# Download, here, every wheel the GPU pass needs that the lent GPU machine's image lacks, into the
# ignored .whl/ at the repository root (CPython 3.12, manylinux x86-64; the GPU machine reaches no
# package registry). The device call then carries .whl, and env/gpu/pass.sh installs it there with
# pip --no-index --no-deps --target.
#
#   bash env/gpu/wheels.sh        # prints each wheel and the total; fails above 48 MiB
#   WHEELS_DIR=/tmp/w bash env/gpu/wheels.sh   # elsewhere (the test does this)
#
# Versions are the lock's (env/constraints.txt), so the GPU runs the same libraries as CI. The image
# already has torch 2.11, triton 3.6, transformers, peft, einops, numpy, scipy, matplotlib, rich,
# jaxtyping, ninja, packaging, click, PyYAML, pytest (see ../shared/handbook/gpu.md); what is
# listed here is what it lacks, each package's own requirements included (--no-deps everywhere).
set -euo pipefail
cd "$(dirname "$0")/../.."

LIMIT_MIB=48
DEST=${WHEELS_DIR:-.whl}
PACKAGES=(
  hydra-core omegaconf   # configs (shared.config) and the Hydra entry points
  gsplat                 # pure Python; compiles its CUDA code on first use (pass.sh builds it in the background)
  constriction           # QUEEN's entropy coder
  av                     # video files (QUEEN's N3DV layout, STDO's clips): PyAV, FFmpeg inside the wheel
  jiwer RapidFuzz        # CarelessWhisper's WER (jiwer needs RapidFuzz)
  soundfile cffi pycparser   # audio files (soundfile needs cffi, cffi needs pycparser)
)
PY=${PYTHON:-python3}
pin() {  # NAME -> NAME==VERSION from the lock
  local line
  line=$(grep -i -E "^$1==" env/constraints.txt) || { echo "env/gpu/wheels.sh: $1 is not in env/constraints.txt" >&2; exit 1; }
  echo "$line"
}

rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
platforms=()
for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for name in "${PACKAGES[@]}"; do
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$DEST.partial" "$(pin "$name")" 2> >(grep -v "WARNING: Location" >&2)
done
# antlr4-python3-runtime 4.9.3 (omegaconf's parser runtime) has only a source archive on PyPI; it is
# pure Python, so a wheel built here installs on 3.12 too.
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$DEST.partial" "$(pin antlr4-python3-runtime)" 2> >(grep -v "WARNING: Location" >&2)

rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
total=0
for f in "$DEST"/*.whl; do
  size=$(stat -c %s "$f")
  total=$((total + size))
  awk -v n="$(basename "$f")" -v s="$size" 'BEGIN { printf "  %-80s %8.2f MiB\n", n, s / 1048576 }'
done
awk -v c="$(ls "$DEST"/*.whl | wc -l)" -v t="$total" -v d="$DEST" -v l="$LIMIT_MIB" \
  'BEGIN { printf "env/gpu/wheels.sh: %d wheels, %.2f MiB in %s (limit %d MiB)\n", c, t / 1048576, d, l }'
if (( total > LIMIT_MIB * 1048576 )); then
  echo "env/gpu/wheels.sh: the wheels exceed $LIMIT_MIB MiB: the working tree that travels is capped at 64 MiB" >&2
  exit 1
fi

# What travels to the GPU machine: the working tree (tracked and untracked-not-ignored files) and
# the carried wheels, at most 64 MiB together.
tree=$(git ls-files -z --cached --others --exclude-standard 2>/dev/null | xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
awk -v t="$tree" -v w="$total" 'BEGIN { printf "env/gpu/wheels.sh: the working tree %.2f MiB + the wheels %.2f MiB = %.2f MiB travel (limit 64 MiB)\n", t / 1048576, w / 1048576, (t + w) / 1048576 }'
if (( tree + total > 64 * 1048576 )); then
  echo "env/gpu/wheels.sh: more than 64 MiB would travel to the GPU machine: ignore large untracked files or carry fewer wheels" >&2
  exit 1
fi
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo true || echo false)
echo "device call: command \"STREAMLAB_COMMIT=$commit STREAMLAB_DIRTY=$dirty bash env/gpu/pass.sh\", carry [\".whl\"], timeout_s 600"
