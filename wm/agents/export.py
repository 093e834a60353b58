"""The trained agent (V's encoder + M's LSTM + C) as one TensorFlow SavedModel, for ``python -m wm.export``.

The SavedModel loads with ``tf.saved_model.load(PATH)`` alone (no import of this package) and has:

* ``initial_state(batch_size)`` -> ``(h, c)``, two float32 ``[N, H]`` zero tensors (M's LSTM state);
* ``step(observations, (h, c))`` -> ``(actions [N, 3] float32, (h, c))``: raw uint8 CarRacing
  observations ``[N, 96, 96, 3]`` are cropped and resized inside (:func:`preprocess`, the same
  bytes as ``data_gen.preprocess.preprocess_frame``), encoded by V (z = its mean), acted on by C
  (the CMA-ES controller, or a PPO agent's squashed actor mean) and fed with the action to M's LSTM:
  exactly what ``wm.evaluate`` plays (``Agent.act`` / ``PPOPolicy.act``);
* ``preprocess(observations)`` -> the uint8 ``[N, 64, 64, 3]`` frames V sees;
* the signature ``serving_default`` (``observations``, ``h``, ``c`` -> ``actions``, ``h``, ``c``) for
  tools that take flat signatures (``saved_model_cli``, TF Serving).

Every batch dimension is None. ``assets.extra/agent.json`` in the SavedModel records where it
came from (agent workdir, algorithm, controller shape, V's precision, sizes).

**The resize.** ``preprocess_frame`` resizes with PIL's bilinear filter, which widens its
triangle kernel by the scale factor when shrinking (1.5 across, 1.3125 down for 96 x 84 -> 64 x
64) and computes in fixed point: coefficients normalized per output pixel and rounded to
``2**-22``, a horizontal pass rounded to uint8, then a vertical pass. :func:`resize_coefficients`
builds the same integer coefficients (as float64, exact) and :func:`preprocess` applies them as
two matrix products in float64, where every sum of integer products is exact (all below 2**53),
so the frames equal PIL's bit for bit.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from data_gen.preprocess import CROP_ROWS, SIZE
from tfrecords.runtime import fileio
from tfrecords.runtime.errors import UsageError
from wm.agents import loading

if TYPE_CHECKING:
    import tensorflow as tf

OBSERVATION_SHAPE = (96, 96, 3)  # CarRacing's raw observation
INFO_PATH = os.path.join("assets.extra", "agent.json")
_PRECISION_BITS = 22  # PIL's fixed point for 8-bit images: 32 - 8 - 2 bits
_HALF = float(1 << (_PRECISION_BITS - 1))
_ONE = float(1 << _PRECISION_BITS)


# ---------------------------------------------------------------- preprocessing


def resize_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """PIL's bilinear (antialiased) resampling weights from ``in_size`` to ``out_size`` pixels in its
    8-bit fixed point: an [in_size, out_size] float64 matrix of integers (units of 2**-22).

    Output pixel j is centered at (j + 0.5) * scale in input coordinates; the triangle filter is
    stretched by max(scale, 1); input pixels within the support get weight tri((i + 0.5 - center) /
    stretch), normalized to sum 1 and then rounded half away from zero to multiples of 2**-22.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 1.0 * stretch  # the bilinear filter's support is 1
    out = np.zeros((in_size, out_size), np.float64)
    for j in range(out_size):
        center = (j + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # truncation, as PIL's (int) cast (positive values)
        hi = min(int(center + support + 0.5), in_size)
        w = np.array([max(0.0, 1.0 - abs((i - center + 0.5) / stretch)) for i in range(lo, hi)])
        total = w.sum()
        if total != 0.0:
            w = w / total
        out[lo:hi, j] = np.where(w < 0, np.trunc(-0.5 + w * _ONE), np.trunc(0.5 + w * _ONE))
    return out


def _fixed_point_pass(x: tf.Tensor, coefficients: np.ndarray, axis_equation: str) -> tf.Tensor:
    """One resampling pass in PIL's fixed point: sum of pixel x weight (exact in float64), plus half,
    floored to whole units of 2**-22 and clipped to [0, 255]."""
    import tensorflow as tf

    acc = tf.einsum(axis_equation, x, tf.constant(coefficients, tf.float64)) + _HALF
    return tf.clip_by_value(tf.floor(acc / _ONE), 0.0, 255.0)


def preprocess(observations: tf.Tensor) -> tf.Tensor:
    """Raw uint8 observations [N, 96, 96, 3] -> uint8 frames [N, 64, 64, 3] (TF op), equal to
    ``data_gen.preprocess.preprocess_frame`` applied to each: rows 0..83 kept (the indicator bar
    dropped), then PIL's bilinear resize to 64 x 64 (see the module docstring)."""
    import tensorflow as tf

    x = tf.cast(observations[:, :CROP_ROWS], tf.float64)  # [N, 84, 96, 3]
    width = x.shape[2] if x.shape[2] is not None else OBSERVATION_SHAPE[1]
    x = _fixed_point_pass(x, resize_coefficients(width, SIZE), "nhwc,wx->nhxc")  # horizontal, then uint8
    x = _fixed_point_pass(x, resize_coefficients(CROP_ROWS, SIZE), "nhxc,hy->nyxc")  # vertical
    return tf.cast(x, tf.uint8)


# ---------------------------------------------------------------- the module


def _make_module(policy: Any, params: np.ndarray, algorithm: str) -> tuple[Any, dict[str, Any]]:
    """A ``tf.Module`` holding the policy's encoder, LSTM and controller, with its ``tf.function``s."""
    import tensorflow as tf

    from wm.agents.agent import controller_tf

    ppo = algorithm == "ppo"
    agent = policy.agent if ppo else policy  # the V + M of both kinds
    hidden = int(agent.hidden)
    obs_spec = tf.TensorSpec([None, *OBSERVATION_SHAPE], tf.uint8, name="observations")
    state_spec = (
        tf.TensorSpec([None, hidden], tf.float32, name="h"),
        tf.TensorSpec([None, hidden], tf.float32, name="c"),
    )

    class SavedAgent(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="world_models_agent")
            self.encoder = agent.vae.encoder  # tracked: the variables the functions read
            self.lstm = agent.mdnrnn.lstm
            if ppo:
                self.actor_critic = policy.model
            else:
                self.controller_params = tf.Variable(params[0], trainable=False, name="controller_params")

        def act(
            self, observations: tf.Tensor, state: tuple[tf.Tensor, tf.Tensor]
        ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
            frames = preprocess(observations)
            z = agent.encode(frames)
            h, c = state
            if ppo:
                from wm.models.actor_critic import squash_action

                actions = squash_action(policy.model(tf.concat([z, h], axis=-1))[0])
            else:
                feats = tf.concat([z, h], axis=-1) if agent.use_h else z
                rows = tf.broadcast_to(self.controller_params[None], [tf.shape(z)[0], self.controller_params.shape[0]])
                actions = controller_tf(agent.controller, rows, feats)
            return actions, agent.advance(z, actions, (h, c))

    module = SavedAgent()
    module.step = tf.function(module.act, input_signature=[obs_spec, state_spec])
    module.initial_state = tf.function(
        lambda batch_size: (tf.zeros([batch_size, hidden], tf.float32),) * 2,
        input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")],
    )
    module.preprocess = tf.function(preprocess, input_signature=[obs_spec])

    @tf.function(input_signature=[obs_spec, *state_spec])
    def serve(observations: tf.Tensor, h: tf.Tensor, c: tf.Tensor) -> dict[str, tf.Tensor]:
        actions, (h2, c2) = module.act(observations, (h, c))
        return {"actions": actions, "h": h2, "c": c2}

    return module, {"serving_default": serve.get_concrete_function()}


def _info(agent_dir: str, config: dict, policy: Any, precision: str) -> dict:
    ppo = config.get("algorithm") == "ppo"
    agent = policy.agent if ppo else policy
    encoder_dtype = agent.vae.encoder.get_layer("conv1").dtype_policy.compute_dtype
    return {
        "agent": fileio.abspath(agent_dir),
        "algorithm": "ppo" if ppo else "cma_es",
        "controller": "actor_critic" if ppo else config["spec"]["controller"],
        "vae": config["vae"],
        "mdnrnn": config["mdnrnn"],
        "encoder_compute_dtype": str(encoder_dtype),
        "inference_precision": precision or config.get("inference_precision", "auto"),
        "z_size": int(agent.z_size),
        "hidden": int(agent.hidden),
        "observations": "uint8 [N, 96, 96, 3], raw CarRacing frames",
        "state": "(h, c): float32 [N, hidden] each, M's LSTM state; zeros at an episode's start",
        "actions": "float32 [N, 3]: steering in [-1, 1], gas in [0, 1], brake in [0, 1]",
    }


def check_out(out: str, overwrite: bool) -> None:
    """UsageError (one line) if ``out`` cannot be written: it exists (without ``overwrite``), or is a file."""
    if not out:
        raise UsageError("--out is required")
    if fileio.exists(out):
        if not fileio.gfile().isdir(out):
            raise UsageError(f"--out {out} is a file; give a directory name for the SavedModel")
        if not overwrite:
            raise UsageError(f"--out {out} exists; remove it or pass --overwrite to replace it")


def _rename(src: str, dst: str) -> None:
    if fileio.is_url(src):
        fileio.gfile().rename(src, dst, overwrite=False)
    else:
        os.rename(src, dst)


def _remove_tree(path: str) -> None:
    if fileio.is_url(path):
        if fileio.exists(path):
            fileio.gfile().rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def export_agent(agent_dir: str, out: str, precision: str = "", overwrite: bool = False) -> dict[str, Any]:
    """Writes the agent of ``agent_dir`` (as ``wm.evaluate --agent`` takes it) as a SavedModel at ``out``.

    ``precision`` is V's encoder's ("" = the agent's own, resolved as ``wm.evaluate`` resolves it on
    this machine; "float32" for a model that computes the same everywhere). The SavedModel is
    written to a temporary sibling and renamed to ``out`` at the end; an existing ``out`` is
    refused unless ``overwrite``, which renames it aside first and deletes it only after the new
    one is in place. Returns what ``assets.extra/agent.json`` records. Raises UsageError (one line)
    for an agent workdir that is missing or unfinished.
    """
    import tensorflow as tf

    check_out(out, overwrite)
    loading.load_policy_config(agent_dir)  # one line for a missing or unfinished workdir, before loading models
    policy, params, config = loading.load_policy(agent_dir, precision)
    module, signatures = _make_module(policy, params, config.get("algorithm", "cma_es"))
    info = _info(agent_dir, config, policy, precision)

    parent = fileio.dirname(out)
    fileio.makedirs(parent)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    base = out.rstrip("/")
    tmp, old = f"{base}.tmp-{tag}", f"{base}.old-{tag}"
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        fileio.makedirs(fileio.join(tmp, "assets.extra"))
        fileio.write_json_atomic(fileio.join(tmp, INFO_PATH), info)
        if fileio.exists(out):  # only with overwrite (checked above): kept aside until the new one is in place
            _rename(out, old)
        try:
            _rename(tmp, out)
        except BaseException:
            if fileio.exists(old) and not fileio.exists(out):
                _rename(old, out)  # put the old one back
            raise
    finally:
        _remove_tree(tmp)
    _remove_tree(old)
    return info


def read_info(path: str) -> dict | None:
    """The ``assets.extra/agent.json`` of an exported SavedModel, or None."""
    return fileio.read_json(fileio.join(path, INFO_PATH))


__all__ = [
    "INFO_PATH",
    "OBSERVATION_SHAPE",
    "check_out",
    "export_agent",
    "preprocess",
    "read_info",
    "resize_coefficients",
]
