"""Agents from workdirs: V + M + C for CMA-ES controllers, V + M + actor-critic for PPO; seeds; parameter files.

A controller workdir (``python -m wm.train_controller`` or ``wm.train_ppo``) holds ``config.json``
naming the V and M workdirs it was trained with; :func:`load_policy` rebuilds the agent from it,
whichever algorithm trained it, for ``wm.evaluate``.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import option
from tfrecords.runtime.errors import UsageError
from wm.core import workdir
from wm.models.controller import Controller

if TYPE_CHECKING:
    from wm.agents.agent import Agent

PARAMS_NAME = "controller.npz"
CONTROLLERS = ("linear", "hidden")  # linear on [z, h] (867 params) | hidden: 40 tanh units on z (1,443)

# Seed streams of the tracks: disjoint, so evaluation tracks are never trained on.
TRAIN_STREAM, IN_TRAINING_EVAL_STREAM, EVAL_STREAM = 1, 2, 3


@dataclasses.dataclass
class WorldFlags:
    """The V and M workdirs an agent is built on (``--vae``, ``--mdnrnn``), for the binaries that need them."""

    vae: str = option(help="A train_vae workdir.", required=True)
    mdnrnn: str = option(help="A train_mdnrnn workdir.", required=True)


def track_seeds(seed: int, purpose: int, n: int, offset: int = 0) -> list[int]:
    """Environment seeds for a purpose (:data:`TRAIN_STREAM` for training generations,
    :data:`IN_TRAINING_EVAL_STREAM`, :data:`EVAL_STREAM` for wm.evaluate): disjoint streams
    derived from ``SeedSequence([seed, purpose, i])``."""
    return [int(np.random.SeedSequence([seed, purpose, offset + i]).generate_state(1, np.uint32)[0]) for i in range(n)]


def make_controller(kind: str, z_size: int, hidden_size: int) -> Controller:
    """The controller shape for ``kind`` ("linear" on [z, h], or "hidden": 40 tanh units on z)."""
    return Controller(input_dim=z_size + hidden_size) if kind == "linear" else Controller(input_dim=z_size, hidden=40)


def load_agent(vae_dir: str, mdnrnn_dir: str, controller_kind: str, precision: str = "auto") -> Agent:
    """Builds the agent from V and M workdirs; ``precision`` is V's encoder's while acting."""
    from wm.agents.agent import Agent
    from wm.core import distribute
    from wm.models.loading import load_mdnrnn, load_vae

    v = load_vae(vae_dir, distribute.inference_policy(precision))
    m = load_mdnrnn(mdnrnn_dir)
    return Agent(v, m, make_controller(controller_kind, int(m.z_size), int(m.hidden)))


def save_params(
    path: str, params: np.ndarray, controller: Controller, source: str, generation: int, score: float
) -> None:
    """Writes the controller's parameters and shape atomically (a small .npz)."""
    buf = io.BytesIO()
    np.savez(
        buf,
        params=np.asarray(params, np.float32),
        input_dim=controller.input_dim,
        hidden=controller.hidden,
        source=source,
        generation=generation,
        score=score,
    )
    fileio.write_bytes_atomic(path, buf.getvalue())


def read_params(path: str, num_params: int) -> np.ndarray:
    """The parameters [1, n] of a ``controller.npz``; UsageError if missing or of another shape."""
    if not fileio.exists(path):
        raise UsageError(f"{fileio.dirname(path)} has no {PARAMS_NAME} yet: train at least one generation")
    with fileio.open_read(path) as f, np.load(f) as z:
        params = z["params"][None].astype(np.float32)
    if params.shape[1] != num_params:
        raise UsageError(f"{path} holds {params.shape[1]} parameters, the agent needs {num_params}")
    return params


def build_ppo_policy(vae: str, mdnrnn: str, hidden: tuple[int, ...], seed: int = 0, precision: str = "auto") -> Any:
    """V and M from their workdirs plus a fresh actor-critic on [z, h] -> ``wm.agents.ppo.PPOPolicy``."""
    from wm.agents import ppo
    from wm.models.actor_critic import ActorCritic

    agent = load_agent(vae, mdnrnn, "linear", precision)
    return ppo.PPOPolicy(agent, ActorCritic(agent.z_size + agent.hidden, hidden), seed=seed)


def _load_ppo(agent_dir: str, config: dict, precision: str) -> tuple[Any, np.ndarray, dict]:
    import tensorflow as tf

    path = workdir.latest_checkpoint(agent_dir)
    if not path:
        raise UsageError(f"{agent_dir} has no PPO checkpoint yet: train at least one update")
    policy = build_ppo_policy(
        config["vae"],
        config["mdnrnn"],
        tuple(config["arch"]["hidden"]),
        precision=precision or config.get("inference_precision", "auto"),
    )
    tf.train.Checkpoint(model=policy.model).restore(path).expect_partial().assert_existing_objects_matched()
    return policy, np.zeros((1, 1), np.float32), config


def load_policy_config(agent_dir: str) -> dict:
    """The config of a trained controller workdir, checked without loading any model: UsageError
    (one line) if it is not an agent workdir, or a CMA-ES one without ``controller.npz`` yet."""
    config = workdir.read_config(agent_dir)
    if config is None:
        raise UsageError(f"{agent_dir} is not an agent workdir (no {workdir.CONFIG_NAME})")
    if config.get("model") != "controller":
        raise UsageError(f"{agent_dir} holds a {config.get('model')!r} run, not a trained agent")
    if config.get("algorithm") != "ppo" and not fileio.exists(fileio.join(agent_dir, PARAMS_NAME)):
        raise UsageError(f"{agent_dir} has no {PARAMS_NAME} yet: train at least one generation")
    return with_model_paths(agent_dir, config)


def with_model_paths(agent_dir: str, config: dict) -> dict:
    """``config`` with its V and M workdirs as full paths: a relocatable agent (the shipped one,
    :mod:`wm.agents.pretrained`) names them relative to its own directory."""
    for key in ("vae", "mdnrnn"):
        if isinstance(config.get(key), str) and "://" not in config[key] and not os.path.isabs(config[key]):
            config[key] = os.path.normpath(os.path.join(fileio.abspath(agent_dir), config[key]))
    return config


def load_policy(agent_dir: str, precision: str = "") -> tuple[Any, np.ndarray, dict]:
    """(agent, params [1, n], config) of a trained controller workdir, CMA-ES or PPO.

    Both kinds have the same ``act``/``initial_state`` surface for ``run_episodes``; a PPO policy
    ignores its (dummy) parameters. ``precision`` overrides V's encoder precision while acting.
    """
    config = load_policy_config(agent_dir)  # before loading V and M, which takes seconds
    if config.get("algorithm") == "ppo":
        return _load_ppo(agent_dir, config, precision)
    ppath = fileio.join(agent_dir, PARAMS_NAME)
    agent = load_agent(
        config["vae"],
        config["mdnrnn"],
        config["spec"]["controller"],
        precision or config.get("inference_precision", "auto"),
    )
    return agent, read_params(ppath, agent.controller.num_params), config
