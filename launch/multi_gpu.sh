#!/usr/bin/env bash
# The paper preset on several NVIDIA GPUs of one host: V and M train data-parallel under
# tf.distribute.MirroredStrategy (all visible GPUs; pick them with CUDA_VISIBLE_DEVICES). The
# global batch (100, as in the paper) is split across the GPUs, so it must divide by their number:
# with 8 GPUs pass e.g. --set=train_vae.batch_size=200 --set=train_mdnrnn.batch_size=96.
#
#   launch/multi_gpu.sh [WORKDIR] [extra wm.pipeline flags...]
#
# Rerunning the same command resumes. Set SKIP_INSTALL=1 to skip the pip install.
set -euo pipefail

usage="usage: $0 [WORKDIR (default: runs/paper)] [extra wm.pipeline flags, e.g. --set=train_vae.batch_size=200]"
case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
WORKDIR="runs/paper"
if [[ $# -gt 0 && "$1" != -* ]]; then WORKDIR="$1"; shift; fi
PYTHON="${PYTHON:-python3}"

cd "$(dirname "$0")/.."
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  command -v swig >/dev/null || echo "note: gymnasium[box2d] may build Box2D from source; if pip fails: apt-get install swig build-essential" >&2
  "$PYTHON" -m pip install -e '.[gpu]'
fi
"$PYTHON" -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(len(g), 'GPUs:', g); assert g, 'no GPU visible to TensorFlow'"

echo "+ $PYTHON -m wm.pipeline --preset=paper --strategy=mirrored --workdir=$WORKDIR $*" >&2
exec "$PYTHON" -m wm.pipeline --preset=paper --strategy=mirrored --workdir="$WORKDIR" "$@"
