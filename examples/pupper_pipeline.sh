#!/usr/bin/env bash
# The main job: train a Pupper on the CPU default, export it, look at it in MuJoCo.
# TROT_FULL=1 trains the full CPU preset (about an hour on 2 cores) instead of a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${TROT_OUT:-out}
mkdir -p "$OUT"

trot robots
trot view pupper_v3 -o "$OUT/pupper_v3.png"

if [ "${TROT_FULL:-0}" = 1 ]; then ITERS=(); else ITERS=(--max_iterations "${TROT_ITERATIONS:-60}"); fi
trot train --robot pupper_v3 --task walk --run_name pipeline "${ITERS[@]}" --log_root "$OUT/logs"
RUN=$(ls -d "$OUT"/logs/pupper_v3/walk/*_pipeline | tail -n 1)
trot export "$RUN" -o "$OUT/walk.onnx"
trot inspect "$OUT/walk.onnx"
trot play "$RUN" --seconds 5 --no_video -o "$OUT/play"

# The onboard loop against the emulated robot (PyBullet behind a pty), then its telemetry as plots.
trot bench deploy "$OUT/walk.onnx" --seconds 5 --telemetry "$OUT/deploy.jsonl"
trot log plot "$OUT/deploy.jsonl" -o "$OUT/deploy_plots"
