"""Hand-written distributions (M's mixture, PPO's squashed Gaussian) against TensorFlow Probability's, same run.

    python benchmarks/bench_tfp.py [--batch=8] [--seq_len=999] [--rounds=5] [--policy=float32] [--jit]

Decides whether ``tensorflow-probability`` (and ``tf-keras``, which it needs to import) earns its
place in the dependencies. Everything runs in one process, each comparison in alternating rounds
so machine load hits both sides alike; medians, per-round ratios and their range are printed.

1. Numerics against float64 NumPy on random inputs: M's per-dimension mixture log-likelihood
   (:func:`wm.models.mdnrnn.mixture_log_prob` against ``tfd.MixtureSameFamily(Categorical, Normal)``)
   with ordinary and extreme (1e4) logits and clipped tiny sigmas, and its gradients; PPO's
   squashed-Gaussian log-density (:func:`wm.models.actor_critic.log_prob`, from the pre-squash u) against
   ``tfd.TransformedDistribution(Normal, Shift . Scale . Tanh)`` (from the action, as TFP's API takes
   it, and from u through the bijector's log-det-Jacobian), on random draws, at the action bounds
   (TensorFlow's float32 tanh returns exactly +-1 from |u| = 7.9) and near them.
2. M's train step (``wm.training.trainer.Trainer.train_steps``, the paper's sizes, the generic
   LSTM kernel that XLA can compile) with the hand-written mixture NLL against the TFP one; same
   weights, so the first losses must agree too. ``--jit`` XLA-compiles both; ``--policy=mixed_bfloat16``
   runs both in bfloat16.
3. M's sampling with the paper's temperature (logits / tau, sigma * sqrt(tau)) for 1024 dream rows:
   :func:`wm.models.mdnrnn.sample_z` against ``MixtureSameFamily.sample``, with and without XLA.
4. PPO: log-prob plus gradient for a 256-step minibatch through the actor, and the acting step
   (sample, squash, log-prob) for 16 environments, hand-written against TFP.
5. What ``import tensorflow_probability`` (which imports ``tf_keras``) adds to a fresh interpreter
   after ``import tensorflow``: seconds, resident memory, modules.

Needs ``pip install 'tensorflow-probability>=0.25,<0.26' 'tf-keras>=2.21,<2.22'`` where the project
does not install them (they are used nowhere else).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for tests/

__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tests.wm.test_mdnrnn import np_log_prob  # the tests' float64 reference
from wm.core import distribute
from wm.models import actor_critic, mdnrnn
from wm.models.mdnrnn import Mixture
from wm.training.trainer import LoopConfig, Task, Trainer

tfd, tfb = tfp.distributions, tfp.bijectors
Z, A = mdnrnn.Z_SIZE, mdnrnn.ACTION_SIZE


# ---------------------------------------------------------------- the TFP versions


def tfp_mixture(mix: Mixture, temperature: float = 1.0) -> tfd.Distribution:
    """M's per-dimension mixture as ``MixtureSameFamily`` (batch shape [..., Z]), tempered as the paper does."""
    log_std = tf.clip_by_value(mix.log_std, mdnrnn.LOG_STD_MIN, mdnrnn.LOG_STD_MAX)
    return tfd.MixtureSameFamily(
        tfd.Categorical(logits=mix.logits / temperature), tfd.Normal(mix.mu, tf.exp(log_std) * math.sqrt(temperature))
    )


def tfp_mixture_log_prob(mix: Mixture, z: tf.Tensor) -> tf.Tensor:
    """TFP's counterpart of :func:`wm.models.mdnrnn.mixture_log_prob`: log p(z) [..., Z]."""
    return tfp_mixture(mix).log_prob(tf.cast(z, tf.float32))


def tfp_sample_z(mix: Mixture, temperature: float, seed: tf.Tensor) -> tf.Tensor:
    """TFP's counterpart of :func:`wm.models.mdnrnn.sample_z` (temperature > 0)."""
    return tfp_mixture(mix, temperature).sample(seed=seed)


def _squash_bijector() -> tfb.Bijector:
    return tfb.Chain([tfb.Shift(actor_critic.OFFSET), tfb.Scale(actor_critic.SCALE), tfb.Tanh()])


def tfp_policy(mean: tf.Tensor, log_std: tf.Tensor) -> tfd.Distribution:
    """PPO's policy as TFP writes it: Independent(TransformedDistribution(Normal, Shift . Scale . Tanh), 1)."""
    return tfd.Independent(tfd.TransformedDistribution(tfd.Normal(mean, tf.exp(log_std)), _squash_bijector()), 1)


def tfp_log_prob_of_action(u: tf.Tensor, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
    """TFP's ``log_prob`` of the action a = squash(u) (what its API takes: it inverts the tanh)."""
    return tfp_policy(mean, log_std).log_prob(actor_critic.squash_action(u))


def tfp_log_prob_of_u(u: tf.Tensor, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
    """TFP pieces applied to the stored pre-squash u: Normal log-density minus the bijector's log-det-Jacobian."""
    ldj = _squash_bijector().forward_log_det_jacobian(u, event_ndims=1)
    return tf.reduce_sum(tfd.Normal(mean, tf.exp(log_std)).log_prob(u), axis=-1) - ldj


# ---------------------------------------------------------------- float64 references


def np_mixture_grads(logits, mu, log_std, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 analytic gradients of sum(log p(z)) w.r.t. (logits, mu, log_std), log_std inside the clip."""
    logits, mu, log_std, z = (np.asarray(a, np.float64) for a in (logits, mu, log_std, z))
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    d = (z[..., None] - mu) / np.exp(log_std)
    a = np.log(w) - 0.5 * d**2 - log_std
    r = np.exp(a - a.max(-1, keepdims=True))
    r /= r.sum(-1, keepdims=True)  # posterior responsibilities
    return r - w, r * d / np.exp(log_std), r * (d**2 - 1.0)


def np_squashed_log_prob(u, mean, log_std) -> np.ndarray:
    """float64 log-density [...] of squash(u) for u ~ N(mean, exp(log_std)^2), exact for |u| < 700."""
    u, mean, log_std = (np.asarray(x, np.float64) for x in (u, mean, log_std))
    gauss = -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    log_det = np.log(actor_critic.SCALE.astype(np.float64)) + np.log(4.0) - 2.0 * np.log(np.exp(u) + np.exp(-u))
    return (gauss - log_det).sum(-1)


# ---------------------------------------------------------------- 1. numerics


def _f32(*arrays):
    return [tf.constant(np.asarray(a), tf.float32) for a in arrays]


def mixture_numerics() -> None:
    """Prints max errors of both mixture log-likelihoods and their gradients against float64."""
    shape = (4, 7, Z, mdnrnn.MIXTURES)
    for scale in (1.0, 1e4):
        rng = np.random.default_rng(int(scale))
        logits = rng.normal(size=shape) * scale
        mu = rng.normal(size=shape)
        log_std = rng.normal(size=shape) * 3 - 2
        log_std[0, 0] = -40.0  # tiny sigmas, clipped
        z = rng.normal(size=shape[:-1])
        want = np_log_prob(logits, mu, log_std, z)
        tol = 2e-3 * max(1.0, np.abs(want).max() * 1e-5)  # tests/wm/test_mdnrnn.py's tolerance (with rtol 2e-4)
        for name, fn in (("hand", mdnrnn.mixture_log_prob), ("tfp", tfp_mixture_log_prob)):
            got = fn(Mixture(*_f32(logits, mu, log_std)), *_f32(z)).numpy()
            err = np.abs(got - want)
            rel = err / np.maximum(np.abs(want), 1.0)
            ok = np.all(np.isfinite(got)) and np.all(err <= tol + 2e-4 * np.abs(want))
            print(
                f"mixture log p, logits x{scale:g}: {name:4s} max |err| / max(|log p|, 1) {rel.max():.1e} "
                f"(max |err| {err.max():.1e} at |log p| up to {np.abs(want).max():.0e}), "
                f"finite {np.isfinite(got).all()}, within tests/wm/test_mdnrnn.py's tolerance {ok}"
            )
    rng = np.random.default_rng(7)
    logits, mu, z = rng.normal(size=shape) * 2, rng.normal(size=shape), rng.normal(size=shape[:-1])
    log_std = rng.uniform(-3, 1, size=shape)
    want = np_mixture_grads(logits, mu, log_std, z)
    for name, fn in (("hand", mdnrnn.mixture_log_prob), ("tfp", tfp_mixture_log_prob)):
        params = [tf.Variable(a) for a in _f32(logits, mu, log_std)]
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(fn(Mixture(*params), *_f32(z)))
        grads = tape.gradient(total, params)
        errs = [np.abs(g.numpy() - w).max() for g, w in zip(grads, want)]
        print(f"mixture gradients: {name:4s} max |err| logits {errs[0]:.1e}, mu {errs[1]:.1e}, log_std {errs[2]:.1e}")


def squash_numerics() -> None:
    """Prints finiteness and max errors of the squashed-Gaussian log-densities against float64."""
    fns = {"hand(u)": actor_critic.log_prob, "tfp(a)": tfp_log_prob_of_action, "tfp(u)": tfp_log_prob_of_u}
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(4096, 3))
    log_std = rng.uniform(-2, 1, size=(4096, 3))
    u = mean + np.exp(log_std) * rng.normal(size=(4096, 3))
    cases = {"random draws": (u, mean, log_std)}
    # |u| bands per dimension, sign random: from the interior up to float32's tanh saturation and past it
    for lo, hi in ((0, 2), (2, 5), (5, 8), (8, 9), (9, 12), (12, 40)):
        uu = rng.uniform(lo, hi, size=(4096, 3)) * rng.choice([-1.0, 1.0], size=(4096, 3))
        cases[f"|u| in [{lo}, {hi})"] = (uu, uu - rng.normal(size=(4096, 3)), np.full((4096, 3), -0.5))
    for case, (uu, m, s) in cases.items():
        uu, m, s = (np.asarray(x, np.float32) for x in (uu, m, s))
        want = np_squashed_log_prob(uu, m, s)
        parts = []
        for name, fn in fns.items():
            got = fn(*_f32(uu, m, s)).numpy()
            fin = np.isfinite(got)
            err = np.abs(got[fin] - want[fin]).max() if fin.any() else float("nan")
            parts.append(f"{name} {100 * fin.mean():5.1f}% finite, max |err| {err:.1e}")
        a = actor_critic.squash_action(tf.constant(uu)).numpy()
        at_bound = np.mean(np.any((a <= actor_critic.ACTION_LOW) | (a >= actor_critic.ACTION_HIGH), axis=-1))
        print(f"squashed log p, {case:15s} ({100 * at_bound:5.1f}% of actions on a bound): " + "; ".join(parts))
    # acting with a saturated mean: log_prob of the tensor sample() returned can use the bijector's cache
    # (no inverse), but not through Independent (its sample is a new tensor), and never in the update,
    # which recomputes log p of the stored action (a fresh tensor) under the new weights
    mean = np.tile(np.array([[12.0, -12.0, 12.0]], np.float32), (1024, 1))
    m, s = _f32(mean, np.full_like(mean, -0.5))
    outer = tfd.TransformedDistribution(tfd.Independent(tfd.Normal(m, tf.exp(s)), 1), _squash_bijector())
    for name, dist in (("Independent(Transformed)", tfp_policy(m, s)), ("Transformed(Independent)", outer)):
        a = dist.sample(seed=tf.constant([3, 4], tf.int32))
        cached, stored = dist.log_prob(a).numpy(), dist.log_prob(tf.constant(a.numpy())).numpy()
        print(
            f"tfp acting at a saturated mean (u ~ N(+-12, 0.6)), {name}: log p of the sampled tensor "
            f"{100 * np.isfinite(cached).mean():.1f}% finite; of the same actions from storage "
            f"{100 * np.isfinite(stored).mean():.1f}% finite"
        )
    # actions given directly at and near the bounds (what TFP's log_prob takes): steering +-1, gas/brake 0 and 1
    mean, log_std = np.zeros((1, 3), np.float32), np.full((1, 3), -0.5, np.float32)
    for delta in (0.0, 1e-7, 1e-6, 1e-4, 1e-2):
        for side in ("low", "high"):
            a = (actor_critic.ACTION_LOW + delta) if side == "low" else (actor_critic.ACTION_HIGH - delta)
            a = np.asarray(a, np.float32)[None]
            got = tfp_policy(*_f32(mean, log_std)).log_prob(a).numpy()[0]
            want = float("-inf")  # the density's limit at a bound
            if delta:
                want = np_squashed_log_prob(
                    np.arctanh((a.astype(np.float64) - actor_critic.OFFSET) / actor_critic.SCALE), mean, log_std
                )[0]
            where = f"{side} bound {'+' if side == 'low' else '-'} {delta:g}"
            print(f"tfp(a) at {where:18s}: log p {got:.4f} (float64 at that float32 action: {want:.4f})")


# ---------------------------------------------------------------- timing helpers


def alternate(fns: dict[str, Callable[[], float]], rounds: int, unit: str, label: str) -> dict[str, list[float]]:
    """Calls each fn (which returns seconds) once per round, in turn; prints each round and the summary."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:  # alternate the order too
            times[k].append(fns[k]())
        print(f"  {label} round {r}: " + ", ".join(f"{k} {times[k][-1] * 1e3:.2f} ms/{unit}" for k in names))
    base = names[0]
    for k in names[1:]:
        ratios = [t / b for t, b in zip(times[k], times[base])]
        print(
            f"{label}: {base} {statistics.median(times[base]) * 1e3:.2f} ms/{unit}, {k} "
            f"{statistics.median(times[k]) * 1e3:.2f} ms/{unit}; {k}/{base} median of per-round ratios "
            f"{statistics.median(ratios):.3f}x (range {min(ratios):.3f}-{max(ratios):.3f}, {rounds} rounds)"
        )
    return times


def per_call(fn: Callable[[], object], calls: int) -> Callable[[], float]:
    """A timer: seconds per call of ``fn`` (which must block until its result is ready) over ``calls`` calls."""

    def run() -> float:
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t) / calls

    return run


# ---------------------------------------------------------------- 2. M's train step


def m_loss_fn(log_prob: Callable) -> Callable:
    """The loss ``sequence_loss_terms`` optimizes (no reward or terminal head) with ``log_prob`` as the mixture."""

    def loss(model, b, training):
        z, actions, mask = b["mu"], b["actions"], b["mask"]
        x = tf.concat([z[:, :-1], actions[:, :-1]], axis=-1)
        m = mask[:, 1:]
        _, mix, _ = model(x, training=training)
        nll = -tf.reduce_mean(log_prob(mix, z[:, 1:]), axis=-1)
        return {"loss": tf.reduce_sum(nll * m, axis=1) / tf.cast(tf.shape(m)[1], tf.float32)}

    return loss


def m_train_step(args) -> None:
    """Times M's train step with both mixture NLLs, alternating; checks they start from the same loss."""
    rng = np.random.default_rng(0)
    w = args.seq_len + 1
    batch = {
        "mu": rng.normal(size=(args.batch, w, Z)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(args.batch, w, A)).astype(np.float32),
        "mask": np.ones((args.batch, w), np.float32),
    }
    batch["mask"][0, w // 2 :] = 0  # one padded window
    const = {k: tf.constant(v) for k, v in batch.items()}
    setup = distribute.Setup(tf.distribute.get_strategy(), "CPU", args.policy, args.jit)
    cfg = LoopConfig(workdir="unused", steps=args.steps, batch_size=args.batch, learning_rate=1e-3, clip_norm=1.0)
    trainers, weights = {}, None
    for name, fn in (("hand", mdnrnn.mixture_log_prob), ("tfp", tfp_mixture_log_prob)):
        task = Task(
            "mdnrnn",
            {},
            lambda p: mdnrnn.MDNRNN(dtype_policy=p, use_cudnn=False),
            m_loss_fn(fn),
            lambda ctx: tf.data.Dataset.from_tensors(const).repeat(),
        )
        trainers[name] = Trainer(task, setup, cfg)
        if weights is None:
            weights = trainers[name].model.get_weights()
        else:
            trainers[name].model.set_weights(weights)
    # same weights: the loss (also against sequence_loss_terms and float64 NumPy) and gradients must agree
    model = trainers["hand"].model
    ref_terms = mdnrnn.sequence_loss_terms(model, const["mu"], const["actions"], const["mask"], training=False)
    x = tf.concat([const["mu"][:, :-1], const["actions"][:, :-1]], -1)
    _, mix, _ = model(x)
    lp = np_log_prob(*(t.numpy() for t in mix), batch["mu"][:, 1:])
    np_loss = ((-lp.mean(-1) * batch["mask"][:, 1:]).sum(1) / args.seq_len).mean()
    grads = {}
    for name, tr in trainers.items():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tr.task.loss_fn(tr.model, const, False)["loss"])
        grads[name] = tape.gradient(loss, tr.model.trainable_variables)
        print(
            f"M loss at the same weights ({args.policy}): {name} {float(loss):.6f}, "
            f"sequence_loss_terms {float(tf.reduce_mean(ref_terms['loss'])):.6f}, float64 NumPy {np_loss:.6f}"
        )
    diff = math.sqrt(sum(float(tf.reduce_sum(tf.square(a - b))) for a, b in zip(grads["hand"], grads["tfp"])))
    norm = math.sqrt(sum(float(tf.reduce_sum(tf.square(a))) for a in grads["hand"]))
    print(f"M gradient: |tfp - hand| / |hand| = {diff / norm:.1e}")
    n = tf.constant(args.steps, tf.int64)
    fns = {}
    for name, tr in trainers.items():
        it = iter(setup.strategy.distribute_datasets_from_function(tr.task.train_data))
        t = time.perf_counter()
        first = float(tr.train_steps(it, n)["loss"])  # compile and warm up
        print(
            f"M {name}: first call (trace/compile + {args.steps} steps) {time.perf_counter() - t:.1f} s, loss {first}"
        )
        fns[name] = per_call(lambda tr=tr, it=it: float(tr.train_steps(it, n)["loss"]), 1)
    times = alternate(fns, args.rounds, f"{args.steps} steps", f"M train step (batch {args.batch} x {args.seq_len})")
    for name in trainers:
        print(f"  M {name}: {args.steps * args.batch / statistics.median(times[name]):.2f} sequences/s")


# ---------------------------------------------------------------- 3. M's sampling


def m_sampling(args) -> None:
    """Times sampling z for 1024 dream rows at temperature 1.15, hand-written vs TFP, without and with XLA."""
    rng = np.random.default_rng(3)
    shape = (1024, Z, mdnrnn.MIXTURES)
    mix = Mixture(*_f32(rng.normal(size=shape), rng.normal(size=shape), rng.uniform(-2, 0, size=shape)))
    tau = 1.15
    fns: dict[str, dict[str, Callable[[], float]]] = {"graph": {}, "XLA": {}}
    for jit in (False, True):
        tag = "XLA" if jit else "graph"
        hand = tf.function(lambda s: mdnrnn.sample_z(mix, tau, seed=s), jit_compile=jit)
        tfp_fn = tf.function(lambda s: tfp_sample_z(mix, tau, s), jit_compile=jit)
        for name, fn in (("hand", hand), ("tfp", tfp_fn)):
            seed = tf.constant([1, 2])
            try:
                fn(seed).numpy()
            except Exception as e:  # noqa: BLE001  (report, do not stop the benchmark)
                print(f"M sampling {name} ({tag}): FAILED to compile: {type(e).__name__}: {str(e).splitlines()[0]}")
                continue
            fns[tag][name] = per_call(lambda fn=fn, seed=seed: fn(seed).numpy(), 50)
    # moments at tau: both must match the tempered mixture's mean and variance
    w = tf.nn.softmax(mix.logits[:1] / tau).numpy()[0].astype(np.float64)
    m, s = mix.mu.numpy()[0].astype(np.float64), np.exp(mix.log_std.numpy()[0]) * math.sqrt(tau)
    want_mean, want_var = (w * m).sum(-1), (w * (s**2 + m**2)).sum(-1) - (w * m).sum(-1) ** 2
    many = Mixture(*(tf.repeat(t[:1], 20000, axis=0) for t in mix))
    for name, draw in (
        ("hand", mdnrnn.sample_z(many, tau, seed=tf.constant([4, 5]))),
        ("tfp", tfp_sample_z(many, tau, tf.constant([4, 5]))),
    ):
        d = draw.numpy().astype(np.float64)
        print(
            f"M sampling {name}: max |mean - tempered mean| {np.abs(d.mean(0) - want_mean).max():.3f}, "
            f"max |var / tempered var - 1| {np.abs(d.var(0) / want_var - 1).max():.3f} (20000 draws)"
        )
    same = np.array_equal(
        mdnrnn.sample_z(mix, tau, seed=tf.constant([1, 2])), tfp_sample_z(mix, tau, tf.constant([1, 2]))
    )
    print(f"M sampling: TFP's draws equal sample_z's for the same seed: {same} (the dream needs sample_z_from_noise's)")
    for tag, sub in fns.items():
        if len(sub) == 2:
            alternate(sub, args.rounds, "call", f"M sampling 1024 x {Z} at tau {tau} ({tag})")


# ---------------------------------------------------------------- 4. PPO


def ppo_timing(args) -> None:
    """Times PPO's log-prob + gradient (minibatch 256) and its acting step (16 envs), hand-written vs TFP."""
    keras.utils.set_random_seed(0)
    model = actor_critic.ActorCritic(Z + mdnrnn.HIDDEN)
    rng = np.random.default_rng(5)
    feats = tf.constant(rng.normal(size=(256, Z + mdnrnn.HIDDEN)), tf.float32)
    mean0, log_std0, _ = model(feats)
    u = mean0 + tf.exp(log_std0) * tf.constant(rng.normal(size=(256, 3)), tf.float32)

    def grad_fn(log_prob):
        @tf.function
        def step(feats, u):
            with tf.GradientTape() as tape:
                mean, log_std, _ = model(feats)
                loss = -tf.reduce_mean(log_prob(u, mean, log_std))
            return loss, tape.gradient(loss, model.actor_variables)

        return step

    steps = {
        "hand": grad_fn(actor_critic.log_prob),
        "tfp(a)": grad_fn(tfp_log_prob_of_action),
        "tfp(u)": grad_fn(tfp_log_prob_of_u),
    }
    losses = {k: float(f(feats, u)[0]) for k, f in steps.items()}
    print("PPO minibatch -mean log p: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))
    alternate(
        {k: per_call(lambda f=f: f(feats, u)[0].numpy(), args.ppo_calls) for k, f in steps.items()},
        args.rounds, "call", "PPO log-prob + gradient, minibatch 256",
    )  # fmt: skip

    obs = feats[:16]
    gen = tf.random.Generator.from_seed(0)

    @tf.function
    def act_hand(feats):
        mean, log_std, _ = model(feats)
        uu = mean + tf.exp(log_std) * gen.normal(tf.shape(mean))
        return actor_critic.squash_action(uu), actor_critic.log_prob(uu, mean, log_std)

    @tf.function
    def act_tfp(feats):
        mean, log_std, _ = model(feats)
        dist = tfp_policy(mean, log_std)
        a = dist.sample(seed=tf.cast(gen.make_seeds(1)[:, 0], tf.int32))
        return a, dist.log_prob(a)  # the bijector's cache gives log p from the pre-squash sample

    for f in (act_hand, act_tfp):
        f(obs)
    alternate(
        {"hand": per_call(lambda: act_hand(obs)[1].numpy(), args.ppo_calls),
         "tfp": per_call(lambda: act_tfp(obs)[1].numpy(), args.ppo_calls)},
        args.rounds, "call", "PPO acting step (sample, squash, log p), 16 envs",
    )  # fmt: skip


# ---------------------------------------------------------------- 5. import time


_IMPORT_PROBE = """
import sys, time
def rss():  # resident MB now (Linux)
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
t0 = time.perf_counter()
import tensorflow
t1 = time.perf_counter()
rss0, mods = rss(), len(sys.modules)
import tensorflow_probability
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, rss0, rss(), mods, len(sys.modules))
"""


def import_time(rounds: int) -> None:
    """What ``import tensorflow_probability`` adds to a fresh interpreter that has imported TensorFlow."""
    rows = []
    for r in range(rounds):
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], check=True, capture_output=True, text=True)
        tf_s, tfp_s, rss0, rss1, m0, m1 = (float(x) for x in out.stdout.split())
        rows.append((tf_s, tfp_s, rss1 - rss0, m1 - m0))
        print(f"  import round {r}: tensorflow {tf_s:.2f} s, then tensorflow_probability +{tfp_s:.2f} s")
    tf_s, tfp_s, rss, mods = (statistics.median(c) for c in zip(*rows))
    print(
        f"import: tensorflow {tf_s:.2f} s; tensorflow_probability (with tf_keras) adds {tfp_s:.2f} s "
        f"({100 * tfp_s / tf_s:.0f}%), {rss:.0f} MB resident memory and {mods:.0f} modules (medians of {rounds})"
    )


def main() -> None:
    """Parse arguments, run the sections, print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="M: sequences per train step")
    p.add_argument("--seq_len", type=int, default=999, help="M: steps per sequence")
    p.add_argument("--steps", type=int, default=3, help="M: train steps per timed call (--steps_per_loop)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--policy", default="float32", help="M: Keras dtype policy, float32 or mixed_bfloat16")
    p.add_argument("--jit", action="store_true", help="M: XLA-compile the train step (both sides)")
    p.add_argument("--ppo_calls", type=int, default=200, help="PPO: calls per timed round")
    p.add_argument("--import_rounds", type=int, default=3, help="0 skips the import timing")
    p.add_argument("--only", default="numerics,m,sampling,ppo,import", help="comma-separated sections to run")
    a = p.parse_args()
    only = set(a.only.split(","))
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, TFP {tfp.__version__}, {os.cpu_count()} cores")
    if "numerics" in only:
        mixture_numerics()
        squash_numerics()
    if "m" in only:
        m_train_step(a)
    if "sampling" in only:
        m_sampling(a)
    if "ppo" in only:
        ppo_timing(a)
    if "import" in only and a.import_rounds:
        import_time(a.import_rounds)


if __name__ == "__main__":
    main()
