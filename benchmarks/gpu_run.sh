#!/usr/bin/env bash
# The GPU run behind benchmarks/README.md's GPU figures, as sent to a lent GPU machine.
#
# The machine has Python 3.12 and torch but neither the project's other dependencies nor PostgreSQL nor
# internet: the wheels travel in .whl/ (pip download ... on a machine with a registry, see benchmarks/README.md), the
# PostgreSQL server is the pgserver wheel's, started by throwaway_postgres.py. Results go to $OUT (one JSON,
# one log and the profiles per architecture), written as each architecture finishes.
#
#   OUT=/tmp/out bash benchmarks/gpu_run.sh                 # all three architectures
#   OUT=/tmp/out ARCHS="alexnet" bash benchmarks/gpu_run.sh
#   OUT=/tmp/out EXTRA="--batches 32 --chunk 512 --repeats 3 --methods gradcam,lrp_fast" bash benchmarks/gpu_run.sh
#
# The copy of the tree on the device has no .git: pass FOCUS_BENCH_COMMIT=$(git rev-parse --short HEAD) so the
# JSON records which commit was measured.
#
# The device tool brings back at most eight files: logs and profiles also go into $OUT/results.tgz.
set -u
OUT=${OUT:?set OUT to a results folder}
ARCHS=${ARCHS:-"alexnet resnet18 vgg16"}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/run.log"; }

stamp "installing the wheels"
"$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 || stamp "pip failed"
export PYTHONPATH=/tmp/site:$PWD DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MPLBACKEND=Agg
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -c "import torch, sys; print(sys.version, torch.__version__, torch.cuda.get_device_name())" >>"$OUT/run.log" 2>&1

stamp "starting PostgreSQL"
URL=$("$PYTHON" benchmarks/throwaway_postgres.py start --dir /tmp/pgbench --port 5433 2>>"$OUT/postgres.log")
if [ -z "$URL" ]; then stamp "no PostgreSQL: SQLite store"; STORE=(); else STORE=(--db "$URL"); fi
trap '"$PYTHON" benchmarks/throwaway_postgres.py stop --dir /tmp/pgbench >/dev/null 2>&1 || true' EXIT

for arch in $ARCHS; do
  if [ -n "${EXTRA:-}" ]; then read -r -a extra <<<"$EXTRA"; else case $arch in
    alexnet)  extra=(--batches 8 --repeats 3 --methods gradcam,gradient,smoothgrad:n_samples=8,lrp_fast,lrp) ;;
    resnet18) extra=(--batches 4 --repeats 3 --methods gradcam,gradient,smoothgrad:n_samples=8,lrp_fast) ;;
    vgg16)    extra=(--batches 4 --repeats 2 --methods gradcam,gradient,smoothgrad:n_samples=8,lrp_fast) ;;
    *)        extra=(--batches 4 --repeats 2) ;;
  esac; fi
  stamp "$arch"
  "$PYTHON" benchmarks/throughput.py --device cuda --arch "$arch" --size 448 --batch 64 --no-quantus \
      "${extra[@]}" "${STORE[@]}" --profile "$OUT/profiles" --out "$OUT/$arch.json" >"$OUT/$arch.log" 2>&1
  stamp "$arch done (exit $?)"
  tail -n 25 "$OUT/$arch.log"
done
stamp "finished"
tar -czf "$OUT/results.tgz" -C "$OUT" --exclude results.tgz . 2>/dev/null
find "$OUT" -mindepth 1 -not -name results.tgz -not -name run.log -not -name '*.json' -exec rm -rf {} + 2>/dev/null
