"""wm.dream: writes real | dream frames, logs to TensorBoard, rejects bad flags."""

import os

import imageio.v2 as imageio
import numpy as np
import pytest

from tfrecords.cli import UsageError
from wm import dream
from wm.models.loading import load_mdnrnn, load_vae


def test_dream_gif(tiny_world, tmp_path):
    out = str(tmp_path / "d.gif")
    dream.run(
        dream.DreamConfig(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out=out, steps=12, context=3, scale=1)
    )
    frames = imageio.mimread(out)
    assert len(frames) == 12 and frames[0].shape[:2] == (64, 129)
    assert os.listdir(os.path.join(tiny_world["mdnrnn"], "tensorboard", "dream"))
    # random actions, other temperature: also fine
    dream.run(
        dream.DreamConfig(
            vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out=out, steps=5, actions="random", temperature=0.0
        )
    )
    assert len(imageio.mimread(out)) == 5


def test_context_frames_are_reconstructions_then_dreams(tiny_world):
    v, m = load_vae(tiny_world["vae"]), load_mdnrnn(tiny_world["mdnrnn"])
    ep = dream.real_episode(tiny_world["rollouts"], 0)
    a = dream.dream(v, m, ep["frames"], ep["actions"], context=4, steps=8, temperature=1.0, seed=0)
    b = dream.dream(v, m, ep["frames"], ep["actions"], context=4, steps=8, temperature=1.0, seed=1)
    recon = v.decode(v.encode(ep["frames"][:4])[0]).numpy()
    np.testing.assert_allclose(a[:4], recon, atol=1e-5)
    np.testing.assert_allclose(a[:4], b[:4], atol=1e-6)
    assert not np.allclose(a[4:], b[4:])  # other seed, other dream


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"out": "x.png"}, "must end in .gif or .mp4"),
        ({"temperature": -1.0}, "temperature"),
        ({"actions": "left"}, "must be one of real, random"),
    ],
)
def test_bad_flags(tiny_world, kw, msg):
    cfg = dict(vae=tiny_world["vae"], mdnrnn=tiny_world["mdnrnn"], out="x.gif")
    cfg.update(kw)
    with pytest.raises(UsageError, match=msg):
        dream.run(dream.DreamConfig(**cfg))
