#!/usr/bin/env bash
# The GPU measurements of issue #21, one command each, on the GPU machine after
# ../shared/device/README.md's set-up (`source /tmp/site/env.sh` first). Results go under
# $OUT (default gpu-out/): copy them to perf/results/h100/ and into perf/RESULTS.md.
#
#   bash perf/gpu_session.sh tests       # GPU tests + the server tests on the GPU server
#   bash perf/gpu_session.sh jpeg        # detect: ours vs naive vs bare at 128/256 cameras
#                                        # (JPEG_CAMERAS), a fixed-rate point at ~70% of the peak
#   bash perf/gpu_session.sh video       # detect_video at 128/256 cameras (VIDEO_CAMERAS), 1080p H.264,
#                                        # and ~70% of the peak at the peak's cameras
#   bash perf/gpu_session.sh pa          # perf_analyzer CSVs: detect at 16/64/256, gRPC and CUDA shm
#   bash perf/gpu_session.sh speed       # the detector at 640x640 vs 640x384 (torch FP16, batch 64)
#   bash perf/gpu_session.sh profile     # where detect_pipeline's time goes at 256 cameras (its phases),
#                                        # and the hardware JPEG decoder's speed inside its stubs
#   bash perf/gpu_session.sh diagnose    # the decoder alone vs inside the pipelines under load:
#                                        # phase counters, threads, py-spy (JPEG x3/x1, H.264)
#   bash perf/gpu_session.sh variants    # detect at 256 cameras per arrangement: overlapped stages
#                                        # x1/x2/x3, one thread x3 (session 6), validate per 2 cores
#   bash perf/gpu_session.sh dali        # the DALI backend (.gpu/dali, built on the CPU machine):
#                                        # its tests on the GPU, and detect through it vs the stand-in
#   bash perf/gpu_session.sh schedules   # detect at 256 cameras per CAMDET_CUDA_SCHEDULE (auto, yield,
#                                        # blocking-sync): the fastest's variable to best-schedule.txt
#   bash perf/gpu_session.sh cpu         # detect at 256 cameras per use of the server's cores: the CUDA
#                                        # wait (auto, yield, blocking-sync) and validate in the
#                                        # pipelines (CAMDET_PIPELINE_VALIDATE): fastest to best-cpu.txt
#   bash perf/gpu_session.sh mps         # detect at 256 cameras without and with the private CUDA MPS
#                                        # daemon (CAMDET_MPS), and with 4 / 6 pipeline instances under
#                                        # it: the fastest arrangement's variables go to best-env.txt
#   bash perf/gpu_session.sh dali_cpu    # detect per way the JPEG pipelines' DALI spends CPU (threads,
#                                        # hardware decoder or CUDA cores, executor), each with the
#                                        # server's CPU by thread: the fastest's variables to best-dali.txt
#   bash perf/gpu_session.sh cpu_threads # the bare loop's CPU by thread, then the server's at
#                                        # VARIANT_CAMERAS: defaults, 2 pipeline instances, no MPS
#   bash perf/gpu_session.sh native      # the server's CPU by thread and 20 native-stack samples
#                                        # (pystack) of a detect_pipeline stub at VARIANT_CAMERAS
#   bash perf/gpu_session.sh variant NAME ENV...  # one such point (VARIANT_CAMERAS, default 256)
#   bash perf/gpu_session.sh short       # for a call of ~5 minutes on a fresh card: detect_video at
#                                        # 256 cameras (one point, VIDEO_CAMERAS), then the accuracy
#                                        # and pipeline tests (-v: each test's line), SHORT_LIMIT (270) s
#   bash perf/gpu_session.sh nvdec       # how many NVDEC decoders the card opens at once, from 1 and
#                                        # 4 processes, without and with the private MPS daemon
#   bash perf/gpu_session.sh decoders_parts  # NVDEC decoders beside an idle server per arrangement
#                                        # (PARTS): no MPS daemon, three steps, one pipeline instance
#   bash perf/gpu_session.sh video_variants  # detect_video at 192 cameras per arrangement
#                                        # (VIDEO_POINTS), 70 % of the best
#   bash perf/gpu_session.sh video_instances  # the same per count of video pipeline instances
#                                        # (VIDEO_INSTANCES, "6 4"), 70 % of each
#   bash perf/gpu_session.sh nvdec_parallel  # one process's decoders: GIL share, threads vs processes
#   bash perf/gpu_session.sh video_profile   # py-spy of detect_video_pipeline in its steady state
#   bash perf/gpu_session.sh warm_up     # detect warmed up with a whole batch vs one frame
#   bash perf/gpu_session.sh accuracy    # the GPU accuracy and pipeline tests (-v), ACCURACY_LIMIT
#                                        # (240) s
#   bash perf/gpu_session.sh gather_ab   # detect and detect_video (with 70 % of each peak) with
#                                        # the decode stage gathering waiting batches and without
#   bash perf/gpu_session.sh rest_tests  # the other GPU tests: segments, CUDA wait flags, MPS,
#                                        # doctor (-v), REST_LIMIT (150) s
#   bash perf/gpu_session.sh jpeg_instances  # detect at VARIANT_CAMERAS per count of JPEG
#                                        # pipeline instances (JPEG_INSTANCES, "4 6")
#   bash perf/gpu_session.sh jpeg_best   # `jpeg` with the fastest count `jpeg_instances` found
#   bash perf/gpu_session.sh jpeg_ab     # detect at VARIANT_CAMERAS from this checkout and AB_BEFORE's
#   bash perf/gpu_session.sh video_ab    # detect_video from this checkout and from AB_BEFORE's
#   bash perf/gpu_session.sh keyframes   # detect_video at VIDEO_CAMERAS per count of video
#                                        # pipeline instances (KEYFRAME_INSTANCES, "5 6"): the
#                                        # peak, then 70 % of it with the cameras' keyframes
#                                        # spread and in step, on one server each
#   bash perf/gpu_session.sh remaining   # what #21 still lacks, most wanted first, while
#                                        # REMAINING_LIMIT (540) s last: `keyframes`, the
#                                        # accuracy tests, the other GPU tests (REMAINING: the
#                                        # phases, in order); pack
#   bash perf/gpu_session.sh all         # everything above, in this order, then pack
#   bash perf/gpu_session.sh pack        # everything under $OUT as one results.tgz: the device
#                                        # tool returns at most 8 files per call (end each call with it)
#
# Each phase writes its own files, so a phase that fails does not cost the others' results.
set -uo pipefail
export OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DATA=/tmp/pd
# Client processes: 8 left the server idle at 256 cameras in session 7 (16: +14%).
PROCESSES=${PROCESSES:-16}
BENCH=(python -m camdet.perf.bench --server-mode portable --input-data "$DATA/detect.json"
       --processes "$PROCESSES" --runner torch --bare-preprocess dali --bare-dali-device 0 --bare-batch 64
       --ratio-cameras 256 --repeats 1 --duration 8 --warmup 3 --no-plot)

VIDEO=(python -m camdet.perf.bench --server-mode portable --modes video --video-size 1920x1080
       --processes "$PROCESSES" --runner torch --repeats 1 --duration 8 --warmup 3 --no-plot)

# What holds the card before a video run (session 10: NVDEC's decoders could not be created
# beside servers a timed-out pytest had left).
gpu_before() {
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv \
    > "$OUT/video-gpu-before.txt" 2>&1
}

# The error lines of the video run's server log (pack leaves server/ behind).
video_errors() {
  grep -h "^E[0-9]" "$OUT"/video/server/*.log 2>/dev/null | head -c 20000 > "$OUT/video-errors.txt"
}

input_data() {
  [ -f "$DATA/detect.json" ] || python -m camdet.perf.input_data --frames 64 --sizes 1920x1080 \
    --out "$DATA" > "$OUT/input_data.txt" 2>&1
}

tests() {
  # Named files: the GPU machine lacks some CPU-test dependencies (collection of all fails).
  pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_video_gpu.py \
    tests/test_torch_runner.py tests/test_segment.py tests/test_cuda_schedule.py \
    tests/test_mps.py tests/test_doctor.py > "$OUT/test_gpu.txt" 2>&1
  echo "gpu tests rc=$?" | tee -a "$OUT/summary.txt"
  pytest -q -p no:cacheprovider tests/test_pipeline.py tests/test_video_server.py \
    tests/test_server.py > "$OUT/test_server.txt" 2>&1
  echo "server tests rc=$?" | tee -a "$OUT/summary.txt"
}

# The peak throughput of a bench.json's "ours" (or "video") points without a failed frame,
# frames/s (a point with cameras the card refused is not a peak: session 12, NVDEC).
peak() { python - "$1" "$2" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
print(int(max(r["throughput_fps"] for r in results if r["mode"] == sys.argv[2] and not r["failed"])))
EOF
}

# The camera count of that point.
peak_cameras() { python - "$1" "$2" <<'EOF2'
import json, sys
results = [r for r in json.load(open(sys.argv[1]))["results"]
           if r["mode"] == sys.argv[2] and not r["failed"]]
print(max(results, key=lambda r: r["throughput_fps"])["cameras"])
EOF2
}

# The bench's --rate for 70 % of a peak of FPS frames/s from CAMERAS cameras: each camera
# at 0.7 * FPS / CAMERAS frames/s (CAMERASxRATE).
rate_70() { echo "$2x$(python -c "print(round(0.7 * $1 / $2, 2))")"; }

jpeg() {
  input_data
  # The arrangements side by side: `variants`.
  "${BENCH[@]}" --cameras "${JPEG_CAMERAS:-128,256}" --modes ours,naive,bare \
    --out "$OUT/jpeg-pipelines" > "$OUT/jpeg-pipelines.txt" 2>&1
  local fps cameras
  fps=$(peak "$OUT/jpeg-pipelines/bench.json" ours) || return
  cameras=$(peak_cameras "$OUT/jpeg-pipelines/bench.json" ours)
  "${BENCH[@]}" --modes ours --cameras "$cameras" --ratio-cameras "$cameras" \
    --rate "$(rate_70 "$fps" "$cameras")" \
    --out "$OUT/jpeg-70" > "$OUT/jpeg-70.txt" 2>&1
  echo "jpeg done, peak $fps" | tee -a "$OUT/summary.txt"
}

video() {
  gpu_before
  "${VIDEO[@]}" --cameras "${VIDEO_CAMERAS:-128,256}" --out "$OUT/video" > "$OUT/video.txt" 2>&1
  video_errors
  local fps cameras
  fps=$(peak "$OUT/video/bench.json" video) || return
  # 70% of the peak from the peak's cameras (fewer cameras cannot reach it: each camera
  # has one frame in flight, session 9: 64 cameras topped out at 822 frames/s).
  cameras=$(peak_cameras "$OUT/video/bench.json" video)
  "${VIDEO[@]}" --cameras "$cameras" \
    --rate "$(rate_70 "$fps" "$cameras")" \
    --out "$OUT/video-70" > "$OUT/video-70.txt" 2>&1
  # The three steps for comparison: their one preprocess_video instance opens 64 decoders at
  # most (max_cameras), so 64 cameras (session 12: 128 were refused, "65 open decoders").
  [ "${VIDEO_STEPS:-1}" = 1 ] && CAMDET_PIPELINES=0 "${VIDEO[@]}" --cameras 64 \
    --out "$OUT/video-steps" > "$OUT/video-steps.txt" 2>&1
  echo "video done, peak $fps" | tee -a "$OUT/summary.txt"
}

# `camdet serve --portable` in the background on ports 8100-8102, its log in $OUT/$1; waits
# until it is ready and sets $server to its PID.
serve_portable() {
  python -m camdet.cli.main serve --portable --grpc-port 8101 --http-port 8100 --metrics-port 8102 \
    > "$OUT/$1" 2>&1 &
  server=$!
  for _ in $(seq 120); do
    curl -sf localhost:8100/v2/health/ready >/dev/null && break
    sleep 1
  done
}

pa() {
  input_data
  local server
  serve_portable pa-server.txt
  python -m camdet.cli.main perf-analyzer sweep "$DATA" "$OUT/perf_analyzer" --url localhost:8101 \
    --metrics-url localhost:8102/metrics --models detect --concurrency 16,64,256 --shm none,cuda \
    --interval-ms 3000 --max-trials 6 --point-timeout-s 45 \
    > "$OUT/pa.txt" 2>&1
  echo "perf_analyzer rc=$?" | tee -a "$OUT/summary.txt"
  kill "$server"; wait "$server"
}

speed() {
  python -m camdet.detector.export camdet/detector/weights/demo.pt --out /tmp/m640.onnx \
    > "$OUT/speed.txt" 2>&1
  python -m camdet.detector.export camdet/detector/weights/demo.pt --out /tmp/m384.onnx \
    --input-size 640x384 >> "$OUT/speed.txt" 2>&1
  python -m camdet.detector.precision_eval speed /tmp/m640.onnx /tmp/m384.onnx --runner torch \
    --batch 64 --rounds 20 --out "$OUT/speed.json" >> "$OUT/speed.txt" 2>&1
  echo "speed rc=$?" | tee -a "$OUT/summary.txt"
}

profile() {
  input_data
  # CAMDET_PROBE_JPEG: each pipeline stub logs the doctor's hardware-decoder probe.
  CAMDET_PROBE_JPEG=1 CAMDET_PIPELINES=1 "${BENCH[@]}" --cameras 256 --modes ours \
    --duration 20 --out "$OUT/profile" > "$OUT/profile.txt" 2>&1 &
  local bench=$! port
  port=$(metrics_port detect_pipeline)
  sleep 15  # well inside the measured window
  curl -s "localhost:$port/metrics" | grep -E "^camdet_step_(seconds|batches)_total" \
    > "$OUT/profile-metrics.txt"
  top -b -n 1 -w 200 | head -40 > "$OUT/profile-top.txt"
  wait "$bench"
  grep -h "JPEG probe in this stub" "$OUT"/profile/server/*.log > "$OUT/profile-jpeg-probe.txt"
  echo "profile done" | tee -a "$OUT/summary.txt"
}

# The pids of MODEL's Python-backend stubs (its path is in each stub's command line).
stubs() {
  local p
  for p in $(pgrep -f triton_python_backend_stub); do
    tr '\0' ' ' < "/proc/$p/cmdline" | grep -q "/$1/1/" && echo "$p"
  done
}

# Wait until a bench's server reports MODEL's phase counters; print its metrics port.
metrics_port() {
  local port=""
  for _ in $(seq 150); do
    port=$(pgrep -af tritonserver | grep -o "metrics-port=[0-9]*" | head -1 | cut -d= -f2)
    [ -n "$port" ] && curl -sf "localhost:$port/metrics" \
      | grep -q "camdet_step_seconds_total{model=\"$1\"" && break
    sleep 1
  done
  echo "$port"
}

# Under a running bench: MODEL's phase counters over a 5 s window (two snapshots), its
# stubs' threads (top -H), and py-spy of one stub: native stacks, where the active
# threads are and which thread holds the GIL. Files NAME-*.txt.
look_inside() {
  local name=$1 model=$2 port=$3 pids first spy=${PY_SPY:-/tmp/site/bin/py-spy}
  # Triton's per-model counters too: where requests wait (queue) and for how long.
  local counters="^camdet_step_|^nv_inference_(count|exec_count|queue_duration_us|request_duration_us)"
  curl -s "localhost:$port/metrics" | grep -E "$counters" > "$OUT/$name-m0.txt"
  sleep 5
  curl -s "localhost:$port/metrics" | grep -E "$counters" > "$OUT/$name-m1.txt"
  pids=$(stubs "$model" | tr '\n' ',' | sed 's/,$//')
  first=${pids%%,*}
  top -H -b -n 2 -d 2 -w 250 -p "$pids,$(pgrep -x tritonserver | head -1)" \
    | tail -n +2 | awk '/^top -/{n++} n==1' | head -70 > "$OUT/$name-threads.txt"
  top -b -n 1 -w 200 | head -30 > "$OUT/$name-top.txt"
  "$spy" dump --native --pid "$first" > "$OUT/$name-dump.txt" 2>&1
  "$spy" record --native -d 5 -r 100 -f raw -o "$OUT/$name-spy-active.txt" --pid "$first" \
    > /dev/null 2>&1
  "$spy" record --native --gil -d 4 -r 100 -f raw -o "$OUT/$name-spy-gil.txt" --pid "$first" \
    > /dev/null 2>&1
}

# Why the served decode is slower than the bare loop's (sessions 4-7): the decoder alone in
# plain processes (CUDA's default wait and blocking-sync), then inside the pipelines under
# 256 JPEG cameras (DIAG_INSTANCES, default 3) and 128 H.264 cameras (DIAG_VIDEO=0: not;
# DIAG_PLAIN=0: without the plain-process decodes).
diagnose() {
  input_data
  [ "${DIAG_PLAIN:-1}" = 1 ] && python -m camdet.perf.decode_probe --batches 32 --threads 4 \
    --processes 1,3 --schedules auto,blocking-sync > "$OUT/decode-plain.txt" 2>&1
  local bench port n
  for n in ${DIAG_INSTANCES:-3}; do
    CAMDET_PIPELINE_INSTANCES=$n CAMDET_PROBE_JPEG=1 "${BENCH[@]}" --cameras 256 --modes ours \
      --duration 40 --out "$OUT/diag-x$n" > "$OUT/diag-x$n.txt" 2>&1 &
    bench=$!
    port=$(metrics_port detect_pipeline)
    sleep 10  # past the warm-up, inside the measured window
    look_inside "diag-x$n" detect_pipeline "$port"
    # The same decode in a plain process beside the loaded server: the stub, or the load?
    [ "${DIAG_PLAIN:-1}" = 1 ] && python -m camdet.perf.decode_probe --batches 32 --threads 4 \
      --processes 1 > "$OUT/diag-x$n-decode-beside.txt" 2>&1
    wait "$bench"
    grep -h "JPEG probe in this stub" "$OUT/diag-x$n"/server/*.log > "$OUT/diag-x$n-probe.txt"
    echo "diagnose x$n: $(peak "$OUT/diag-x$n/bench.json" ours) frames/s" | tee -a "$OUT/summary.txt"
  done
  [ "${DIAG_VIDEO:-1}" = 1 ] || return 0
  python -m camdet.perf.bench --server-mode portable --modes video --video-size 1920x1080 \
    --processes "$PROCESSES" --runner torch --repeats 1 --duration 25 --warmup 3 --no-plot \
    --cameras 128 --out "$OUT/diag-video" > "$OUT/diag-video.txt" 2>&1 &
  bench=$!
  port=$(metrics_port detect_video_pipeline)
  sleep 10
  look_inside diag-video detect_video_pipeline "$port"
  wait "$bench"
  echo "diagnose video: $(peak "$OUT/diag-video/bench.json" video) frames/s" | tee -a "$OUT/summary.txt"
}

# detect at 256 cameras per CUDA schedule of the pipelines (CAMDET_CUDA_SCHEDULE); the
# fastest one's variable goes to $OUT/best-schedule.txt (for `env $(cat ...) bash $0 jpeg`).
schedules() {
  input_data
  local s points=()
  for s in ${SCHEDULES:-auto yield blocking-sync}; do
    points+=("schedule-$s:CAMDET_CUDA_SCHEDULE=$s")
  done
  best_of best-schedule.txt "${points[@]}"
}

# detect at 256 cameras per use of the server's cores (session 9: 6.4 CPU ms per frame,
# ~12 of 16 cores): how the pipelines wait for the GPU, and `validate` as its own step
# (4 processes, each frame copied in and out) or inside the pipelines. The fastest point's
# variables go to $OUT/best-cpu.txt (for `env $(cat ...) bash $0 jpeg`).
cpu() {
  input_data
  local V0=CAMDET_PIPELINE_VALIDATE=0 V1=CAMDET_PIPELINE_VALIDATE=1
  best_of best-cpu.txt "cpu-auto:$V0 CAMDET_CUDA_SCHEDULE=auto" "cpu-yield:$V0 CAMDET_CUDA_SCHEDULE=yield" \
    "cpu-blocking:$V0 CAMDET_CUDA_SCHEDULE=blocking-sync" "cpu-validate-in:$V1 CAMDET_CUDA_SCHEDULE=auto" \
    "cpu-validate-in-blocking:$V1 CAMDET_CUDA_SCHEDULE=blocking-sync"
}

# detect at VARIANT_CAMERAS per way the JPEG pipelines' DALI spends CPU (session 13: ~7.5 server
# CPU ms per frame against the bare loop's 1.0; session 8: the DALI decoder threads ~5 cores):
# the defaults, 2 and 1 DALI threads per pipeline, nvJPEG on CUDA cores instead of the
# hardware decoder, DALI's classic executor; each with the server's CPU by thread. The fastest
# point's variables go to $OUT/best-dali.txt.
dali_cpu() {
  input_data
  best_of best-dali.txt dali-defaults:CAMDET_DALI_THREADS= dali-threads-2:CAMDET_DALI_THREADS=2 \
    dali-threads-1:CAMDET_DALI_THREADS=1 dali-cuda-decode:CAMDET_HW_DECODER_LOAD=0 \
    dali-classic:CAMDET_DALI_EXEC_DYNAMIC=0
}

# Where the served JPEG pipeline's CPU goes, against the bare loop's (session 14: the pipelines'
# DALI decoder threads ~3 CPU ms per frame, the bare loop 1.0 in all): the bare loop with its
# threads' CPU over 5 s of its window (bare-threads.txt), then detect at VARIANT_CAMERAS with the
# defaults, with 2 pipeline instances (larger batches) and without the MPS daemon, each with
# the server's CPU by thread (THREAD_POINTS: NAME:ENV words, those three by default).
cpu_threads() {
  input_data
  "${BENCH[@]}" --modes bare --cameras 1 --duration 20 --out "$OUT/bare" > "$OUT/bare.txt" 2>&1 &
  local bench=$!
  # The loop runs once the GPU has been busy for 3 s in a row (the bench prints nothing
  # until it ends: session 14's first try sampled a process that had exited).
  wait_busy utilization.gpu 3 120
  sleep 3  # past the warm-up run and the 3 s warm-up, inside the 20 s window
  python -m camdet.perf.thread_cpu --pid "$bench" --seconds 5 --out "$OUT/bare-threads.json" \
    > "$OUT/bare-threads.txt" 2>&1
  wait "$bench"
  echo "bare: $(peak "$OUT/bare/bench.json" bare) frames/s" | tee -a "$OUT/summary.txt"
  local point
  for point in ${THREAD_POINTS:-threads-defaults:CAMDET_DALI_THREADS= \
    threads-x2:CAMDET_PIPELINE_INSTANCES=2 threads-nomps:CAMDET_MPS=0}; do
    # shellcheck disable=SC2086  # the point's variables, one word each
    timeout "${POINT_TIMEOUT:-100}" bash "$0" variant "${point%%:*}" ${point#*:}
    stop_all
  done
}

# Which code the served JPEG pipeline's busiest threads run (session 14: the DALI decoder
# threads, ~4 of the server's 6.6 CPU ms per frame, rarely sleeping): detect at VARIANT_CAMERAS
# for NATIVE_SECONDS, the server's CPU by thread over 5 s of it, then 20 pystack samples of one
# detect_pipeline stub (native-stacks.txt; pystack from pystack_program), and two whole
# pystack outputs of it (native-raw-N.txt: the frames below the counted ones).
# NATIVE_SECONDS (60): long enough for the samples, at seconds each for ~300 threads.
native() {
  input_data
  local pystack bench port stub i
  pystack=$(pystack_program) || return 1
  "${BENCH[@]}" --cameras "${VARIANT_CAMERAS:-256}" --modes ours --duration "${NATIVE_SECONDS:-60}" \
    --out "$OUT/native" > "$OUT/native.txt" 2>&1 &
  bench=$!
  port=$(metrics_port detect_pipeline)
  if [ -n "$port" ]; then
    server_threads native
    stub=$(stubs detect_pipeline | head -1)
    python -m camdet.perf.native_stacks --pid "$stub" --pystack "$pystack" --samples 20 \
      --interval 0.2 --top 8 --out "$OUT/native-stacks.json" > "$OUT/native-stacks.txt" 2>&1
    for i in 1 2; do
      "$pystack" remote --native-all --no-color "$stub" > "$OUT/native-raw-$i.txt" 2>&1
    done
    # Which cores each thread may run on (DALI's mixed decoder pins its pool: `affine`).
    for i in /proc/"$stub"/task/*; do
      echo "$(cat "$i/comm") $(grep Cpus_allowed_list "$i/status")"
    done | sed 's/[0-9]\+\]/#]/' | sort | uniq -c > "$OUT/native-affinity.txt"
    nproc >> "$OUT/native-affinity.txt"
  fi
  wait "$bench"
  echo "native: $(peak "$OUT/native/bench.json" ours) frames/s" | tee -a "$OUT/summary.txt"
}

# pystack's path: PYSTACK if set, else a launcher of pystack installed from PYSTACK_WHEEL (default:
# the carried .gpu/extra/pystack-*.whl, cp312) into its own folder. `pip --target /tmp/site`
# does not do: pip leaves an existing bin/ folder alone, so the program never lands (session 15).
pystack_program() {
  if [ -n "${PYSTACK:-}" ]; then echo "$PYSTACK"; return; fi
  local wheel=${PYSTACK_WHEEL:-$(ls .gpu/extra/pystack-*.whl 2>/dev/null | head -1)} dir=/tmp/pystack
  if [ ! -x "$dir/pystack" ]; then
    [ -n "$wheel" ] || { echo "no pystack: set PYSTACK or PYSTACK_WHEEL" >&2; return 1; }
    python -m pip install -q --no-deps --no-index --target "$dir/lib" "$wheel" >&2 || return 1
    printf '#!/bin/sh\nPYTHONPATH=%s/lib exec %s -m pystack "$@"\n' "$dir" "$(command -v python)" \
      > "$dir/pystack"
    chmod +x "$dir/pystack"
  fi
  echo "$dir/pystack"
}

# Between phases or points: whatever a bench, a server or the MPS daemon left running.
stop_all() {
  # The MPS server too: a killed control daemon can leave it holding the card, and the
  # next daemon's clients then wait for ever (session 20: test_mps hung after a bench).
  pkill -f camdet.perf.bench; pkill -x tritonserver; pkill -f nvidia-cuda-mps-control
  pkill -f nvidia-cuda-mps-server; sleep 1
}

# One `variant` per NAME:ENV... argument, each in POINT_TIMEOUT (100) s at most and its server and MPS
# daemon stopped after it (a point that hangs costs only its own); the fastest point's
# variables go to $OUT/FILE.
best_of() {
  local file=$1 best="" best_fps=0 fps point name
  shift
  for point in "$@"; do
    name=${point%%:*}
    # shellcheck disable=SC2086  # the point's variables, one word each
    timeout "${POINT_TIMEOUT:-100}" bash "$0" variant "$name" ${point#*:}
    stop_all
    fps=$(peak "$OUT/var-$name/bench.json" ours) || continue
    [ "$fps" -gt "$best_fps" ] && best=${point#*:} best_fps=$fps
  done
  echo "$best" > "$OUT/$file"
  echo "best: $best ($best_fps frames/s)" | tee -a "$OUT/summary.txt"
}

# Under a bench whose MODEL counters just appeared: the server's CPU by thread over 5 s of its
# window (NAME-threads.txt/.json). The counters appear with the warm-up run (8 s), then 3 s
# of warm-up: 12 s in, the window is running. The MPS daemon's server runs the GPU work.
server_threads() {
  sleep 12
  python -m camdet.perf.thread_cpu --name tritonserver --name nvidia-cuda-mps --seconds 5 \
    --out "$OUT/$1-threads.json" > "$OUT/$1-threads.txt" 2>&1
}

# One bench point per arrangement (NAME ENV...): detect at 256 cameras, ours only, and the
# server's CPU by thread over 5 s of the measured window (var-NAME-threads.txt/.json).
variant() {
  local name=$1 bench port; shift
  env "$@" "${BENCH[@]}" --cameras "${VARIANT_CAMERAS:-256}" --modes ours --out "$OUT/var-$name" \
    > "$OUT/var-$name.txt" 2>&1 &
  bench=$!
  port=$(metrics_port detect_pipeline)
  [ -n "$port" ] && server_threads "var-$name"
  wait "$bench"
  echo "$name: $(peak "$OUT/var-$name/bench.json" ours) frames/s ($*)" | tee -a "$OUT/summary.txt"
}

# detect at 256 cameras without and with the private MPS daemon, then more pipeline
# instances under it (contexts no longer take turns); the fastest point's variables go to
# $OUT/best-env.txt (for `env $(cat best-env.txt) bash perf/gpu_session.sh jpeg`).
mps() {
  input_data
  { command -v nvidia-cuda-mps-control || ls /usr/local/nvidia/bin; nvidia-smi -q | grep -i -A1 "compute mode"; } \
    > "$OUT/mps-binary.txt" 2>&1
  best_of best-env.txt mps-off:CAMDET_MPS=0 mps-on:CAMDET_MPS=1 \
    "mps-on-x4:CAMDET_MPS=1 CAMDET_PIPELINE_INSTANCES=4" \
    "mps-on-x6:CAMDET_MPS=1 CAMDET_PIPELINE_INSTANCES=6"
}

variants() {
  input_data
  variant overlap-x1 CAMDET_PIPELINE_INSTANCES=1
  variant overlap-x2 CAMDET_PIPELINE_INSTANCES=2
  variant overlap-x3 CAMDET_PIPELINE_INSTANCES=3
  variant serial-x3 CAMDET_PIPELINE_OVERLAP=0 CAMDET_PIPELINE_INSTANCES=3
  variant overlap-x2-validate8 CAMDET_PIPELINE_INSTANCES=2 CAMDET_CORES_PER_CPU_STEP=2
}

dali() {
  # The backend built on the CPU machine (camdet backends build dali), carried as .gpu/dali;
  # its RUNPATH names that machine's paths, so DALI's libraries come from LD_LIBRARY_PATH.
  mkdir -p /tmp/backends/dali && cp .gpu/dali/* /tmp/backends/dali/
  export CAMDET_BACKENDS_DIR=/tmp/backends
  export LD_LIBRARY_PATH=/tmp/site/nvidia/dali:$TRITONSERVER_LIBS:$LD_LIBRARY_PATH
  python -m camdet.cli.main doctor --json > "$OUT/dali-doctor.json" 2>&1
  pytest -q -p no:cacheprovider tests/test_dali_backend.py > "$OUT/test_dali_backend.txt" 2>&1
  echo "dali backend tests rc=$?" | tee -a "$OUT/summary.txt"
  input_data
  CAMDET_PIPELINES=0 "${BENCH[@]}" --cameras 256 --modes ours \
    --out "$OUT/dali-backend" > "$OUT/dali-backend.txt" 2>&1
  echo "three steps, DALI backend: $(peak "$OUT/dali-backend/bench.json" ours)" | tee -a "$OUT/summary.txt"
  [ "${DALI_STAND_IN:-1}" = 1 ] || return 0
  CAMDET_PIPELINES=0 CAMDET_DALI_BACKEND=0 "${BENCH[@]}" --cameras 256 --modes ours \
    --out "$OUT/dali-stand-in" > "$OUT/dali-stand-in.txt" 2>&1
  echo "three steps, stand-in: $(peak "$OUT/dali-stand-in/bench.json" ours)" | tee -a "$OUT/summary.txt"
}

short() {
  local t0 left
  t0=$(date +%s)
  gpu_before
  timeout 130 "${VIDEO[@]}" --cameras "${VIDEO_CAMERAS:-256}" --out "$OUT/video" \
    > "$OUT/video.txt" 2>&1
  echo "video rc=$? at $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  video_errors
  left=$(( ${SHORT_LIMIT:-270} - ($(date +%s) - t0) ))
  [ "$left" -gt 30 ] || return 0
  ACCURACY_LIMIT=$left accuracy
}

nvdec() {
  local mps
  for mps in "" --mps; do
    timeout 100 python -m camdet.perf.nvdec_limit --processes 1,4 --most 512 --timeout-s 40 $mps \
      --out "$OUT/nvdec-limit$mps.json" > "$OUT/nvdec-limit$mps.txt" 2>&1
    echo "nvdec limit $mps: $(grep -h '^{' "$OUT/nvdec-limit$mps.txt" | cut -c1-200 | tr '\n' ' ')" \
      | tee -a "$OUT/summary.txt"
  done
}

# Wait until nvidia-smi's METRIC (utilization.gpu, utilization.decoder) has been above 0 for
# SECONDS in a row, TRIES seconds at most.
wait_busy() {
  local metric=$1 seconds=$2 tries=$3 busy=0
  for _ in $(seq "$tries"); do
    if [ "$(nvidia-smi --query-gpu="$metric" --format=csv,noheader,nounits | head -1)" -gt 0 ]; then
      busy=$((busy + 1)); [ "$busy" -ge "$seconds" ] && return 0
    else
      busy=0
    fi
    sleep 1
  done
}

# Which part of an idle GPU server holds the card's decoder sessions (session 13: 93 of 288;
# session 14: not its JPEG pipelines): the count beside an idle server per arrangement,
# each server stopped before the next (PARTS: NAME:ENV words; by default without the MPS
# daemon, the three-step arrangement, and one pipeline instance instead of 4).
decoders_parts() {
  local part server
  for part in ${PARTS:-no-mps:CAMDET_MPS=0 three-steps:CAMDET_PIPELINES=0 \
    one-instance:CAMDET_PIPELINE_INSTANCES=1}; do
    (
      # shellcheck disable=SC2086  # the part's variables, one word each
      export ${part#*:}
      serve_portable "decoders-${part%%:*}-server.txt"
      count_decoders "decoders-${part%%:*}" "decoders beside an idle server, ${part%%:*} (${part#*:})"
      kill "$server"; wait "$server"
    )
    stop_all; sleep 1
  done
}

# One process's count of the NVDEC decoders the card still opens (nvdec_limit, 100 s at most):
# NAME.json/.txt under $OUT, LABEL and the count in the summary; further arguments go to it.
count_decoders() {
  local name=$1 label=$2
  shift 2
  timeout 100 python -m camdet.perf.nvdec_limit --processes 1 --most 512 --timeout-s 60 "$@" \
    --out "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
  echo "$label: $(grep -h '^{' "$OUT/$name.txt" | cut -c1-120)" | tee -a "$OUT/summary.txt"
}

# How many NVDEC decoders the card still opens beside the served pipelines: beside an idle
# server, then while DECODER_CAMERAS (128) H.264 cameras stream to a bench's server (session
# 12: a card opens ~288 alone, but the server refused 256 cameras).
decoders() {
  local server bench cameras=${DECODER_CAMERAS:-128}
  serve_portable decoders-server.txt
  count_decoders decoders-idle "decoders beside an idle server"
  kill "$server"; wait "$server"
  "${VIDEO[@]}" --cameras "$cameras" --no-warmup-run --warmup 20 --duration 30 \
    --out "$OUT/decoders-video" > "$OUT/decoders-video.txt" 2>&1 &
  bench=$!
  # The cameras hold their decoders once NVDEC has been busy for 5 s in a row.
  wait_busy utilization.decoder 5 150
  count_decoders decoders-busy "decoders beside $cameras cameras"
  wait "$bench"
}

# Do the JPEG pipelines' hardware decoders take NVDEC sessions from the card's count (session
# 13: an idle server held 93 of 288)? nvdec_limit beside 2 held production JPEG pipelines at
# batch 64, the same off the hardware decoder, 1 at batch 16, and none.
jpeg_decoders() {
  local spec name held batch hw
  for spec in jpeg64:2:64:1 jpeg64-nohw:2:64:0 jpeg16:1:16:1 base:0:64:1; do
    IFS=: read -r name held batch hw <<< "$spec"
    CAMDET_HW_DECODER_LOAD=$hw count_decoders "nvdec-$name" \
      "nvdec beside $held JPEG pipelines (batch $batch, hardware share $hw)" \
      --jpeg-pipelines "$held" --jpeg-batch "$batch"
  done
}

# detect_video at VIDEO_CAMERAS (192) per arrangement (VIDEO_POINTS: NAME:ENV... points
# separated by ";"; by default the defaults, and the 4 decode threads of before session 16),
# each point only while VIDEO_LIMIT (330) s from the start leave
# room for it and the 70 % point, each with the server's CPU by thread; then ~70 % of the
# fastest point's peak at its cameras, with its variables (VIDEO_EACH_70=1: ~70 % of each
# point's own peak, right after it).
video_variants() {
  local start=$SECONDS cameras=${VIDEO_CAMERAS:-192} point name fps best=0 best_env="" found=""
  local points
  IFS=';' read -ra points <<< "${VIDEO_POINTS:-defaults:;before:CAMDET_VIDEO_DECODE_THREADS=4}"
  gpu_before
  for point in "${points[@]}"; do
    [ $((${VIDEO_LIMIT:-330} - (SECONDS - start))) -gt 160 ] || break
    name=${point%%:*}
    # shellcheck disable=SC2086  # the point's variables, one word each
    env ${point#*:} timeout 150 bash "$0" video_point "video-$name" "$cameras"
    stop_all
    fps=$(peak "$OUT/video-$name/bench.json" video) || continue
    [ "${VIDEO_EACH_70:-0}" = 1 ] && video_70 "$name" "$fps" "$cameras" ${point#*:}
    [ "$fps" -gt "$best" ] && best=$fps best_env=${point#*:} found=$name
  done
  [ -n "$found" ] || return 0
  echo "video: fastest $found ($best_env), $best frames/s" | tee -a "$OUT/summary.txt"
  # shellcheck disable=SC2086
  [ "${VIDEO_EACH_70:-0}" = 1 ] || video_70 "$found" "$best" "$cameras" $best_env
}

# detect_video at ~70 % of a point's peak (NAME FPS CAMERAS ENV...), video-NAME-70.
video_70() {
  local name=$1 fps=$2 cameras=$3
  shift 3
  # 180 s: its closed-loop point and its rate point, each after a server start (session 21:
  # 120 s cut the run of 6 video instances at 160 cameras).
  env "$@" timeout 180 "${VIDEO[@]}" --cameras "$cameras" --rate "$(rate_70 "$fps" "$cameras")" \
    --out "$OUT/video-$name-70" > "$OUT/video-$name-70.txt" 2>&1
  stop_all
}

# video_variants over counts of video pipeline instances (VIDEO_INSTANCES, "6 4": the H100's
# default since session 21 and the one before; session 16 found 8 refused by NVDEC at 192
# cameras), each with a run at ~70 % of its own peak (VIDEO_EACH_70, default 1).
video_instances() {
  local n points=""
  for n in ${VIDEO_INSTANCES:-6 4}; do points+="x$n:CAMDET_VIDEO_PIPELINE_INSTANCES=$n;"; done
  VIDEO_EACH_70=${VIDEO_EACH_70:-1} VIDEO_POINTS=${points%;} video_variants
}

# detect_video at VIDEO_CAMERAS (192) per count of video pipeline instances
# (KEYFRAME_INSTANCES, "5 6": the H100's default since session 22 and the one before), each
# on one `camdet serve` (ports 8100-8102), ~175 s per count on an H100: the closed-loop
# peak, then ~70 % of it with the cameras' keyframes spread over the GOP (the bench's default
# since session 22, as independent cameras' are) and in step (every camera's keyframe in
# one frame slot, as sessions 16-21 measured): video-kfN, video-kfN-70, video-kfN-70-step.
keyframes() {
  local n
  gpu_before
  for n in ${KEYFRAME_INSTANCES:-5 6}; do
    CAMDET_VIDEO_PIPELINE_INSTANCES=$n timeout "${KEYFRAME_TIMEOUT:-200}" bash "$0" \
      keyframe_point "kf$n"
    stop_all
  done
}

# keyframes' three runs (NAME) on one server: its start and the peak's warm-up run once.
keyframe_point() {
  local name=video-$1 cameras=${VIDEO_CAMERAS:-192} server fps rate
  serve_portable "$name-server.txt"
  "${VIDEO[@]}" --url localhost:8101 --cameras "$cameras" --out "$OUT/$name" \
    > "$OUT/$name.txt" 2>&1
  if fps=$(peak "$OUT/$name/bench.json" video); then
    rate=$(rate_70 "$fps" "$cameras")
    "${VIDEO[@]}" --url localhost:8101 --no-warmup-run --cameras "" --rate "$rate" \
      --out "$OUT/$name-70" > "$OUT/$name-70.txt" 2>&1
    "${VIDEO[@]}" --url localhost:8101 --no-warmup-run --cameras "" --rate "$rate" \
      --keyframes-in-step --out "$OUT/$name-70-step" > "$OUT/$name-70-step.txt" 2>&1
    echo "$name: peak $fps frames/s at $cameras cameras; at $rate p50/p99 ms: spread" \
      "$(tail_of "$OUT/$name-70/bench.json"), in step $(tail_of "$OUT/$name-70-step/bench.json")" \
      | tee -a "$OUT/summary.txt"
  fi
  kill "$server"; wait "$server"
}

# The p50/p99 ms of a bench.json's fixed-rate video point, and its failed frames.
tail_of() { python - "$1" <<'EOF3'
import json, sys
point = next(r for r in json.load(open(sys.argv[1]))["results"] if r["fps"])
print(f"{point['latency']['p50_ms']:.1f}/{point['latency']['p99_ms']:.1f} ({point['failed']} failed)")
EOF3
}

# One detect_video point (NAME CAMERAS) and the server's CPU by thread over 5 s of its window.
video_point() {
  local name=$1 cameras=$2 bench port
  "${VIDEO[@]}" --cameras "$cameras" --out "$OUT/$name" > "$OUT/$name.txt" 2>&1 &
  bench=$!
  port=$(metrics_port detect_video_pipeline)
  [ -n "$port" ] && server_threads "$name" && stack_dumps "$name" detect_video_pipeline
  wait "$bench"
  echo "$name: $(peak "$OUT/$name/bench.json" video) frames/s at $cameras cameras" \
    | tee -a "$OUT/summary.txt"
}

# Does one process decode several cameras at once (perf/nvdec_parallel.py): a Python loop
# beside a decoding thread, decoders in 1/4/8 threads of one process and in 4/8 processes.
nvdec_parallel() {
  timeout 200 python -m camdet.perf.nvdec_parallel --out "$OUT/nvdec-parallel.json" \
    > "$OUT/nvdec-parallel.txt" 2>&1
  echo "nvdec parallel: $(grep -h '^{' "$OUT/nvdec-parallel.txt" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
}

# Where detect_video_pipeline's Python time goes at VIDEO_CAMERAS (192) in its steady state
# (closed loop, or VIDEO_RATE, the bench's --rate, e.g. 192x6.5 for ~70 % of the peak):
# its phase counters, threads and py-spy (active and GIL-holding stacks) once NVDEC has
# been busy for 8 s in a row, inside a 35 s window (no warm-up run, whose end closes the
# cameras' decoders).
video_profile() {
  local bench port
  gpu_before
  "${VIDEO[@]}" --cameras "${VIDEO_CAMERAS:-192}" --no-warmup-run --warmup 20 --duration 35 \
    ${VIDEO_RATE:+--rate "$VIDEO_RATE"} --out "$OUT/video-prof" > "$OUT/video-prof.txt" 2>&1 &
  bench=$!
  port=$(metrics_port detect_video_pipeline)
  wait_busy utilization.decoder 8 150
  [ -n "$port" ] && look_inside video-prof detect_video_pipeline "$port"
  wait "$bench"
  echo "video profile: $(peak "$OUT/video-prof/bench.json" video) frames/s" | tee -a "$OUT/summary.txt"
}

# Three py-spy dumps (native frames too) of one of MODEL's stubs, a second apart: where its
# decode threads wait (for the GIL, in NVDEC, for the GPU), NAME-dump.txt.
stack_dumps() {
  local name=$1 pid spy=${PY_SPY:-/tmp/site/bin/py-spy}
  pid=$(stubs "$2" | head -1)
  [ -n "$pid" ] || return 0
  for _ in 1 2 3; do
    "$spy" dump --native --pid "$pid" >> "$OUT/$name-dump.txt" 2>&1
    sleep 1
  done
}

# detect at VARIANT_CAMERAS warmed up with a whole batch (the defaults since session 16) and
# with one frame (CAMDET_WARMUP_BATCH=1, before): the hardware JPEG decoder's share of a
# batch is set by the first batch, the rest going to nvJPEG's hybrid decoder on the CPU.
warm_up() {
  input_data
  variant warm64
  stop_all
  variant warm1 CAMDET_WARMUP_BATCH=1
  stop_all
}

# The pipelines' decode stage gathering the batches waiting for it or not
# (CAMDET_PIPELINE_GATHER=0), side by side: detect at VARIANT_CAMERAS (256), then
# detect_video at VIDEO_CAMERAS (192) with a run at ~70 % of each video point's own peak
# (session 20 ran the 70 % run for the gathering point only: p99 89-91 ms).
gather_ab() {
  input_data
  variant gather
  stop_all
  variant nogather CAMDET_PIPELINE_GATHER=0
  stop_all
  # VIDEO_LIMIT (600) s for the whole phase: what the JPEG points left of it.
  VIDEO_EACH_70=1 VIDEO_LIMIT=$((${VIDEO_LIMIT:-600} - SECONDS)) \
    VIDEO_POINTS="gather:;nogather:CAMDET_PIPELINE_GATHER=0" video_variants
}

# The GPU tests that `accuracy` leaves out: the video segments, the CUDA wait flags, the
# private MPS daemon and the doctor (-v: each test's line), REST_LIMIT (150) s.
rest_tests() {
  timeout "${REST_LIMIT:-150}" pytest -v -p no:cacheprovider -m gpu tests/test_segment.py \
    tests/test_cuda_schedule.py tests/test_mps.py tests/test_doctor.py > "$OUT/test_rest.txt" 2>&1
  echo "segment, schedule, MPS and doctor tests rc=$? ($(tail -1 "$OUT/test_rest.txt"))" \
    | tee -a "$OUT/summary.txt"
}

# The GPU accuracy tests (mAP within 0.005 of the CPU, colours) and the pipelines' answers
# against the steps chained, one line per test. test_pipeline's servers take turns: two of
# them beside test_gpu's did not fit the card's 80 GB in session 17.
accuracy() {
  timeout "${ACCURACY_LIMIT:-240}" pytest -v -p no:cacheprovider tests/test_gpu.py \
    tests/test_pipeline.py tests/test_video_gpu.py tests/test_torch_runner.py \
    > "$OUT/test_gpu.txt" 2>&1
  echo "accuracy and pipeline tests rc=$? ($(tail -1 "$OUT/test_gpu.txt"))" | tee -a "$OUT/summary.txt"
}

# detect at VARIANT_CAMERAS (256) per count of JPEG pipeline instances (JPEG_INSTANCES, "4 6"),
# the video pipeline's kept at 4: once the whole-batch warm-up freed DALI's decoder threads
# (session 17), each of 4 instances' Python threads used ~0.8 of a core, near one GIL's
# worth. The fastest count's variables go to best-instances.txt.
jpeg_instances() {
  local n points=()
  input_data
  for n in ${JPEG_INSTANCES:-4 6}; do
    points+=("x$n:CAMDET_PIPELINE_INSTANCES=$n CAMDET_VIDEO_PIPELINE_INSTANCES=4")
  done
  best_of best-instances.txt "${points[@]}"
}

# detect as `jpeg` does it (ours, naive and bare, then 70 % of the peak) with the count of
# JPEG pipeline instances `jpeg_instances` found fastest in this call (best-instances.txt),
# or with the defaults when it did not run.
jpeg_best() {
  local best=""
  [ -f "$OUT/best-instances.txt" ] && best=$(cat "$OUT/best-instances.txt")
  echo "jpeg_best: ${best:-defaults}" | tee -a "$OUT/summary.txt"
  # shellcheck disable=SC2086  # the point's variables, one word each
  env $best bash "$0" jpeg
}

# The checkout a before/after compares with (AB_BEFORE: a folder holding another commit's
# camdet, client and perf, e.g. `git archive COMMIT camdet client perf | tar -x -C DIR`,
# and its model_repository if that changed since; without one it links this checkout's,
# as the device tool carries 64 MiB at most): its PYTHONPATH. Its points run from that
# folder with its own copy of this script (`python -m` puts the working directory first
# on the path).
before_path() {
  [ -d "${AB_BEFORE:-}/camdet" ] || { echo "AB_BEFORE has no camdet/" | tee -a "$OUT/summary.txt"; return 1; }
  [ -e "$AB_BEFORE/model_repository" ] || ln -s "$PWD/model_repository" "$AB_BEFORE/model_repository"
  ln -sfn ../client "$AB_BEFORE/camdet/client"
  ln -sfn ../perf "$AB_BEFORE/camdet/perf"
  echo "PYTHONPATH=/tmp/np1:/tmp/site:$(cd "$AB_BEFORE" && pwd)"
}

# detect at VARIANT_CAMERAS from this checkout and from AB_BEFORE's, one point each
# (var-after, var-before).
jpeg_ab() {
  local path
  path=$(before_path) || return
  input_data
  variant after
  stop_all
  (cd "$AB_BEFORE" && env "$path" bash perf/gpu_session.sh variant before)
  stop_all
}

# detect_video at VIDEO_CAMERAS (192) from this checkout and from AB_BEFORE's, one point
# each (video-after, video-before).
video_ab() {
  local path cameras=${VIDEO_CAMERAS:-192}
  path=$(before_path) || return
  gpu_before
  timeout 150 bash "$0" video_point video-after "$cameras"
  stop_all
  (cd "$AB_BEFORE" && env "$path" timeout 150 bash perf/gpu_session.sh video_point video-before "$cameras")
  stop_all
}

# What #21 still lacks on the card, most wanted first (REMAINING: phase names, by default
# keyframes accuracy rest_tests), each phase started only while the call has room for
# it (REMAINING_LIMIT seconds from the start, 540 by default; the phases' lengths on an H100:
# jpeg at one camera count ~170-210 s, accuracy ~130 s, jpeg_instances ~120 s, warm_up
# ~110 s, video_variants ~270 s, video_instances ~450 s, native ~85 s, decoders_parts
# ~200 s, jpeg_ab ~135 s, video_ab ~170 s, keyframes ~175 s per count) and cut at what is
# left of it, then pack: for a call of whatever length the device tool gives.
remaining() {
  local limit=${REMAINING_LIMIT:-540} start=$SECONDS phase need cap left
  for phase in ${REMAINING:-keyframes accuracy rest_tests}; do
    case $phase in
      accuracy) need=150 cap=260 ;;
      rest_tests) need=60 cap=160 ;;
      gather_ab) need=420 cap=540 ;;
      jpeg_instances) need=130 cap=220 ;;
      video_variants) need=200 cap=330 ;;
      video_instances) need=260 cap=480 ;;
      keyframes) need=200 cap=420 ;;
      jpeg|jpeg_best) need=200 cap=240 ;;
      jpeg_ab) need=120 cap=200 ;;
      video_ab) need=160 cap=320 ;;
      warm_up) need=200 cap=230 ;;
      native) need=120 cap=150 ;;
      decoders_parts) need=220 cap=260 ;;
      nvdec_parallel) need=120 cap=210 ;;
      video_profile) need=120 cap=150 ;;
      *) echo "remaining: no phase $phase" | tee -a "$OUT/summary.txt"; continue ;;
    esac
    left=$((limit - (SECONDS - start)))
    [ "$left" -gt "$need" ] || continue
    [ "$cap" -lt "$left" ] || cap=$((left - 5))
    JPEG_CAMERAS=${JPEG_CAMERAS:-384} VARIANT_CAMERAS=${VARIANT_CAMERAS:-384} \
      NATIVE_SECONDS=${NATIVE_SECONDS:-40} VIDEO_LIMIT=$cap ACCURACY_LIMIT=$((cap - 10)) \
      REST_LIMIT=$((cap - 10)) \
      timeout "$cap" bash "$0" "$phase"
    stop_all
    echo "remaining: $phase done at $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  done
  pack
}

pack() {
  # Reports only (text, JSON, CSV, logs): the servers' repositories and frames stay behind.
  (cd "$OUT" && find . -type f \( -name '*.txt' -o -name '*.json' -o -name '*.csv' \
    -o -name '*.log' \) -size -20M ! -path '*/server/*' ! -path '*/input_data/*' -print0 \
    | tar czf results.tgz --null -T - && find . -mindepth 1 ! -name results.tgz -delete)
}

case "${1:-all}" in
  all) tests; jpeg; video; pa; speed; profile; pack ;;
  *) "$@" ;;
esac
