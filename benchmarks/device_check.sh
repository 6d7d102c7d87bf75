#!/usr/bin/env bash
# Device check on one GPU, in under 8 minutes: the CUDA tests, then img/s and peak memory per method
# (WRN-28-10 b200 and ResNet-50 b64, random weights, fp32 and bf16), CoTTA's views_per_call chosen by
# measurement, and `tta run -m source` against a bare forward loop; the table goes to benchmarks/results/.
#
#   bash benchmarks/device_check.sh                      # on a GPU machine: writes device_check_<card>.md
#   bash benchmarks/device_check.sh --device cpu --quick # here: the same pipeline, small, on CPU (into /tmp)
#
# Budget on one GPU (estimated, not yet run on one): tests ~2 min (62 tests, CPU references included), rows <= 330 s
# (--budget; rows not reached are listed as such), `tta run` comparison ~30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
QUICK=""
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument $1; use --device cpu|cuda, --quick, --out FILE" >&2; exit 2 ;;
  esac
done
if [[ "$DEVICE" == cuda ]] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA GPU visible; run with --device cpu --quick to check the pipeline" >&2; exit 2
fi
if [[ -z "$OUT" ]]; then
  if [[ -n "$QUICK" ]]; then OUT="${TMPDIR:-/tmp}/device_check_${DEVICE}_quick.md"; else
    CARD=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))" 2>/dev/null || echo "$DEVICE")
    OUT="benchmarks/results/device_check_${CARD}.md"; fi
fi
START=$(date +%s)
echo "== CUDA tests on $DEVICE" >&2
TESTS=(tests/test_cuda.py)
KEEP=()
[[ -n "$QUICK" ]] && KEEP=(-k "tbn or tent or views or fp16")
LOG="${OUT%.md}.tests.txt"
TTA_TEST_DEVICE="$DEVICE" OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider "${TESTS[@]}" "${KEEP[@]}" 2>&1 | tee "$LOG" | tail -5
TEST_STATUS=${PIPESTATUS[0]}
echo "== throughput and memory on $DEVICE" >&2
BUDGET=330
[[ -n "$QUICK" ]] && BUDGET=60
python benchmarks/bench_device.py --device "$DEVICE" $QUICK --budget "$BUDGET" \
  $([[ -n "$QUICK" ]] && echo "--steps 1 --warmup 1 --views 1 2") --out "$OUT"
{
  echo "## CUDA tests"
  echo
  echo "\`TTA_TEST_DEVICE=$DEVICE python -m pytest -q tests/test_cuda.py ${KEEP[*]:-}\` (exit status $TEST_STATUS):"
  echo
  echo '```'
  tail -5 "$LOG"
  echo '```'
  echo
  echo "Whole check: $(( $(date +%s) - START )) s."
} >> "$OUT"
echo "wrote $OUT" >&2
exit "$TEST_STATUS"
