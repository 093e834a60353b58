"""V and M from their training workdirs (``python -m wm.train_vae`` / ``wm.train_mdnrnn``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wm.core import workdir

if TYPE_CHECKING:
    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE


def load_vae(path: str, dtype_policy: str = "float32") -> ConvVAE:
    """Builds V with the architecture in ``path/config.json`` and its newest weights.

    ``dtype_policy`` "mixed_bfloat16" or "bfloat16" gives a faster model for inference on CPUs
    with bfloat16 units (see ``wm.core.distribute.inference_policy``); "bfloat16" stores the
    weights rounded to bfloat16, which mixed_bfloat16 does on every call instead.

    Raises UsageError if ``path`` is not a train_vae workdir or has no checkpoint yet.
    """
    import tensorflow as tf

    from wm.models import vae

    config = workdir.require(path, "vae")
    model = vae.ConvVAE(**config["arch"], dtype_policy=dtype_policy)
    if dtype_policy == "bfloat16":  # checkpoints hold float32: restore, then round
        full = vae.ConvVAE(**config["arch"], dtype_policy="float32")
        workdir.restore_model(path, full)
        for dst, src in zip(model.weights, full.weights, strict=True):
            dst.assign(tf.cast(src, dst.dtype))
        return model
    workdir.restore_model(path, model)
    return model


def load_mdnrnn(path: str) -> MDNRNN:
    """Builds M with the architecture in ``path/config.json`` and its newest weights (float32).

    Raises UsageError if ``path`` is not a train_mdnrnn workdir or has no checkpoint yet.
    """
    from wm.models import mdnrnn

    config = workdir.require(path, "mdnrnn")
    model = mdnrnn.MDNRNN(**config["arch"], dtype_policy="float32")
    workdir.restore_model(path, model)
    return model
