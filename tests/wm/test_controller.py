"""Controller: parameter counts, squashing, batched action equals per-environment action."""

import numpy as np
import pytest

from wm.models.controller import Controller, squash


def test_parameter_counts():
    assert Controller().num_params == 867
    assert Controller(input_dim=32, hidden=40).num_params == 1443


def test_squashing_maps_into_the_action_box():
    raw = np.array([[-100.0, -100.0, -100.0], [0.0, 0.0, 0.0], [100.0, 100.0, 100.0], [0.5, 0.5, 0.5]])
    a = squash(raw.copy())
    np.testing.assert_allclose(a[0], [-1, 0, 0])
    np.testing.assert_allclose(a[1], [0, 0.5, 0])
    np.testing.assert_allclose(a[2], [1, 1, 1])
    np.testing.assert_allclose(a[3], [np.tanh(0.5), (np.tanh(0.5) + 1) / 2, np.tanh(0.5)], rtol=1e-6)


@pytest.mark.parametrize("c", [Controller(), Controller(input_dim=32, hidden=40)])
def test_batched_equals_per_environment(c):
    rng = np.random.default_rng(0)
    params = rng.normal(size=(4, c.num_params)).astype(np.float32) * 0.1
    feats = rng.normal(size=(4, 5, c.input_dim)).astype(np.float32)
    batched = c.act(params, feats)
    assert batched.shape == (4, 5, 3)
    for p in range(4):
        for e in range(5):
            x = feats[p, e].astype(np.float64)
            flat = params[p].astype(np.float64)
            if c.hidden:
                n1 = c.input_dim * c.hidden
                w1, b1 = flat[:n1].reshape(c.input_dim, c.hidden), flat[n1 : n1 + c.hidden]
                rest = flat[n1 + c.hidden :]
                w2, b2 = rest[: c.hidden * 3].reshape(c.hidden, 3), rest[c.hidden * 3 :]
                raw = np.tanh(x @ w1 + b1) @ w2 + b2
            else:
                raw = x @ flat[: c.input_dim * 3].reshape(c.input_dim, 3) + flat[c.input_dim * 3 :]
            np.testing.assert_allclose(batched[p, e], squash(raw[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.act(params, feats[:, 0]), batched[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="parameters"):
        c.act(params[:, :-1], feats)
