#!/usr/bin/env bash
# The GPU check of docs/gpu.md in one call on a machine with an NVIDIA GPU: install the carried wheels,
# measure the full task against raw MuJoCo Warp stepping at several batch sizes (same run), train with
# --preset gpu for a fixed wall time, export the bundle. Everything it reports lands in $OUT (at most 8
# files): gpu_check.log, bench.txt, train.log, config.json, the latest checkpoint and gpu_walk.onnx; gate
# the bundle on any CPU machine afterwards (`trot gate gpu_walk.onnx`).
#
# Settings (environment): OUT (default ./gpu_check_out), DEVICE (cuda:0), SIZES ("1024 4096 16384"),
# BENCH_S (seconds per figure, 4), TRAIN_S (wall-clock seconds of training, 150), THREADS (C rollout
# threads, all cores), INSTALL (1: install .whl/ and /tmp/w/ into /tmp/site; 0: use the current Python),
# TRAIN_ARGS (more `trot train` flags, e.g. "--num_envs 32" for a dry run on a CPU with DEVICE=cpu).
# Budget on one GPU: install < 1 min, kernel compile (first run only) + bench about 2-3 min, training
# TRAIN_S, export < 1 min: inside one 8-minute call with the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
DEVICE=${DEVICE:-cuda:0}
SIZES=${SIZES:-1024 4096 16384}
BENCH_S=${BENCH_S:-4}
TRAIN_S=${TRAIN_S:-150}
THREADS=${THREADS:-$(nproc)}
INSTALL=${INSTALL:-1}
PY=${PYTHON:-python3}
LOGS=${LOGS:-/tmp/gpu_check_logs}  # run folders stay outside $OUT: only the files listed above come back
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl} WARP_CACHE_PATH=${WARP_CACHE_PATH:-/tmp/warp-cache}
say() { echo "[gpu_check +${SECONDS}s] $*"; }

if [ "$INSTALL" = 1 ]; then
  say "install: carried wheels into /tmp/site"
  warp=/tmp/w/$(cat .whl/WARP_NAME) || exit 2
  [ -f "$warp" ] || cat /tmp/w/warp.part.* > "$warp" || exit 2
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$warp" .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
$PY -c "import torch, warp, mujoco, mujoco_warp, rsl_rl, trot; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), '| warp', warp.__version__, '| mujoco', mujoco.__version__, '| mujoco_warp',
mujoco_warp.__version__)" || exit 3

say "bench: trot bench sim --sim mjwarp --device $DEVICE --num_envs $SIZES (first backend compiles the kernels)"
timeout 300 $PY -m trot.cli bench sim --sim mjwarp --device "$DEVICE" --num_envs $SIZES --seconds "$BENCH_S" \
  --threads "$THREADS" | tee "$OUT/bench.txt"
say "bench exit ${PIPESTATUS[0]}"

say "train: --preset gpu, stopped after ${TRAIN_S}s of wall time (checkpoints every 20 iterations, atomic)"
rm -rf "$LOGS"
timeout --signal=INT "$TRAIN_S" $PY -m trot.cli train --preset gpu --device "$DEVICE" --max_iterations 5000 \
  --log_root "$LOGS" --run_name gpu_check --set runner.save_interval=20 ${TRAIN_ARGS:-}
say "train exit $? (124 or 130: stopped by the wall-time limit, as planned)"
run=$(ls -d "$LOGS"/pupper_v3/walk/*_gpu_check 2>/dev/null | tail -1)
[ -n "$run" ] || { say "no run folder"; exit 4; }
latest=$($PY -c "import sys; from pathlib import Path; from trot.train.checkpoint import find_checkpoint
print(find_checkpoint(Path(sys.argv[1])))" "$run") || { say "no checkpoint in $run"; exit 4; }
cp "$run/config.json" "$run/train.log" "$latest" "$OUT/"
say "train: $(grep -c 'Learning iteration' "$run/train.log") iterations logged; latest checkpoint $(basename "$latest")"

say "export: $latest -> gpu_walk.onnx"
$PY -m trot.cli export "$latest" -o "$OUT/gpu_walk.onnx" || say "export failed: export the checkpoint on the CPU"
ls -la "$OUT"
say "done"
