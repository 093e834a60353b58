#!/usr/bin/env bash
# The paper preset on several hosts: V and M train data-parallel under
# tf.distribute.MultiWorkerMirroredStrategy; every other stage (rollouts, encoding, dream,
# controller, evaluation, report) runs on the chief alone.
#
#   launch/multi_worker.sh HOSTS INDEX [WORKDIR] [extra wm.pipeline flags...]
#
#   HOSTS    comma-separated host:port of every worker, the same list and order on every host,
#            e.g. 10.0.0.1:12345,10.0.0.2:12345 (the port must be open between the hosts)
#   INDEX    this host's position in HOSTS (0 = the chief)
#   WORKDIR  a directory every host reads and writes: gs://... or a shared filesystem
#            (default: runs/paper, which only works if runs/ is shared)
#
# Run the same command on every host, changing only INDEX. The script sets TF_CONFIG:
#   {"cluster": {"worker": [HOSTS...]}, "task": {"type": "worker", "index": INDEX}}
# Worker 0 (the chief) runs `python -m wm.pipeline --strategy=multi_worker` end to end, and
# writes all checkpoints, logs and exports. The other workers take part only in the training
# stages: each waits for the chief's rollouts (WORKDIR/rollouts/manifest.json), joins V's
# training, waits for the encoded series (WORKDIR/series/manifest.json), joins M's training,
# then (with --iterations) joins the M training of every iteration once its series exists, and
# exits. A stage already trained is skipped on every worker (each sees the chief's checkpoint
# before joining any collective), so rerunning the same commands resumes. Workers build the
# stage configs exactly as the chief does (same PRESET, same --set and --iterations flags: pass
# the same extra flags everywhere). A SIGTERM to any worker makes all of them checkpoint at one
# step and exit 143 (TensorFlow's PreemptionCheckpointHandler); a worker that dies without one
# makes the others stop with a one-line error. Either way, rerun every command to resume. The global batch is split across all
# replicas of all hosts and must divide by their number. Set SKIP_INSTALL=1 to skip pip.
set -euo pipefail

usage="usage: $0 HOSTS INDEX [WORKDIR (default: runs/paper)] [extra wm.pipeline flags...]
  e.g. on host 0: $0 10.0.0.1:12345,10.0.0.2:12345 0 gs://my-bucket/wm/paper
       on host 1: $0 10.0.0.1:12345,10.0.0.2:12345 1 gs://my-bucket/wm/paper"
case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
if [[ $# -lt 2 ]]; then echo "$usage" >&2; exit 2; fi
HOSTS="$1"; INDEX="$2"; shift 2
WORKDIR="runs/paper"
if [[ $# -gt 0 && "$1" != -* ]]; then WORKDIR="$1"; shift; fi
PYTHON="${PYTHON:-python3}"
PRESET="${PRESET:-paper}"

IFS=, read -r -a WORKERS <<< "$HOSTS"
if ! [[ "$INDEX" =~ ^[0-9]+$ ]] || (( INDEX >= ${#WORKERS[@]} )); then
  echo "$0: error: INDEX must be 0..$(( ${#WORKERS[@]} - 1 )) for ${#WORKERS[@]} workers, got '$INDEX'" >&2
  exit 2
fi
worker_json=$(printf '"%s",' "${WORKERS[@]}")
export TF_CONFIG="{\"cluster\": {\"worker\": [${worker_json%,}]}, \"task\": {\"type\": \"worker\", \"index\": $INDEX}}"
echo "TF_CONFIG=$TF_CONFIG" >&2

cd "$(dirname "$0")/.."
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  command -v swig >/dev/null || echo "note: gymnasium[box2d] may build Box2D from source; if pip fails: apt-get install swig build-essential" >&2
  if command -v nvidia-smi >/dev/null; then "$PYTHON" -m pip install -e '.[gpu]'; else "$PYTHON" -m pip install -e .; fi
fi

if (( INDEX == 0 )); then
  echo "+ $PYTHON -m wm.pipeline --preset=$PRESET --strategy=multi_worker --workdir=$WORKDIR $*" >&2
  exec "$PYTHON" -m wm.pipeline --preset="$PRESET" --strategy=multi_worker --workdir="$WORKDIR" "$@"
fi

# A non-chief worker: V and M only, in one process (as on the chief), with the chief's configs.
exec "$PYTHON" - "$WORKDIR" "$PRESET" "$@" <<'PY'
import sys
import time

import tensorflow as tf

from wm import pipeline, train_mdnrnn, train_vae

workdir, preset, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
overrides, iterations, it = [], -1, iter(extra)
for arg in it:  # --set and --iterations decide the training stages; other flags concern the chief only
    if arg.startswith("--set="):
        overrides.append(arg[len("--set="):])
    elif arg == "--set":
        overrides.append(next(it))
    elif arg.startswith("--iterations="):
        iterations = int(arg[len("--iterations="):])
    elif arg == "--iterations":
        iterations = int(next(it))
configs = pipeline.build_configs(
    pipeline.PipelineConfig(
        workdir=workdir, preset=preset, strategy="multi_worker", overrides=overrides, iterations=iterations
    )
)


def wait_for(path: str) -> None:
    t0 = time.time()
    while not tf.io.gfile.exists(path):
        if time.time() - t0 > 7 * 24 * 3600:
            sys.exit(f"multi_worker: gave up waiting for {path}")
        time.sleep(30)


# The chief's training stages in the order it runs them (V, M, then M of every iteration), each
# after the data it reads exists. A stage already trained returns at once on every worker
# (before any collective), so a rerun skips what is done here as on the chief.
for name, stage_cfg in configs.items():
    if name == "train_vae":
        data = stage_cfg.data
        run = train_vae.run
    elif name.split("@")[0] == "train_mdnrnn":
        data = stage_cfg.series.split(",")[-1]
        run = train_mdnrnn.run
    else:
        continue
    print(f"multi_worker: {name}: waiting for the chief's data in {data}", file=sys.stderr)
    wait_for(f"{data}/manifest.json")
    run(stage_cfg)
print("multi_worker: V and M done; the chief runs the remaining stages", file=sys.stderr)
PY
