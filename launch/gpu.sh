#!/usr/bin/env bash
# The paper preset on the NVIDIA GPUs of one host (V and M train on the GPU with float16 and XLA;
# rollouts, the controller's CMA-ES and the evaluation step CarRacing on the host's CPU cores).
#
#   [STRATEGY=default|mirrored] launch/gpu.sh [WORKDIR] [extra wm.pipeline flags...]
#
# STRATEGY (default: default) is passed as --strategy to wm.pipeline:
#   default   one GPU.
#   mirrored  V and M train data-parallel under tf.distribute.MirroredStrategy on all visible
#             GPUs (pick them with CUDA_VISIBLE_DEVICES); launch/multi_gpu.sh sets this. The
#             global batch (100, as in the paper) is split across the GPUs, so it must divide by
#             their number: with 8 GPUs pass e.g.
#             --set=train_vae.batch_size=200 --set=train_mdnrnn.batch_size=96.
#
# Rerunning the same command resumes: finished stages are skipped, unfinished ones continue from
# their checkpoints. Set SKIP_INSTALL=1 to skip the pip install.
set -euo pipefail

STRATEGY="${STRATEGY:-default}"
usage="usage: [STRATEGY=default|mirrored] $0 [WORKDIR (default: runs/paper)] [extra wm.pipeline flags, e.g. --set=train_controller.workers=32]
  STRATEGY is now '$STRATEGY' (launch/multi_gpu.sh sets mirrored)"
case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
case "$STRATEGY" in
  default|mirrored) ;;
  *) echo "STRATEGY must be default or mirrored, got '$STRATEGY' (multi_worker.sh and tpu_vm.sh cover the others)" >&2
     echo "$usage" >&2; exit 2 ;;
esac
WORKDIR="runs/paper"
if [[ $# -gt 0 && "$1" != -* ]]; then WORKDIR="$1"; shift; fi
PYTHON="${PYTHON:-python3}"

cd "$(dirname "$0")/.."
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  command -v swig >/dev/null || echo "note: gymnasium[box2d] may build Box2D from source; if pip fails: apt-get install swig build-essential" >&2
  "$PYTHON" -m pip install -e '.[gpu]'
fi
"$PYTHON" -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(len(g), 'GPUs:', g); assert g, 'no GPU visible to TensorFlow (driver? CUDA_VISIBLE_DEVICES?)'"

echo "+ $PYTHON -m wm.pipeline --preset=paper --strategy=$STRATEGY --workdir=$WORKDIR $*" >&2
exec "$PYTHON" -m wm.pipeline --preset=paper --strategy="$STRATEGY" --workdir="$WORKDIR" "$@"
