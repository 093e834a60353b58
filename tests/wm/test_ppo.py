"""PPO (wm.models.actor_critic, wm.training.ppo_update, wm.agents.ppo): GAE, clipped objective and
squashed-Gaussian log-probs against float64 NumPy; a bandit that PPO must solve; the policy's batched step;
rollouts that drop episodes of a lost worker."""

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import crash_worker

from data_gen.envpool import Step, WorkerLost
from wm.agents import ppo
from wm.models import actor_critic
from wm.training import ppo_update

# ---------------------------------------------------------------- references


def _gae_reference(rewards, values, next_values, terminated, dones, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed up to and including the step that ends the episode."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while k < T:
                delta = rewards[k, n] + gamma * (0.0 if terminated[k, n] else next_values[k, n]) - values[k, n]
                total += (gamma * lam) ** (k - t) * delta
                if dones[k, n]:
                    break
                k += 1
            adv[t, n] = total
    return adv


def _log_prob_terms(u, mean, log_std):
    """Per-dimension log-densities [..., 3] of the squashed action, float64."""
    u, mean, log_std = (np.asarray(x, np.float64) for x in (u, mean, log_std))
    std = np.exp(log_std)
    gauss = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    # |da/du| = scale * sech(u)^2 = scale * 4 / (e^u + e^-u)^2, exact in float64 for |u| < 700
    log_det = np.log([1.0, 0.5, 0.5]) + np.log(4.0) - 2.0 * np.log(np.exp(u) + np.exp(-u))
    return gauss - log_det


def _log_prob_reference(u, mean, log_std):
    return _log_prob_terms(u, mean, log_std).sum(-1)


# ---------------------------------------------------------------- math


def test_gae_matches_reference_with_episode_ends_inside_the_rollout():
    rng = np.random.default_rng(0)
    T, N = 17, 5
    rewards, values, next_values = rng.normal(size=(3, T, N))
    dones = rng.random((T, N)) < 0.2
    terminated = dones & (rng.random((T, N)) < 0.5)
    assert terminated.any() and (dones & ~terminated).any()
    adv, ret = ppo.gae(rewards, values, next_values, terminated, dones, 0.97, 0.9)
    ref = _gae_reference(rewards, values, next_values, terminated, dones, 0.97, 0.9)
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref + values, rtol=1e-5, atol=1e-5)


def test_clipped_surrogate_matches_reference():
    rng = np.random.default_rng(1)
    logp, old = rng.normal(scale=0.3, size=(2, 200))
    adv = rng.normal(size=200)
    got = float(
        ppo_update.clipped_surrogate_loss(
            tf.constant(logp, tf.float32), tf.constant(old, tf.float32), tf.constant(adv, tf.float32), 0.2
        )
    )
    r = np.exp(logp - old)
    ref = -np.mean(np.minimum(r * adv, np.clip(r, 0.8, 1.2) * adv))
    assert abs((np.abs(r - 1) > 0.2).mean() - 0.5) < 0.45  # both clipped and unclipped samples
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_squashed_log_prob_matches_float64_reference_up_to_the_bounds():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(64, 3))
    log_std = rng.uniform(-2, 1, size=(64, 3))
    u = mean + np.exp(log_std) * rng.normal(size=(64, 3))
    u[:8] = [
        [8.0, -8.0, 12.0],
        [15.0, 15.0, -15.0],
        [-20.0, 20.0, 25.0],
        [40.0, -40.0, 0.0],
    ] * 2  # actions on the bounds
    got = actor_critic.log_prob(
        tf.constant(u, tf.float32), tf.constant(mean, tf.float32), tf.constant(log_std, tf.float32)
    ).numpy()
    ref = _log_prob_reference(u.astype(np.float32), mean.astype(np.float32), log_std.astype(np.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    a = actor_critic.squash_action(tf.constant(u, tf.float32)).numpy()
    assert (a >= actor_critic.ACTION_LOW).all() and (a <= actor_critic.ACTION_HIGH).all()
    assert a[1].tolist() == [1.0, 1.0, 0.0]  # float32 saturates: exactly at the bounds, log-prob still finite


def test_squashed_density_integrates_to_one():
    """exp(log_prob) over the action box (one dimension varies, the others fixed) integrates to 1."""
    mean, log_std = np.array([0.3, -0.5, 1.0]), np.array([-0.2, 0.4, -1.0])
    for dim, (lo, hi) in enumerate(zip(actor_critic.ACTION_LOW, actor_critic.ACTION_HIGH)):
        a = np.linspace(lo, hi, 200001)[1:-1]
        u = np.zeros((len(a), 3))
        u[:, dim] = np.arctanh((a - actor_critic.OFFSET[dim]) / actor_critic.SCALE[dim])
        others = np.delete(_log_prob_terms(u, mean, log_std), dim, axis=-1).sum(-1)
        lp = actor_critic.log_prob(tf.constant(u), tf.constant(mean), tf.constant(log_std)).numpy() - others
        assert np.trapezoid(np.exp(lp), a) == pytest.approx(1.0, abs=2e-3)


def test_entropy_estimate_is_unbiased():
    mean = tf.constant([[0.3, -1.0, 2.0]])
    log_std = tf.constant([[-0.5, 0.2, 0.0]])
    eps = tf.random.stateless_normal([20000, 3], seed=[1, 2])
    est = actor_critic.entropy_estimate(mean, log_std, eps).numpy().mean()
    u = mean + tf.exp(log_std) * tf.random.stateless_normal([20000, 3], seed=[3, 4])
    mc = -actor_critic.log_prob(u, mean, log_std).numpy().mean()  # E[-log p(a)] by plain Monte Carlo
    assert est == pytest.approx(mc, abs=0.03)


# ---------------------------------------------------------------- learning


def test_ppo_update_solves_a_one_step_bandit():
    """Reward -|a - a*|^2 for one step from a fixed observation: the squashed mean action must reach a*."""
    tf.keras.utils.set_random_seed(0)
    target = np.array([-0.5, 0.8, 0.3], np.float32)
    model = actor_critic.ActorCritic(4, hidden=(16, 16))
    trainer = ppo_update.PPOTrainer(
        model, ppo_update.PPOHyper(learning_rate=1e-2, epochs=4, minibatch_size=128, entropy_coef=0.0), seed=0
    )
    rng = np.random.default_rng(0)
    feats = np.ones((256, 4), np.float32)
    for _ in range(60):
        mean, log_std, value = (x.numpy() for x in model(feats))
        u = (mean + np.exp(log_std) * rng.normal(size=mean.shape)).astype(np.float32)
        a = actor_critic.squash_action(tf.constant(u)).numpy()
        r = -((a - target) ** 2).sum(-1, keepdims=True).T
        done = np.ones_like(r, bool)
        adv, ret = ppo.gae(r, value[None], np.zeros_like(r), done, done, 0.99, 0.95)
        logp = actor_critic.log_prob(tf.constant(u), tf.constant(mean), tf.constant(log_std)).numpy()
        trainer.update({"feats": feats, "u": u, "logp": logp, "adv": adv[0], "ret": ret[0]}, rng)
    mean, _, value = model(feats[:1])
    best = actor_critic.squash_action(mean).numpy()[0]
    np.testing.assert_allclose(best, target, atol=0.05)
    assert float(value[0]) > -0.1  # the critic learned that the reward is now near 0


# ---------------------------------------------------------------- policy and rollouts


def test_policy_step_is_v_then_actor_then_m(tiny_world):
    from wm.agents.loading import load_agent

    agent = load_agent(tiny_world["vae"], tiny_world["mdnrnn"], "linear")
    model = actor_critic.ActorCritic(agent.z_size + agent.hidden)
    policy = ppo.PPOPolicy(agent, model, seed=0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    h, c = (rng.normal(size=(3, agent.hidden)).astype(np.float32) for _ in range(2))
    a, (h2, c2), z = policy.act(frames, (h, c), np.zeros((1, 1), np.float32))
    np.testing.assert_allclose(z, agent.vae.encode(frames)[0].numpy(), atol=2e-3)  # compiled vs eager convolutions
    mean, _, value = model(np.concatenate([z, h], -1))
    np.testing.assert_allclose(a, actor_critic.squash_action(mean).numpy(), atol=1e-5)
    ref_h, (_, ref_c) = agent.mdnrnn.cell(z, a, (h, c))
    np.testing.assert_allclose(h2, ref_h.numpy(), atol=1e-5)
    np.testing.assert_allclose(c2, ref_c.numpy(), atol=1e-5)
    out = policy.sample(frames, (h, c))
    np.testing.assert_allclose(out["value"], value.numpy(), atol=1e-4)
    np.testing.assert_allclose(policy.value(frames, h), value.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["a"], actor_critic.squash_action(out["u"]).numpy(), atol=1e-6)


class _FakePolicy:
    """Features = [frame value, slot id], value = frame value; for collector bookkeeping tests."""

    z_size, hidden = 1, 1

    def initial_state(self, n):
        return np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32)

    def sample(self, frames, state):
        n = len(frames)
        f = frames[:, 0, 0, 0].astype(np.float32)
        return {
            "a": np.zeros((n, 3), np.float32),
            "u": np.zeros((n, 3), np.float32),
            "logp": np.zeros(n, np.float32),
            "value": f,
            "feats": np.stack([f, np.arange(n, dtype=np.float32)], -1),
            "z": f[:, None],
            "h": state[0] + 1,
            "c": state[1],
        }

    def value(self, frames, h):
        return frames[:, 0, 0, 0].astype(np.float32)


class _FakePool:
    """Slot s's episodes terminate after 3 + s steps; frame value = step in the episode; reward 1.
    Worker 1 (slot 1) dies on the ``crash_at``-th pool.step call."""

    def __init__(self, n, crash_at):
        self.num_envs, self.crash_at, self.calls = n, crash_at, 0
        self.t = np.zeros(n, int)
        self.seeds = []

    def _step(self, s):
        return Step(np.full((64, 64, 3), self.t[s], np.uint8), 1.0, bool(self.t[s] >= 3 + s), False, 0)

    def reset(self, seeds):
        self.seeds += [seeds[s] for s in sorted(seeds)]
        for s in seeds:
            self.t[s] = 0
        return {s: self._step(s) for s in seeds}

    def step(self, actions):
        self.calls += 1
        out = {}
        for s in actions:
            if self.calls == self.crash_at and s == 1:
                continue
            self.t[s] += 1
            out[s] = self._step(s)
        if self.calls == self.crash_at:
            err = WorkerLost([1], "test")
            err.partial = out
            raise err
        return out


def test_rollout_drops_the_partial_episode_of_a_lost_worker_and_tracks_episodes():
    pool = _FakePool(3, crash_at=6)
    col = ppo.RolloutCollector(pool, _FakePolicy(), max_steps=100, seed_of=lambda k: 1000 + k, gamma=1.0, lam=1.0)
    ro = col.collect(8)
    # slot 0: episodes of 3 steps (ends at t=2, 5); slot 2: 5 steps (ends at t=4); slot 1: 4 steps (ends at t=3),
    # its second episode (t=4, 5) is lost at t=5 and dropped, then restarts at t=6.
    assert sorted(ro.episode_returns) == [3.0, 3.0, 4.0, 5.0] and ro.env_steps == 24
    assert ro.dropped_steps == 2 and len(ro.batch["adv"]) == 22
    assert (
        col.lost_workers == 1 and pool.seeds[:3] == [1000, 1001, 1002] and len(pool.seeds) == len(set(pool.seeds)) == 8
    )
    # returns-to-go inside finished episodes (gamma = lambda = 1, terminal): 3, 2, 1 for slot 0's first episode
    slot = ro.batch["feats"][:, 1]
    np.testing.assert_allclose(ro.batch["ret"][slot == 0][:3], [3, 2, 1])
    # slot 1 after the restart (t = 6, 7): bootstrapped from the value (frame = 2) after the rollout
    np.testing.assert_allclose(ro.batch["ret"][slot == 1][-2:], [2 + 2, 1 + 2])
    assert math.isclose(col.h[0, 0], 2.0)  # slot 0 is 2 steps into its third episode: M's state carried, reset at start


def test_rollout_survives_a_real_worker_crash():
    from data_gen.envpool import EnvPool

    with EnvPool("CarRacingFast-v3", 4, 2, 50) as pool:
        col = ppo.RolloutCollector(pool, _FakePolicy(), max_steps=50, seed_of=lambda k: 7 + k, gamma=0.99, lam=0.95)
        first = col.collect(3)
        assert first.dropped_steps == 0 and len(first.batch["adv"]) == 12
        crash_worker(
            pool, 1
        )  # slots 1 and 3: the failed step is dropped (earlier ones were trained on), new tracks start
        ro = col.collect(3)
        assert col.lost_workers == 1 and ro.dropped_steps == 2 and len(ro.batch["adv"]) == 10
        assert np.isfinite(ro.batch["adv"]).all() and col.len.tolist() == [6, 2, 6, 2]


def test_checkpoint_restores_every_weight(tmp_path):
    import tensorflow as tf

    from wm.models.actor_critic import ActorCritic

    a = ActorCritic(40)
    for v in a.weights:
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype(np.float32))
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ck"))
    b = ActorCritic(40)
    tf.train.Checkpoint(model=b).restore(path).assert_consumed()
    assert len(a.weights) == len(b.weights) == 13  # 2 x (2 hidden + out) x (kernel, bias) + log_std
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
