"""MDN-RNN: size, likelihood against a float64 reference, temperature, masking, step API."""

import numpy as np
import pytest
import tensorflow as tf

from wm.models import mdnrnn
from wm.models.mdnrnn import MDNRNN, Mixture


def np_log_prob(logits, mu, log_std, z):
    """float64 reference: log sum_k w_k N(z; mu_k, sigma_k) per dimension, with the model's clip."""
    logits, mu, z = (np.asarray(a, np.float64) for a in (logits, mu, z))
    log_std = np.clip(np.asarray(log_std, np.float64), mdnrnn.LOG_STD_MIN, mdnrnn.LOG_STD_MAX)
    log_w = logits - logits.max(-1, keepdims=True)
    log_w -= np.log(np.exp(log_w).sum(-1, keepdims=True))
    a = log_w - 0.5 * ((z[..., None] - mu) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    amax = a.max(-1, keepdims=True)
    return (amax + np.log(np.exp(a - amax).sum(-1, keepdims=True)))[..., 0]


def test_parameter_count_is_the_papers():
    assert MDNRNN().count_params() == 422_368
    assert MDNRNN(reward_head=True, terminal_head=True).count_params() == 422_368 + 2 * 257


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_log_prob_matches_float64_reference(scale):
    rng = np.random.default_rng(int(scale))
    shape = (4, 7, 32, 5)
    logits = rng.normal(size=shape) * scale  # 1e4: extreme logits
    mu = rng.normal(size=shape)
    log_std = rng.normal(size=shape) * 3 - 2
    log_std[0, 0] = -40.0  # tiny sigmas, clipped
    z = rng.normal(size=shape[:-1])
    got = mdnrnn.mixture_log_prob(
        Mixture(*(tf.constant(a, tf.float32) for a in (logits, mu, log_std))), tf.constant(z, tf.float32)
    ).numpy()
    want = np_log_prob(logits, mu, log_std, z)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-3 * max(1.0, np.abs(want).max() * 1e-5))


def test_loss_is_finite_and_masked():
    model = MDNRNN()
    rng = np.random.default_rng(0)
    z = tf.constant(rng.normal(size=(3, 9, 32)), tf.float32)
    a = tf.constant(rng.uniform(-1, 1, size=(3, 9, 3)), tf.float32)
    mask = np.ones((3, 9), np.float32)
    mask[1, 5:] = 0  # episode 1 ends after step 4
    full = mdnrnn.sequence_loss_terms(model, z, a, tf.constant(mask))["z_nll"].numpy()
    # changing anything past the end must not change the loss
    z2 = z.numpy().copy()
    z2[1, 5:] = 1e3
    a2 = a.numpy().copy()
    a2[1, 5:] = 7.0
    again = mdnrnn.sequence_loss_terms(model, tf.constant(z2), tf.constant(a2), tf.constant(mask))["z_nll"].numpy()
    np.testing.assert_allclose(again, full, rtol=1e-6)
    # and equals the reference over the real steps only
    x = tf.concat([z[:, :-1], a[:, :-1]], -1)
    _, mix, _ = model(x)
    lp = np_log_prob(*(t.numpy() for t in mix), z.numpy()[:, 1:])  # [3, 8, 32]
    nll = -lp.mean(-1) * mask[:, 1:]
    np.testing.assert_allclose(full, nll.sum(1) / mask[:, 1:].sum(1), rtol=1e-4)  # reported: per real step
    loss = mdnrnn.sequence_loss_terms(model, z, a, tf.constant(mask))["loss"].numpy()
    np.testing.assert_allclose(loss, nll.sum(1) / 8, rtol=1e-4)  # optimized: over the window length


def test_reward_and_terminal_heads_train_on_every_real_step_including_the_last():
    """A toy window: episode 0 ends at step 4 (terminal, reward -100); its z_5 is padding. The reward and
    terminal terms must count steps 0..4 (the current step's mask), so the only positive terminal
    target and the -100 are in the loss; steps past the end are not."""
    model = MDNRNN(hidden=16, reward_head=True, terminal_head=True)
    rng = np.random.default_rng(1)
    T = 8
    z = tf.constant(rng.normal(size=(2, T + 1, 32)), tf.float32)
    a = tf.constant(rng.uniform(-1, 1, size=(2, T + 1, 3)), tf.float32)
    mask = np.ones((2, T + 1), np.float32)
    mask[0, 5:] = 0  # steps 0..4 are real
    rewards = np.zeros((2, T + 1), np.float32)
    terminals = np.zeros((2, T + 1), np.float32)
    rewards[0, 4], terminals[0, 4] = -100.0, 1.0  # the last step leaves the playfield
    rewards[0, 6], terminals[0, 6] = 55.0, 1.0  # padding: must not count
    terms = mdnrnn.sequence_loss_terms(
        model, z, a, tf.constant(mask), tf.constant(rewards), tf.constant(terminals), training=False
    )
    x = tf.concat([z[:, :-1], a[:, :-1]], -1)
    _, _, extras = model(x, training=False)
    r_hat = extras["reward"].numpy().astype(np.float64)
    logit = extras["terminal_logit"].numpy().astype(np.float64)
    now = mask[:, :-1].astype(np.float64)  # step t is real
    want_mse = ((r_hat - rewards[:, :-1]) ** 2 * now).sum(1) / T
    y = terminals[:, :-1].astype(np.float64)
    ce = np.maximum(logit, 0) - logit * y + np.log1p(np.exp(-np.abs(logit)))
    want_ce = (ce * now).sum(1) / T
    np.testing.assert_allclose(terms["reward_mse"].numpy(), want_mse, rtol=1e-5)
    np.testing.assert_allclose(terms["terminal_ce"].numpy(), want_ce, rtol=1e-5)
    # the last real step is in: its -100 alone is most of episode 0's squared error
    assert terms["reward_mse"].numpy()[0] > (100.0 - abs(r_hat[0, 4])) ** 2 / T * 0.99
    # and the next-step mask (the old bug) would have given a different number
    old = ((r_hat - rewards[:, :-1]) ** 2 * mask[:, 1:]).sum(1) / T
    assert abs(old[0] - want_mse[0]) > 100


def test_under_bfloat16_the_lstm_is_16_bit_and_the_heads_float32():
    model = MDNRNN(hidden=16, reward_head=True, terminal_head=True, dtype_policy="mixed_bfloat16")
    assert model.lstm.compute_dtype == "bfloat16"
    for head in (model.mdn, model.reward, model.terminal):
        assert head.compute_dtype == "float32" and head.kernel.dtype == "float32"
    x = tf.random.stateless_normal([2, 5, 35], seed=[0, 1])
    h, mix, extras = model(x)
    assert all(t.dtype == tf.float32 for t in (*mix, extras["reward"], extras["terminal_logit"]))
    # the head is exactly a float32 affine map of the (16-bit) LSTM output
    want = tf.cast(h, tf.float32) @ model.mdn.kernel + model.mdn.bias
    got = tf.cast(model.mdn(h), tf.float32)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_temperature_semantics():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 32, 5)).astype(np.float32)
    mu = rng.normal(size=(2, 32, 5)).astype(np.float32)
    log_std = np.full((2, 32, 5), -1.0, np.float32)
    mix = Mixture(tf.constant(logits), tf.constant(mu), tf.constant(log_std))
    best = np.take_along_axis(mu, logits.argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(mdnrnn.sample_z(mix, 0.0).numpy(), best)
    near0 = mdnrnn.sample_z(mix, 1e-4, seed=tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(near0, best, atol=0.05)  # tau -> 0 concentrates on that mean
    # at tau = 1 the sample moments match the mixture's; larger tau spreads further
    many = Mixture(*(tf.repeat(t[:1], 4000, axis=0) for t in mix))
    s1 = mdnrnn.sample_z(many, 1.0, seed=tf.constant([3, 4])).numpy()
    w = np.exp(logits[0]) / np.exp(logits[0]).sum(-1, keepdims=True)
    mean = (w * mu[0]).sum(-1)
    np.testing.assert_allclose(s1.mean(0), mean, atol=0.1)
    s2 = mdnrnn.sample_z(many, 2.0, seed=tf.constant([3, 4])).numpy()
    assert s2.std(0).mean() > s1.std(0).mean()
    with pytest.raises(ValueError):
        mdnrnn.sample_z(mix, -1.0)


def test_temperature_scales_the_standard_deviation_by_its_square_root():
    """Five identical components (so the component draw does not matter), sigma = 0.5: at tau = 4 the
    paper's sampling gives std sigma * sqrt(tau) = 1.0, not sigma * tau = 2.0."""
    n, sigma = 20_000, 0.5
    mix = Mixture(tf.zeros([n, 32, 5]), tf.fill([n, 32, 5], 3.0), tf.fill([n, 32, 5], float(np.log(sigma))))
    for tau in (0.25, 1.0, 4.0):
        z = mdnrnn.sample_z(mix, tau, seed=tf.constant([5, 6])).numpy()
        np.testing.assert_allclose(z.mean(), 3.0, atol=0.01)
        np.testing.assert_allclose(z.std(), sigma * np.sqrt(tau), rtol=0.01)


def test_step_api_equals_full_sequence():
    model = MDNRNN(reward_head=True)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 6, 32)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(5, 6, 3)).astype(np.float32)
    h_seq, mix_seq, _ = model(tf.concat([z, a], -1))
    state = model.initial_state(5)
    for t in range(6):
        h, state, mix = model.step(z[:, t], a[:, t], state)
        np.testing.assert_allclose(h.numpy(), h_seq[:, t].numpy(), atol=1e-5)
        for got, want in zip(mix, mix_seq):
            np.testing.assert_allclose(got.numpy(), want[:, t].numpy(), atol=1e-4)
