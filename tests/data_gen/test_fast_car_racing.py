"""``CarRacingFast-v3`` must be step-for-step identical to gymnasium's ``CarRacing-v3``.

Each test runs the stock and the fast environment side by side with the same
seed and actions and requires every observation to be ``np.array_equal`` and
every reward, ``terminated``, ``truncated`` and ``info`` to be equal, from the
reset frame (the zoom-in animation) to the 1000-step time limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym
import numpy as np
import pytest

from data_gen import fast_car_racing
from data_gen.fast_car_racing import ENV_ID, FastCarRacing, register

STOCK_ID = "CarRacing-v3"
Policy = Callable[[np.random.Generator, int], object]


def uniform_policy(rng: np.random.Generator, t: int) -> np.ndarray:
    """Independent uniform continuous actions (steer, gas, brake)."""
    return rng.uniform([-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]).astype(np.float32)


def make_driving_policy() -> Policy:
    """A policy that actually drives: smooth steering, mostly gas, some brake.

    It visits many tiles (recolouring them), leaves the road onto grass and
    spins, so a lot of the road/grass geometry and all indicators are used.
    """
    state = {"steer": 0.0}

    def policy(rng: np.random.Generator, t: int) -> np.ndarray:
        state["steer"] = float(np.clip(state["steer"] + rng.normal(0, 0.25), -1, 1))
        gas = rng.uniform(0.3, 1.0) if rng.random() < 0.8 else 0.0
        brake = rng.uniform(0.0, 1.0) if rng.random() < 0.1 else 0.0
        return np.array([state["steer"], gas, brake], dtype=np.float32)

    return policy


def discrete_policy(rng: np.random.Generator, t: int) -> int:
    """Discrete actions biased towards gas so that the car moves."""
    return int(rng.choice(5, p=[0.1, 0.2, 0.2, 0.4, 0.1]))


def make_pair(**kwargs) -> tuple[gym.Env, gym.Env]:
    """Stock and fast environments via ``gym.make`` with the same kwargs."""
    register()
    return gym.make(STOCK_ID, **kwargs), gym.make(ENV_ID, **kwargs)


def assert_same_obs(a: np.ndarray, b: np.ndarray, where: str) -> None:
    """Exact equality of two observations, with a useful failure message."""
    assert a.shape == b.shape and a.dtype == b.dtype, where
    if not np.array_equal(a, b):
        diff = np.argwhere(np.any(a != b, axis=-1))
        worst = int(np.abs(a.astype(int) - b.astype(int)).max())
        pytest.fail(f"{where}: {len(diff)} pixels differ (max |diff| {worst}), e.g. {diff[:5].tolist()}")


def run_episode(
    stock: gym.Env,
    fast: gym.Env,
    seed: int,
    policy: Policy,
    max_steps: int = 10_000,
    options: dict | None = None,
    render: bool = False,
) -> tuple[int, bool, bool, dict]:
    """Reset both envs with ``seed`` and step them with the same actions.

    Stops at termination/truncation (which must coincide) or after
    ``max_steps`` steps; returns ``(steps, terminated, truncated, info)`` of
    the last step.
    """
    obs_s, info_s = stock.reset(seed=seed, options=options)
    obs_f, info_f = fast.reset(seed=seed, options=options)
    assert_same_obs(obs_s, obs_f, f"seed {seed} reset")
    assert info_s == info_f
    if render:
        assert_same_obs(stock.render(), fast.render(), f"seed {seed} reset render")
    rng = np.random.default_rng(seed + 12345)
    out_s = (None, 0.0, False, False, {})
    for t in range(max_steps):
        action = policy(rng, t)
        out_s = stock.step(action)
        out_f = fast.step(action)
        where = f"seed {seed} step {t}"
        assert_same_obs(out_s[0], out_f[0], where)
        assert out_s[1] == out_f[1], where  # reward, exactly
        assert out_s[2:] == out_f[2:], where  # terminated, truncated, info
        if render:
            assert_same_obs(stock.render(), fast.render(), where + " render")
        if out_s[2] or out_s[3]:
            break
    return t + 1, out_s[2], out_s[3], out_s[4]


@pytest.mark.slow  # full 1000-step episodes (the short-episode tests below are the quick tier's)
@pytest.mark.parametrize("seed, policy", [(0, "drive"), (7, "drive")])
def test_full_episodes_identical(seed: int, policy: str) -> None:
    """Full 1000-step episodes in the default configuration."""
    stock, fast = make_pair()
    pol = make_driving_policy() if policy == "drive" else uniform_policy
    # These seeds run into the 1000-step time limit (truncation).
    assert run_episode(stock, fast, seed, pol) == (1000, False, True, {})
    stock.close()
    fast.close()


@pytest.mark.slow  # 616 steps
def test_domain_randomize_identical() -> None:
    """``domain_randomize=True`` (float colours), incl. reset without re-randomizing.

    Seed 11 drives off the play field after 616 steps (termination, -100).
    """
    stock, fast = make_pair(domain_randomize=True)
    assert run_episode(stock, fast, 11, make_driving_policy()) == (616, True, False, {"lap_finished": False})
    # Keep the colours of the previous episode on a new track.
    run_episode(stock, fast, 12, make_driving_policy(), max_steps=60, options={"randomize": False})


@pytest.mark.slow  # a full episode
def test_discrete_identical() -> None:
    """``continuous=False``: discrete actions over a full episode."""
    stock, fast = make_pair(continuous=False)
    assert run_episode(stock, fast, 5, discrete_policy) == (1000, False, True, {})


def test_many_seeds_short_episodes() -> None:
    """Many tracks (and resets of the same env objects), first 60 steps each.

    Covers the zoom-in frames at the start of every episode on many track
    shapes and start angles.
    """
    stock, fast = make_pair()
    for seed in range(100, 110):
        pol = make_driving_policy() if seed % 2 else uniform_policy
        run_episode(stock, fast, seed, pol, max_steps=60)


def test_rgb_array_render_identical() -> None:
    """``render_mode="rgb_array"``: both observations and rendered frames match."""
    stock, fast = make_pair(render_mode="rgb_array")
    run_episode(stock, fast, 21, make_driving_policy(), max_steps=120, render=True)
    assert fast.render().shape == (400, 600, 3)


def test_rotation_matches_pygame() -> None:
    """The vectorized road transform equals ``Vector2.rotate_rad`` bit for bit.

    Includes angles beyond +-2*pi (pygame reduces them modulo 2*pi) and
    angles within pygame's epsilon of multiples of pi/2 (special-cased).
    """
    import pygame

    env = FastCarRacing()
    env.reset(seed=3)
    gx, gy = env._road_geometry()
    rng = np.random.default_rng(0)
    angles = list(rng.uniform(-40, 40, size=20)) + [
        k * np.pi / 2 + d for k in range(-9, 10) for d in (0.0, 5e-7, -5e-7, 3e-6)
    ]
    zoom, tx, ty = 16.2, 512.25, 190.125
    for angle in angles:
        c, s = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        px = (c * gx - s * gy) * zoom + tx
        py = (s * gx + c * gy) * zoom + ty
        for i in range(0, gx.shape[1], 37):
            for k in range(4):
                v = pygame.math.Vector2((float(gx[k, i]), float(gy[k, i]))).rotate_rad(angle)
                assert px[k, i] == v[0] * zoom + tx
                assert py[k, i] == v[1] * zoom + ty
    env.close()


def test_culled_polygons_draw_nothing_visible() -> None:
    """Polygons the stock code draws but the fast env skips touch no visible pixel.

    For every frame of two episode starts (zoom-in included), the skipped
    polygons are drawn with gfxdraw onto a sentinel-coloured surface: nothing
    may change outside the 100 rows that end up under the indicator panel.
    """
    import pygame
    from pygame import gfxdraw

    sentinel = (1, 2, 3)
    shown = fast_car_racing._N_HIDDEN
    checked = {"frames": 0, "polys": 0}

    class Checked(FastCarRacing):
        def _screen_polygons(self, geom, zoom, translation, angle):
            px, py, stock, drawn = super()._screen_polygons(geom, zoom, translation, angle)
            skipped = np.flatnonzero(stock & ~drawn)
            skipped = skipped[skipped != 0]
            surf = pygame.Surface((fast_car_racing._cr.WINDOW_W, fast_car_racing._cr.WINDOW_H))
            surf.fill(sentinel)
            before = pygame.surfarray.array2d(surf)
            for k in skipped.tolist():
                poly = [(float(px[j, k]), float(py[j, k])) for j in range(4)]
                gfxdraw.aapolygon(surf, poly, (255, 255, 255))
                gfxdraw.filled_polygon(surf, poly, (255, 255, 255))
            after = pygame.surfarray.array2d(surf)
            assert np.array_equal(before[:, shown:], after[:, shown:])
            checked["frames"] += 1
            checked["polys"] += len(skipped)
            return px, py, stock, drawn

    env = Checked()
    for seed in (0, 1):
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        policy = make_driving_policy()
        for t in range(150):
            env.step(policy(rng, t))
    env.close()
    assert checked["frames"] == 302 and checked["polys"] > 1000


def test_register_idempotent_and_spec() -> None:
    """``register()`` twice neither warns nor fails; spec mirrors CarRacing-v3."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register()
        register()
    spec, stock = gym.spec(ENV_ID), gym.spec(STOCK_ID)
    assert spec.max_episode_steps == stock.max_episode_steps == 1000
    assert spec.kwargs == stock.kwargs
    assert spec.reward_threshold == stock.reward_threshold
    env = gym.make(ENV_ID, domain_randomize=True, continuous=False)
    assert isinstance(env.unwrapped, FastCarRacing)
    assert env.unwrapped.domain_randomize and not env.unwrapped.continuous
    env.close()


def test_module_imports_without_tensorflow() -> None:
    """The module alone imports in a fresh interpreter without pulling in TensorFlow."""
    path = Path(fast_car_racing.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('fcr', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "env = mod.FastCarRacing(); env.reset(seed=0); env.step(env.action_space.sample())\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = dict(os.environ, SDL_VIDEODRIVER="dummy")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_environments_stepped_in_turn_share_surfaces_safely() -> None:
    """Fast environments of one thread share their render surfaces: stepped in turn (as in a
    worker of data_gen.envpool), each still matches its own stock twin exactly, including the
    zoom-in frames and a domain-randomized one with other colours."""
    register()
    kwargs = [{}, {"domain_randomize": True}, {}]
    pairs = [(gym.make(STOCK_ID, **kw), gym.make(ENV_ID, **kw)) for kw in kwargs]
    policies = [make_driving_policy() for _ in pairs]
    rngs = [np.random.default_rng(100 + i) for i in range(len(pairs))]
    for i, (stock, fast) in enumerate(pairs):
        assert_same_obs(stock.reset(seed=20 + i)[0], fast.reset(seed=20 + i)[0], f"env {i} reset")
    for t in range(120):
        for i, (stock, fast) in enumerate(pairs):
            action = policies[i](rngs[i], t)
            out_s, out_f = stock.step(action), fast.step(action)
            assert_same_obs(out_s[0], out_f[0], f"env {i} step {t}")
            assert out_s[1:] == out_f[1:], f"env {i} step {t}"
    assert len({id(f.unwrapped._canvas) for _, f in pairs}) == 1  # they did share
    for stock, fast in pairs:
        stock.close()
        fast.close()
