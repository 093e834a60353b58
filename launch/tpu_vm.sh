#!/usr/bin/env bash
# The paper preset on a Cloud TPU VM (runtime image tpu-vm-tf-2.21.0-pjrt or newer): V and M
# train on the TPU (TPUStrategy, bfloat16, XLA); rollouts, the controller's CMA-ES and the
# evaluation step CarRacing on the VM's CPU cores.
#
#   launch/tpu_vm.sh [WORKDIR] [extra wm.pipeline flags...]
#
# WORKDIR defaults to gs://$BUCKET/world-models/paper (set BUCKET, or pass a gs:// WORKDIR): the
# data, checkpoints, TensorBoard logs and report then outlive the VM. The VM's service account
# needs read/write access to the bucket. Rerunning the same command resumes.
#
# The TPU build of TensorFlow comes with the image: the install below must not replace it, so the
# package goes in with --no-deps and its other dependencies are listed by hand (see BUILD.md).
# Set SKIP_INSTALL=1 to skip it.
set -euo pipefail

usage="usage: $0 [WORKDIR (default: gs://\$BUCKET/world-models/paper)] [extra wm.pipeline flags...]"
case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
if [[ $# -gt 0 && "$1" != -* ]]; then
  WORKDIR="$1"; shift
elif [[ -n "${BUCKET:-}" ]]; then
  WORKDIR="gs://${BUCKET#gs://}/world-models/paper"
else
  echo "$usage" >&2; echo "$0: error: pass a WORKDIR or set BUCKET" >&2; exit 2
fi
PYTHON="${PYTHON:-python3}"

cd "$(dirname "$0")/.."
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  "$PYTHON" -c "import tensorflow as tf; print('preinstalled TensorFlow', tf.__version__)" \
    || { echo "$0: error: no TensorFlow: use a tpu-vm-tf-2.21.0-pjrt (or newer) image" >&2; exit 1; }
  command -v swig >/dev/null || sudo apt-get install -y swig build-essential  # Box2D builds from source
  "$PYTHON" -m pip install -e . --no-deps
  # setup.cfg's dependencies but TensorFlow (the TPU build stays)
  "$PYTHON" -m pip install $("$PYTHON" launch/requirements.py --without=tensorflow)
fi

echo "+ $PYTHON -m wm.pipeline --preset=paper --strategy=tpu --tpu=local --workdir=$WORKDIR $*" >&2
exec "$PYTHON" -m wm.pipeline --preset=paper --strategy=tpu --tpu=local --workdir="$WORKDIR" "$@"
