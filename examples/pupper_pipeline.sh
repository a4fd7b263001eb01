#!/usr/bin/env bash
# The main job: train a Pupper on the CPU default, export it, gate it in PyBullet, then run the onboard
# deploy loop against the emulated robot. By default the training is a short run (a few minutes) that
# is not expected to walk yet; TROT_FULL=1 trains the full CPU preset (about an hour on 2 cores).
# When the fresh bundle does not pass the gate, the gate demo and the deploy loop use the shipped
# policy instead (robots/pupper_v3/policies/walk.onnx), and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${TROT_OUT:-out}
SHIPPED=robots/pupper_v3/policies/walk.onnx
mkdir -p "$OUT"

trot robots
trot view pupper_v3 -o "$OUT/pupper_v3.png"

if [ "${TROT_FULL:-0}" = 1 ]; then ITERS=(); else ITERS=(--max_iterations "${TROT_ITERATIONS:-60}"); fi
trot train --robot pupper_v3 --task walk --run_name pipeline "${ITERS[@]}" --log_root "$OUT/logs"
RUN=$(ls -d "$OUT"/logs/pupper_v3/walk/*_pipeline | tail -n 1)
trot export "$RUN" -o "$OUT/walk.onnx"
trot inspect "$OUT/walk.onnx"
trot play "$RUN" --seconds 5 --no_video -o "$OUT/play"

BUNDLE="$OUT/walk.onnx"
GATE_SECONDS=${TROT_GATE_SECONDS:-6}
if trot gate "$BUNDLE" --seconds "$GATE_SECONDS" -o "$OUT/gate"; then
  echo "pipeline: the freshly trained bundle passed the gate"
else
  echo "pipeline: the freshly trained bundle did not pass the gate (expected for a short run);"
  echo "pipeline: gating the shipped policy $SHIPPED instead"
  BUNDLE=$SHIPPED
  if trot gate "$BUNDLE" --seconds "$GATE_SECONDS" -o "$OUT/gate_shipped"; then
    echo "pipeline: the shipped policy passed the gate"
  else
    echo "pipeline: the shipped policy does not pass every gate cell yet (see $OUT/gate_shipped/gate.md);"
    echo "pipeline: the deploy demo below runs it against the emulator only, never on hardware"
  fi
fi

# The onboard loop against the emulated robot (PyBullet behind a pty), then its telemetry as plots.
trot bench deploy "$BUNDLE" --seconds 5 --command 0.2,0,0 --telemetry "$OUT/deploy.jsonl"
trot log plot "$OUT/deploy.jsonl" -o "$OUT/deploy_plots"
echo "pipeline: done; everything is in $OUT/"
