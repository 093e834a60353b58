#!/usr/bin/env bash
# The paper preset on one NVIDIA GPU (V and M train on the GPU with float16 and XLA; rollouts,
# the controller's CMA-ES and the evaluation step CarRacing on the host's CPU cores).
#
#   launch/gpu.sh [WORKDIR] [extra wm.pipeline flags...]
#
# Rerunning the same command resumes: finished stages are skipped, unfinished ones continue from
# their checkpoints. Set SKIP_INSTALL=1 to skip the pip install.
set -euo pipefail

usage="usage: $0 [WORKDIR (default: runs/paper)] [extra wm.pipeline flags, e.g. --set=train_controller.workers=32]"
case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
WORKDIR="runs/paper"
if [[ $# -gt 0 && "$1" != -* ]]; then WORKDIR="$1"; shift; fi
PYTHON="${PYTHON:-python3}"

cd "$(dirname "$0")/.."
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  command -v swig >/dev/null || echo "note: gymnasium[box2d] may build Box2D from source; if pip fails: apt-get install swig build-essential" >&2
  "$PYTHON" -m pip install -e '.[gpu]'
fi
"$PYTHON" -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print('GPUs:', g); assert g, 'no GPU visible to TensorFlow (driver? CUDA_VISIBLE_DEVICES?)'"

echo "+ $PYTHON -m wm.pipeline --preset=paper --workdir=$WORKDIR $*" >&2
exec "$PYTHON" -m wm.pipeline --preset=paper --workdir="$WORKDIR" "$@"
