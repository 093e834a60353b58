"""C: the controller, a tiny policy on [z, h] with the paper's action squashing.

Parameters are one flat vector per controller (what CMA-ES searches over). Many controllers
act at once: ``act(params [P, n], features [P, E, D])`` runs P controllers, each on its own E
environments, as one batched matmul.

Squashing (the paper's): a = tanh(W [z, h] + b); steering = a_0 in [-1, 1];
gas = (a_1 + 1) / 2 in [0, 1]; brake = clip(a_2, 0, 1).

Shapes with the paper's sizes (z 32, h 256, 3 actions): linear on [z, h], 288 x 3 + 3 = 867
parameters. The paper's hidden-layer variant (1,443 parameters) is its V-only agent: one tanh
layer of 40 units on z alone, 32 x 40 + 40 + 40 x 3 + 3 = ``Controller(input_dim=32,
hidden=40)``. (A 40-unit layer on [z, h] would have 11,683.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrecords.schema import ACTION_DIM


@dataclasses.dataclass(frozen=True)
class Controller:
    """The controller's shape: ``input_dim`` features ([z, h]), optional ``hidden`` tanh units."""

    input_dim: int = 32 + 256
    hidden: int = 0

    @property
    def num_params(self) -> int:
        if self.hidden:
            return self.input_dim * self.hidden + self.hidden + self.hidden * ACTION_DIM + ACTION_DIM
        return self.input_dim * ACTION_DIM + ACTION_DIM

    def unpack(self, params: np.ndarray) -> list[np.ndarray]:
        """Flat [P, n] parameters -> weight and bias arrays with a leading P axis."""
        params = np.asarray(params, np.float32)
        if params.ndim == 1:
            params = params[None]
        if params.shape[-1] != self.num_params:
            raise ValueError(f"expected {self.num_params} parameters, got {params.shape[-1]}")
        p = params.shape[0]
        shapes = [(self.input_dim, ACTION_DIM), (ACTION_DIM,)]
        if self.hidden:
            shapes = [(self.input_dim, self.hidden), (self.hidden,), (self.hidden, ACTION_DIM), (ACTION_DIM,)]
        out, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(params[:, i : i + n].reshape(p, *s))
            i += n
        return out

    def act(self, params: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Actions [P, E, 3] for features [P, E, D] (or [P, D] -> [P, 3]) under P parameter vectors."""
        x = np.asarray(features, np.float32)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[:, None]
        weights = self.unpack(params)
        if self.hidden:
            w1, b1, w2, b2 = weights
            x = np.tanh(np.matmul(x, w1) + b1[:, None])
            raw = np.matmul(x, w2) + b2[:, None]
        else:
            w, b = weights
            raw = np.matmul(x, w) + b[:, None]
        a = squash(raw)
        return a[:, 0] if squeeze else a


def squash(raw: np.ndarray) -> np.ndarray:
    """The paper's squashing of raw outputs [..., 3] into CarRacing's action box."""
    a = np.tanh(raw)
    a[..., 1] = (a[..., 1] + 1.0) / 2.0
    a[..., 2] = np.clip(a[..., 2], 0.0, 1.0)
    return a
