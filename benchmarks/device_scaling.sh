#!/usr/bin/env bash
# DDP scaling where there are more cores than this project's 2-core machines have, and the
# NCCL path on a GPU: one prepared run for a lent machine with many cores and one GPU
# (the `device` tool's: 16 cores, one H200), about 8 minutes there.
#
#   bash benchmarks/device_scaling.sh            # results under $OUT (default /tmp/recforge-device)
#
# 1. bench_scaling at SIZE events (default 5M) for mf and bpr with the job limited to 2, 4,
#    8 and 16 cores (CORES): one process with all of them, one process with one rank's
#    share, two DDP processes on gloo with half each. On 2 cores this repeats the rows of
#    docs/scaling.md; with more, it says how the per-process efficiency grows with the cores
#    a rank gets. One JSON per core count: scaling_<C>cores.json.
# 2. `bpr` on 1M synthetic events, 3 epochs, launched by torchrun with one rank, on the GPU
#    (an NCCL process group; one GPU holds one NCCL rank, so no gradient all-reduce runs)
#    and on the CPU (gloo): gpu.log holds both runs' output and seconds.
# Needs only what the machine's Python has (torch, numpy, pandas, pyarrow, typer, rich,
# tqdm, pyyaml): the repository's src/ is put on PYTHONPATH, nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/recforge-device}
CACHE=${CACHE:-/tmp/recforge-scale}
SIZE=${SIZE:-5M}
mkdir -p "$OUT" "$CACHE"
avail=$($PY -c 'import os; print(len(os.sched_getaffinity(0)))')
echo "cores available: $avail; $(nproc) online"
for c in ${CORES:-2 4 8 16}; do
  if [ "$c" -gt "$avail" ]; then echo "skip $c cores: only $avail"; continue; fi
  $PY benchmarks/bench_scaling.py --sizes "$SIZE" --models mf,bpr --only 1,1t,2 \
      --cores "$c" --repeat "${REPEAT:-1}" --cache "$CACHE" --out "$OUT/scaling_${c}cores.json" \
      2>&1 | grep -v '^[┃┏┡│└ ]' || true
done
ls "$OUT"/scaling_*cores.json >/dev/null 2>&1 && $PY benchmarks/bench_scaling.py \
    --from-json "$OUT"/scaling_*cores.json --out "$OUT/scaling_cores.json" 2>&1 \
    | grep -v '^[┃┏┡│└ ]' || true

if $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  data="$CACHE/synthetic-1000000.parquet"
  [ -f "$data" ] || $PY -c "from recforge.data.synthetic import write_synthetic_parquet as w; \
w('$data', n_users=6900, n_items=27000, n_interactions=1_000_000, seed=0)"
  for dev in cuda cpu; do
    echo "== bpr, torchrun with one rank, device $dev" | tee -a "$OUT/gpu.log"
    start=$SECONDS
    $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m recforge train bpr \
        --data "$data" --format parquet --out "/tmp/recforge-device-bpr-$dev" \
        -p device="$dev" -p epochs=3 -p batch_size=65536 -p n_negatives=1 2>&1 \
        | tail -20 | tee -a "$OUT/gpu.log"
    echo "seconds: $((SECONDS - start))" | tee -a "$OUT/gpu.log"
  done
else
  echo "no GPU: GPU not checked" | tee -a "$OUT/gpu.log"
fi
