"""The trained agent shipped inside the package: ``--agent=pretrained``.

``wm/pretrained/`` holds one CMA-ES agent as three small workdirs: ``vae/`` and ``mdnrnn/`` (their
``config.json`` and a weights-only checkpoint: no optimizer slots), ``controller/`` (its ``config.json``,
which names V and M relative to itself, and ``controller.npz``), and ``source.json``: the command that
trained it and its measured score. ``wm.evaluate``, ``wm.dream``, ``wm.export`` and ``wm.collect`` take
``--agent=pretrained`` (:func:`resolve`); a directory of that name is ``--agent=./pretrained``.
:func:`package` writes such a copy of any CMA-ES agent (``launch/package_pretrained.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from tfrecords.runtime import fileio
from tfrecords.runtime.errors import UsageError
from wm.core import workdir

NAME = "pretrained"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), NAME)
SOURCE_JSON = "source.json"


def resolve(agent: str) -> str:
    """``pretrained`` -> the shipped agent's controller directory; any other ``--agent`` unchanged."""
    if agent != NAME:
        return agent
    path = os.path.join(ROOT, "controller")
    if not os.path.exists(os.path.join(path, workdir.CONFIG_NAME)):
        raise UsageError(f"this installation ships no pretrained agent ({path} is missing)")
    return path


def is_packaged(agent_dir: str) -> bool:
    """Whether ``agent_dir`` is the shipped agent (read-only: outputs that default to the agent's
    directory go elsewhere)."""
    return os.path.abspath(agent_dir).startswith(ROOT + os.sep)


def source() -> dict[str, Any]:
    """What ``source.json`` says of the shipped agent (empty if there is none)."""
    path = os.path.join(ROOT, SOURCE_JSON)
    return json.load(open(path)) if os.path.exists(path) else {}


def _weights_only(kind: str, src: str, dst: str) -> None:
    """``dst``: ``src``'s config.json and its newest weights as a weights-only checkpoint at the same step."""
    import tensorflow as tf

    from wm.models.loading import load_mdnrnn, load_vae

    model = load_vae(src) if kind == "vae" else load_mdnrnn(src)
    step = tf.Variable(workdir.restore_model(src, model), dtype=tf.int64)
    os.makedirs(dst, exist_ok=True)
    shutil.copyfile(os.path.join(src, workdir.CONFIG_NAME), os.path.join(dst, workdir.CONFIG_NAME))
    ckpt = tf.train.Checkpoint(step=step, model=model)
    tf.train.CheckpointManager(ckpt, workdir.checkpoint_dir(dst), max_to_keep=1).save(checkpoint_number=int(step))


def package(agent_dir: str, out_dir: str, info: dict[str, Any]) -> dict[str, int]:
    """Writes the CMA-ES agent at ``agent_dir`` (its V, M and C) as a shippable copy into ``out_dir``, which
    must not exist yet, with ``info`` (the command that made it, its score) as ``source.json``. Returns the
    bytes written per part."""
    from wm.agents import loading

    config = loading.load_policy_config(agent_dir)
    if config.get("algorithm", "cma-es") != "cma-es":
        raise UsageError(f"{agent_dir} is a {config.get('algorithm')} agent; only CMA-ES agents are packaged")
    if fileio.exists(out_dir):
        raise UsageError(f"{out_dir} exists; give a new directory")
    tmp = out_dir.rstrip("/") + ".incomplete"
    shutil.rmtree(tmp, ignore_errors=True)
    _weights_only("vae", config["vae"], os.path.join(tmp, "vae"))
    _weights_only("mdnrnn", config["mdnrnn"], os.path.join(tmp, "mdnrnn"))
    ctrl = os.path.join(tmp, "controller")
    os.makedirs(ctrl)
    shutil.copyfile(os.path.join(agent_dir, loading.PARAMS_NAME), os.path.join(ctrl, loading.PARAMS_NAME))
    paths = {"vae": os.path.join("..", "vae"), "mdnrnn": os.path.join("..", "mdnrnn")}
    flags = {k: v for k, v in config.get("flags", {}).items() if k not in ("workdir", "series", "init_from")}
    ctrl_config = {**config, **paths, "flags": {**flags, **paths}}
    with open(os.path.join(ctrl, workdir.CONFIG_NAME), "w") as f:
        json.dump(ctrl_config, f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, SOURCE_JSON), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    os.rename(tmp, out_dir)
    sizes = {}
    for part in ("vae", "mdnrnn", "controller"):
        root = os.path.join(out_dir, part)
        sizes[part] = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)
    return sizes
