"""``CarRacingFast-v3`` follows gymnasium's conventions for a third-party environment.

gymnasium 1.x has no plugin entry points: an id from another package is reached as
``gymnasium.make("module:EnvId")``, which imports the module (registering the id) first. These
tests check that form in a fresh interpreter outside the source tree (so the installed package
is what answers), and run gymnasium's own environment checker on both action spaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from data_gen.fast_car_racing import ENV_ID


def test_module_colon_id_works_in_a_fresh_interpreter(tmp_path) -> None:
    code = (
        "import gymnasium, sys\n"
        "assert 'data_gen' not in sys.modules\n"
        f"env = gymnasium.make('data_gen:{ENV_ID}')\n"
        "obs, info = env.reset(seed=3)\n"
        "obs, reward, terminated, truncated, info = env.step(env.action_space.sample())\n"
        "print(type(env.unwrapped).__name__, obs.shape, obs.dtype, env.spec.max_episode_steps)\n"
    )
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH="")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["FastCarRacing", "(96,", "96,", "3)", "uint8", "1000"]


@pytest.mark.parametrize("kwargs", [{}, {"continuous": False}, {"render_mode": "rgb_array"}])
def test_gymnasium_check_env_passes_without_warnings(kwargs) -> None:
    env = gym.make(f"data_gen:{ENV_ID}", **kwargs)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        # check_env reports soft failures as warnings (gymnasium.logger.warn -> UserWarning)
        complaints = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert complaints == []
    finally:
        env.close()


def test_the_spaces_are_the_stock_ones() -> None:
    for continuous in (True, False):
        fast, stock = gym.make(ENV_ID, continuous=continuous), gym.make("CarRacing-v3", continuous=continuous)
        try:
            assert fast.action_space == stock.action_space
            assert fast.observation_space == stock.observation_space
            assert fast.spec.max_episode_steps == stock.spec.max_episode_steps
            if continuous:
                np.testing.assert_array_equal(fast.action_space.low, [-1.0, 0.0, 0.0])
            else:
                assert fast.action_space.n == 5
        finally:
            fast.close()
            stock.close()
