#!/usr/bin/env bash
# The paper preset on several GPUs of one host: launch/gpu.sh with STRATEGY=mirrored (see there).
#   launch/multi_gpu.sh [WORKDIR] [extra wm.pipeline flags...]
export STRATEGY=mirrored
exec "$(dirname "$0")/gpu.sh" "$@"
