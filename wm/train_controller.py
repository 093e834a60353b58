"""Stage 4: train C with CMA-ES in the real environment (the paper's way).

    python -m wm.train_controller --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn \\
        --workdir=runs/demo/controller --popsize=16 --trials=4 --generations=50

The loop, its resume and its files are :mod:`wm.training.cma_es`'s (the phases of ``CmaEsTrainer``; the state
it resumes from, :mod:`wm.training.cma_state`). ``controller.npz`` in the
workdir holds the best evaluated parameters, which ``wm.evaluate --agent=WORKDIR`` loads.
``--early_stop=N`` ends an episode after N steps without reaching a new road tile (off by
default): it speeds up early generations, whose cars mostly stand still or leave the track,
and changes fitness only for episodes that had stopped making progress.
"""

from tfrecords.runtime.cli import run_binary
from wm.training.cma_es import METRICS_NAME, PARAMS_NAME, STATE_NAME, TrainControllerConfig, run  # noqa: F401

if __name__ == "__main__":
    run_binary(TrainControllerConfig, run, "train_controller")
