"""The compiled dream against the same steps taken one at a time, its endings, its seeds and XLA."""

import numpy as np
import pytest
import tensorflow as tf

from tfrecords.runtime.errors import UsageError
from wm.agents.dream import DreamEnv, start_latents
from wm.models.controller import Controller
from wm.models.mdnrnn import MDNRNN, sample_z_from_noise

Z, H = 32, 16


def _model(terminal=True, dropout=0.0, terminal_bias=None):
    tf.keras.utils.set_random_seed(3)
    m = MDNRNN(hidden=H, reward_head=True, terminal_head=terminal, dropout=dropout)
    if terminal and terminal_bias is not None:
        m.terminal.bias.assign([terminal_bias])
    return m


def _inputs(ctrl, n=6, worlds=3, seed=0):
    rng = np.random.default_rng(seed)
    params = rng.normal(scale=0.5, size=(n, ctrl.num_params)).astype(np.float32)
    starts = rng.normal(size=(worlds, Z)).astype(np.float32)
    return params, starts, np.arange(n, dtype=np.int32) % worlds


def _reference(env, params, starts, worlds, seed):
    """Row by row, step by step, with NumPy's controller: the loop the compiled call must equal."""
    ctrl, m = env.controller, env.m
    seed_t = tf.constant([seed, 0], tf.int64)
    in_masks, head_masks = (x.numpy() for x in env.masks(seed_t, len(starts)))
    out = []
    for i, w in enumerate(worlds):
        z, h, c = starts[w][None], np.zeros((1, H), np.float32), np.zeros((1, H), np.float32)
        ret, steps = 0.0, 0
        for t in range(env.max_steps):
            u, eps = (x.numpy()[w : w + 1] for x in env.noise(seed_t, t, len(starts)))
            feats = np.concatenate([z, h], -1) if env.use_h else z
            a = ctrl.act(params[i : i + 1], feats)
            x = np.concatenate([z, a], -1) * in_masks[w]
            h, (h, c) = m.cell(x[:, :Z], x[:, Z:], (h, c))
            h, c = h.numpy(), c.numpy()
            mix, extras = m.heads(h * head_masks[w])
            ret += float(extras["reward"][0])
            steps += 1
            if "terminal_logit" in extras:
                p = float(tf.sigmoid(extras["terminal_logit"])[0])
                if env.done == "sample" and float(env.done_noise(seed_t, t, len(starts))[w]) < p:
                    break
                if env.done == "threshold" and float(extras["terminal_logit"][0]) > 0:
                    break
            z = sample_z_from_noise(mix, env.temperature, u, eps).numpy()
        out.append((ret, steps))
    return np.array(out)


@pytest.mark.parametrize(
    "dropout,temperature,kind,done",
    [
        (0.0, 1.15, "linear", "threshold"),
        (0.3, 1.0, "linear", "threshold"),
        (0.3, 0.7, "z", "threshold"),
        (0.1, 1.0, "linear", "sample"),
    ],
)
def test_compiled_rollout_equals_the_steps_one_at_a_time(dropout, temperature, kind, done):
    m = _model(dropout=dropout, terminal_bias=-1.5)
    ctrl = Controller(input_dim=Z + H) if kind == "linear" else Controller(input_dim=Z, hidden=40)
    env = DreamEnv(m, ctrl, max_steps=25, temperature=temperature, dropout=dropout, done=done)
    params, starts, worlds = _inputs(ctrl)
    got = env.rollout(params, starts, worlds, seed=7)
    want = _reference(env, params, starts, worlds, 7)
    np.testing.assert_allclose(got.returns, want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.steps, want[:, 1])
    assert got.terminated[got.steps < env.max_steps].all() and (got.steps <= env.max_steps).all()


def test_a_row_does_not_depend_on_its_batch_and_worlds_share_their_noise():
    m = _model(dropout=0.2, terminal_bias=-3.0)
    ctrl = Controller(input_dim=Z + H)
    env = DreamEnv(m, ctrl, max_steps=20, temperature=1.0, dropout=0.2)
    params, starts, worlds = _inputs(ctrl, n=6, worlds=3)
    full = env.rollout(params, starts, worlds, seed=1)
    alone = env.rollout(params[4:5], starts, worlds[4:5], seed=1)
    np.testing.assert_allclose(alone.returns, full.returns[4:5], rtol=1e-6)
    # the same parameters in the same world: the same episode; another seed: another episode
    same = env.rollout(np.repeat(params[:1], 2, 0), starts, np.array([2, 2]), seed=1)
    assert same.returns[0] == same.returns[1]
    assert env.rollout(params, starts, worlds, seed=2).returns.tolist() != full.returns.tolist()
    assert env.rollout(params, starts, worlds, seed=1).returns.tolist() == full.returns.tolist()


def test_temperature_zero_is_deterministic_and_without_terminal_head_episodes_run_to_max_steps():
    m = _model(terminal=False)
    ctrl = Controller(input_dim=Z + H)
    env = DreamEnv(m, ctrl, max_steps=12, temperature=0.0)
    params, starts, worlds = _inputs(ctrl)
    a = env.rollout(params, starts, worlds, seed=1)
    b = env.rollout(params, starts, worlds, seed=99)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert a.steps.tolist() == [12] * 6 and not a.terminated.any()


def test_done_ends_an_episode_and_its_return_stops():
    m = _model(terminal_bias=50.0)  # the terminal head fires at once
    ctrl = Controller(input_dim=Z + H)
    env = DreamEnv(m, ctrl, max_steps=30, temperature=1.0)
    params, starts, worlds = _inputs(ctrl)
    res, zs, acts = env.rollout_recorded(params, starts, worlds, seed=0)
    assert res.steps.tolist() == [1] * 6 and res.terminated.all()
    assert zs.shape[0] == 1 and acts.shape == (1, 6, 3)  # the loop stopped once every row was done
    # the return is the first step's reward alone
    h, _ = m.cell(tf.constant(starts[worlds]), tf.constant(acts[0]), m.initial_state(6))
    _, extras = m.heads(h)
    np.testing.assert_allclose(res.returns, extras["reward"].numpy(), rtol=1e-5)


def test_a_sampled_done_with_probability_one_ends_at_once_and_with_probability_zero_never():
    ctrl = Controller(input_dim=Z + H)
    for bias, steps in ((50.0, 1), (-50.0, 30)):
        env = DreamEnv(_model(terminal_bias=bias), ctrl, max_steps=30, temperature=1.0, done="sample")
        res = env.rollout(*_inputs(ctrl), seed=0)
        assert res.steps.tolist() == [steps] * 6 and res.terminated.all() == (steps == 1), bias
    with pytest.raises(UsageError, match="done must be one of"):
        DreamEnv(_model(), ctrl, max_steps=3, done="coin")


def test_a_mix_of_endings_stops_each_return_at_its_own_end():
    m = _model(terminal_bias=0.0)
    ctrl = Controller(input_dim=Z + H)
    env = DreamEnv(m, ctrl, max_steps=40, temperature=1.0)
    params, starts, worlds = _inputs(ctrl, n=12, worlds=12)
    res = env.rollout(params, starts, worlds, seed=3)
    want = _reference(env, params, starts, worlds, 3)
    np.testing.assert_array_equal(res.steps, want[:, 1])
    np.testing.assert_allclose(res.returns, want[:, 0], rtol=1e-4, atol=1e-4)


def test_jit_compiled_rollout_matches_the_uncompiled_one():
    m = _model(dropout=0.3, terminal_bias=-1.0)
    ctrl = Controller(input_dim=Z + H)
    plain = DreamEnv(m, ctrl, max_steps=20, temperature=1.15, dropout=0.3)
    xla = DreamEnv(m, ctrl, max_steps=20, temperature=1.15, dropout=0.3, jit_compile=True)
    params, starts, worlds = _inputs(ctrl)
    a = plain.rollout(params, starts, worlds, seed=5)
    b = xla.rollout(params, starts, worlds, seed=5)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.returns, b.returns, rtol=1e-4, atol=1e-4)


def test_bad_models_and_settings_are_one_line_errors():
    ctrl = Controller(input_dim=Z + H)
    with pytest.raises(UsageError, match="no reward head"):
        DreamEnv(MDNRNN(hidden=H), ctrl, max_steps=5)
    with pytest.raises(UsageError, match="temperature"):
        DreamEnv(_model(), ctrl, max_steps=5, temperature=-1)
    with pytest.raises(UsageError, match="neither z"):
        DreamEnv(_model(), Controller(input_dim=7), max_steps=5)


def test_start_latents_are_the_series_means(tiny_world):
    import tfrecords

    firsts = start_latents(tiny_world["series"])
    eps = list(tfrecords.episodes_dataset(tiny_world["series"], kind="latents"))
    np.testing.assert_array_equal(firsts, np.stack([e["mu"].numpy()[0] for e in eps]))
    some = start_latents(tiny_world["series"], "random", per_episode=3, seed=1)
    assert some.shape == (3 * len(eps), Z)
    every = np.concatenate([e["mu"].numpy() for e in eps])
    assert all((every == row).all(-1).any() for row in some)
    np.testing.assert_array_equal(some, start_latents(tiny_world["series"], "random", per_episode=3, seed=1))
    with pytest.raises(UsageError, match="not latent series"):
        start_latents(tiny_world["rollouts"])


def test_the_dreams_noise_is_uniform_and_normal_and_the_same_under_xla():
    from wm.agents.dream import normal, uniform

    seed = tf.constant([4, 2], tf.int64)
    u, n = uniform([200_000], seed).numpy(), normal([200_000], seed).numpy()
    assert 0.0 <= u.min() and u.max() < 1.0
    np.testing.assert_allclose([u.mean(), u.var()], [0.5, 1 / 12], atol=3e-3)
    np.testing.assert_allclose([n.mean(), n.std(), (n > 1.96).mean()], [0.0, 1.0, 0.025], atol=5e-3)
    assert np.isfinite(n).all()
    xla = tf.function(lambda s: (uniform([1000], s), normal([1000], s)), jit_compile=True)(seed)
    np.testing.assert_array_equal(xla[0].numpy(), uniform([1000], seed).numpy())
    np.testing.assert_allclose(xla[1].numpy(), normal([1000], seed).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_compiled_dream_says_nothing_on_stderr():
    """In a fresh process (AutoGraph warns once per function), tracing and running dreams prints nothing: no
    AutoGraph warning, and no retracing warning for a sweep of DreamEnvs."""
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np, tensorflow as tf\n"
        "from wm.agents.dream import DreamEnv\n"
        "from wm.models.controller import Controller\n"
        "from wm.models.mdnrnn import MDNRNN\n"
        "m = MDNRNN(hidden=8, reward_head=True, terminal_head=True)\n"
        "ctrl = Controller(input_dim=32 + 8)\n"
        "rows = np.zeros((2, ctrl.num_params), np.float32)\n"
        "for tau in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):  # a sweep of settings: one DreamEnv each\n"
        "    env = DreamEnv(m, ctrl, max_steps=5, temperature=tau, done='sample')\n"
        "    print(env.rollout(rows, np.zeros((1, 32), np.float32), np.zeros(2, np.int32), seed=0).steps)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "AutoGraph" not in out.stderr and "retracing" not in out.stderr, out.stderr
    assert "WARNING:tensorflow" not in out.stderr, out.stderr


# ------------------------------------------------------------ ensembles and branched starts


def _member(seed, dropout=0.1, terminal_bias=-1.5):
    tf.keras.utils.set_random_seed(seed)
    m = MDNRNN(hidden=H, reward_head=True, terminal_head=True, dropout=dropout)
    m.terminal.bias.assign([terminal_bias])
    return m


def _ensemble_reference(env, params, starts, worlds, seed, states=None):
    """The ensemble's dream row by row, step by step: every member reads [z, a]; C reads the first's h."""
    ctrl, members, k = env.controller, env.members, len(env.members)
    seed_t = tf.constant([seed, 0], tf.int64)
    in_masks, head_masks = (x.numpy() for x in env.masks(seed_t, len(starts)))
    out = []
    for i, w in enumerate(worlds):
        z = starts[w][None]
        st = [(np.zeros((1, H), np.float32), np.zeros((1, H), np.float32)) for _ in members]
        if states is not None:
            st = [(states[w, j, 0][None], states[w, j, 1][None]) for j in range(k)]
        ret, steps = 0.0, 0
        for t in range(env.max_steps):
            u, eps = (x.numpy()[w : w + 1] for x in env.noise(seed_t, t, len(starts)))
            a = ctrl.act(params[i : i + 1], np.concatenate([z, st[0][0]], -1))
            x = np.concatenate([z, a], -1) * in_masks[w]
            rewards, logits, samples = [], [], []
            for j, m in enumerate(members):
                h, (h, c) = m.cell(x[:, :Z], x[:, Z:], st[j])
                st[j] = (h.numpy(), c.numpy())
                mix, extras = m.heads(h * head_masks[w])
                rewards.append(float(extras["reward"][0]))
                logits.append(float(extras["terminal_logit"][0]))
                samples.append(sample_z_from_noise(mix, env.temperature, u, eps).numpy())
            r = min(rewards) if env.ensemble_reward == "min" else float(np.mean(rewards))
            ret += r - env.disagreement * float(np.std(rewards))
            steps += 1
            logit = float(np.mean(logits))
            if env.done == "sample" and float(env.done_noise(seed_t, t, len(starts))[w]) < 1 / (1 + np.exp(-logit)):
                break
            if env.done == "threshold" and logit > 0:
                break
            pick = int(env.member_pick(seed_t, t, len(starts))[w]) if k > 1 else 0
            z = samples[pick]
        out.append((ret, steps))
    return np.array(out)


@pytest.mark.parametrize("reward,disagreement,done", [("mean", 0.0, "threshold"), ("min", 2.0, "sample")])
def test_an_ensemble_of_identical_members_dreams_as_its_one_member(reward, disagreement, done):
    ctrl = Controller(input_dim=Z + H)
    one = DreamEnv(_member(3), ctrl, max_steps=25, temperature=1.0, dropout=0.1, done=done)
    two = DreamEnv(
        _member(3), ctrl, 25, 1.0, 0.1, done=done, ensemble=[_member(3)], ensemble_reward=reward,
        disagreement=disagreement,
    )  # fmt: skip
    params, starts, worlds = _inputs(ctrl)
    a, b = one.rollout(params, starts, worlds, seed=4), two.rollout(params, starts, worlds, seed=4)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.terminated, b.terminated)


@pytest.mark.parametrize("reward,disagreement,done", [("mean", 0.5, "threshold"), ("min", 0.0, "sample")])
def test_an_ensemble_s_compiled_dream_equals_its_steps_one_at_a_time(reward, disagreement, done):
    ctrl = Controller(input_dim=Z + H)
    members = [_member(3), _member(5, terminal_bias=-1.0), _member(8, terminal_bias=-2.0)]
    env = DreamEnv(
        members[0], ctrl, 20, 1.0, 0.1, done=done, ensemble=members[1:], ensemble_reward=reward,
        disagreement=disagreement,
    )  # fmt: skip
    params, starts, worlds = _inputs(ctrl)
    got = env.rollout(params, starts, worlds, seed=6)
    want = _ensemble_reference(env, params, starts, worlds, 6)
    np.testing.assert_allclose(got.returns, want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.steps, want[:, 1])
    # the members' samples take turns: over the worlds and steps, every member's is picked
    picks = np.concatenate([env.member_pick(tf.constant([6, 0], tf.int64), t, 3).numpy() for t in range(20)])
    assert set(picks.tolist()) == {0, 1, 2}
    # an ensemble's reward is not its first member's: the other members count
    alone = DreamEnv(members[0], ctrl, 20, 1.0, 0.1, done=done).rollout(params, starts, worlds, seed=6)
    assert alone.returns.tolist() != got.returns.tolist()


def test_a_dream_from_given_states_equals_the_steps_one_at_a_time_from_them():
    ctrl = Controller(input_dim=Z + H)
    members = [_member(3), _member(5)]
    env = DreamEnv(members[0], ctrl, 15, 1.15, 0.1, ensemble=members[1:])
    params, starts, worlds = _inputs(ctrl)
    states = np.random.default_rng(2).normal(scale=0.3, size=(len(starts), 2, 2, H)).astype(np.float32)
    got = env.rollout(params, starts, worlds, seed=9, states=states)
    want = _ensemble_reference(env, params, starts, worlds, 9, states)
    np.testing.assert_allclose(got.returns, want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.steps, want[:, 1])
    assert got.returns.tolist() != env.rollout(params, starts, worlds, seed=9).returns.tolist()  # states count
    with pytest.raises(ValueError, match=r"must be \[worlds, members, 2, hidden\]"):
        env.rollout(params, starts, worlds, seed=9, states=states[:, :1])


def test_an_ensemble_member_of_another_shape_or_bad_settings_are_one_line():
    ctrl = Controller(input_dim=Z + H)
    other = MDNRNN(hidden=H + 1, reward_head=True, terminal_head=True)
    with pytest.raises(UsageError, match="ensemble member 1 is not M's shape"):
        DreamEnv(_member(3), ctrl, 10, ensemble=[other])
    with pytest.raises(UsageError, match="the ensemble's reward must be one of mean, min"):
        DreamEnv(_member(3), ctrl, 10, ensemble_reward="max")
    with pytest.raises(UsageError, match="disagreement penalty must be >= 0"):
        DreamEnv(_member(3), ctrl, 10, disagreement=-1.0)


def test_branch_starts_hold_each_member_s_state_after_reading_the_episode_up_to_there(dream_world):
    import tfrecords
    from tfrecords import schema
    from wm.agents.dream import branch_starts, dream_starts
    from wm.models.loading import load_mdnrnn

    m = load_mdnrnn(dream_world["mdnrnn"])
    other = MDNRNN(hidden=m.hidden, reward_head=True, terminal_head=True)  # another M of M's shape
    series = dream_world["series"]
    z, states = branch_starts([m, other], series, per_episode=3, seed=5)
    np.testing.assert_array_equal(z, start_latents(series, "random", per_episode=3, seed=5))
    assert states.shape == (len(z), 2, 2, m.hidden)
    # the first episode's picks, replayed with M's step API one step at a time
    ep = next(iter(tfrecords.episodes_dataset(tfrecords.list_shards(series), kind=schema.KIND_LATENTS)))
    mu, actions = ep["mu"].numpy(), ep["actions"].numpy()
    steps = np.random.default_rng(5).choice(len(mu), min(3, len(mu)), replace=False)
    for i, t in enumerate(steps):
        for k, model in enumerate((m, other)):
            h, c = model.initial_state(1)
            for j in range(t):
                _, (h, c) = model.cell(mu[j : j + 1], actions[j : j + 1], (h, c))
            np.testing.assert_allclose(states[i, k, 0], h.numpy()[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(states[i, k, 1], c.numpy()[0], rtol=1e-5, atol=1e-6)
    assert dream_starts(series, "first", [m])[1] is None
