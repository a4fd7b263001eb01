#!/usr/bin/env bash
# Prepare, here, what the GPU check carries to a GPU machine that has Python 3.12 and a CUDA torch but no
# network (docs/gpu.md, "The GPU check"): cp312 x86-64 wheels of what that machine lacks, at the versions of
# the active venv (where the tests ran), trot's own wheel, and the Warp wheel (about 150 MB) cut into parts
# small enough for one carry each. Run from an activated venv with the train and gpu extras installed.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the machine lacks (its image has torch, numpy, onnx, onnxruntime, tensorboard, absl-py, etils, attrs,
# pyyaml); mujoco-studio and websockets stay behind: nothing trot runs imports them.
NAMES="mujoco mujoco-core mujoco-warp warp-lang rsl-rl-lib tensordict pyvers cattrs glfw PyOpenGL GitPython gitdb smmap"
PINS=$(python3 -m pip freeze | python3 -c '
import sys
names = {n.lower() for n in sys.argv[1].split()}
pins = [line.strip() for line in sys.stdin if line.split("==")[0].lower() in names]
missing = names - {p.split("==")[0].lower() for p in pins}
if missing:
    sys.exit(f"gpu_wheels.sh: not installed in this venv: {sorted(missing)} (pip install -e \".[train,gpu]\")")
print(" ".join(pins))' "$NAMES")
echo "gpu_wheels.sh: $PINS"
rm -rf .whl .whlparts1 .whlparts2 .whlparts3
mkdir -p .whl .whlparts1 .whlparts2 .whlparts3
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl $PINS
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl .  # trot itself: pure Python
warp=$(basename .whl/warp_lang-*.whl)
echo "$warp" > .whl/WARP_NAME
# Each call carries the working tree (about 5 MB) too, 64 MiB in all: 52 MiB parts leave the third call room
# for the last part and the other wheels.
split -b 52M ".whl/$warp" .whl/warp.part.
rm ".whl/$warp"
parts=(.whl/warp.part.*)
if [ "${#parts[@]}" -ne 3 ]; then echo "gpu_wheels.sh: expected 3 parts of $warp, got ${#parts[@]}" >&2; exit 1; fi
mv "${parts[0]}" .whlparts1/; mv "${parts[1]}" .whlparts2/; mv "${parts[2]}" .whlparts3/
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for call in ".whlparts1" ".whlparts2" ".whlparts3 .whl"; do
  carried=$(du -cb $call | tail -1 | cut -f1)
  echo "gpu_wheels.sh: call carrying $call: $(( (tree + carried) / 1048576 )) MiB with the working tree (limit 64)"
done
cat <<'CALLS'
Then three device calls in a row (each within 30 s of the last, while the machine stays warm):
  1. carry [".whlparts1"]:          mkdir -p /tmp/w && cp .whlparts1/* /tmp/w/ && ls -la /tmp/w
  2. carry [".whlparts2"]:          cp .whlparts2/* /tmp/w/ && ls -la /tmp/w
  3. carry [".whlparts3", ".whl"], timeout_s 480:
                                    cp .whlparts3/* /tmp/w/ && bash scripts/gpu_check.sh
CALLS
