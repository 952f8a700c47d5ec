#!/usr/bin/env bash
# perf_analyzer sweeps of the ensemble and of each step over gRPC, with plain gRPC,
# system shared memory and CUDA shared memory: one CSV per model x sweep x transport.
#
# Run inside the NGC Triton SDK container (perf_analyzer is there), on the server's host
# for shared memory, with the input data written by
# `python -m camdet.perf.input_data --out DATA`:
#
#   perf/perf_analyzer_sweeps.sh DATA OUT
#
# Settings (environment, defaults in brackets):
#   URL           gRPC endpoint [localhost:8001]
#   METRICS_URL   Prometheus endpoint; server GPU metrics go into the CSV [localhost:8002/metrics]
#   MODELS        models to sweep [detect validate preprocess detector postprocess]
#   SHM           transports [none system cuda]
#   CONCURRENCY   concurrency levels, one perf_analyzer run each [1 2 4 8 16 32 64]
#   RATES         --request-rate-range start:end:step in requests/s [100:1000:100]
#   INTERVAL_MS   measurement window in ms [5000]
#   EXTRA         extra perf_analyzer arguments, e.g. "--percentile=99" [none]
#
# Every request carries one frame (-b 1), like a camera and as the ensemble's ragged JPEG
# input requires; the server's dynamic batcher builds the batches.
set -euo pipefail

DATA=${1:?usage: $0 DATA_DIR OUT_DIR}
OUT=${2:?usage: $0 DATA_DIR OUT_DIR}
URL=${URL:-localhost:8001}
METRICS_URL=${METRICS_URL:-localhost:8002/metrics}
MODELS=${MODELS:-detect validate preprocess detector postprocess}
SHM=${SHM:-none system cuda}
CONCURRENCY=${CONCURRENCY:-1 2 4 8 16 32 64}
RATES=${RATES:-100:1000:100}
INTERVAL_MS=${INTERVAL_MS:-5000}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
# Room per output tensor for one frame's detections (300 boxes, scores, ids, labels).
OUTPUT_SHM_BYTES=${OUTPUT_SHM_BYTES:-1048576}

command -v perf_analyzer >/dev/null || {
  echo "perf_analyzer not found: run in nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk" >&2
  exit 2
}
mkdir -p "$OUT"

analyze() {  # MODEL SHM CSV [perf_analyzer arguments...]
  local model=$1 shm=$2 csv=$3
  shift 3
  perf_analyzer -m "$model" -i grpc -u "$URL" -b 1 \
    --input-data "$DATA/$model.json" \
    --shared-memory "$shm" --output-shared-memory-size "$OUTPUT_SHM_BYTES" \
    --measurement-interval "$INTERVAL_MS" \
    --collect-metrics --metrics-url "$METRICS_URL" --verbose-csv \
    -f "$csv" "$@" "${EXTRA_ARGS[@]}"
}

merge_csv() {  # OUT IN... : one header, then every row
  local out=$1
  shift
  awk 'FNR > 1 || NR == 1' "$@" >"$out" && rm -f "$@"
}

for model in $MODELS; do
  if [[ ! -f "$DATA/$model.json" ]]; then
    echo "skip $model: no $DATA/$model.json" >&2
    continue
  fi
  for shm in $SHM; do
    parts=()
    for c in $CONCURRENCY; do
      analyze "$model" "$shm" "$OUT/.$model-c$c-$shm.csv" --concurrency-range "$c"
      parts+=("$OUT/.$model-c$c-$shm.csv")
    done
    merge_csv "$OUT/$model-concurrency-$shm.csv" "${parts[@]}"
    analyze "$model" "$shm" "$OUT/$model-rate-$shm.csv" \
      --request-rate-range "$RATES" --request-distribution poisson --max-threads 32
  done
done
echo "CSV files in $OUT"
