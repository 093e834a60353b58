"""The dream: N episodes of C acting inside M at once, as one compiled call.

Each dream episode starts from a real z (V's mean of a real frame, from a latent series) with
M's state at zero, as a real episode does. Per step t, for every row at once:

1. C acts on [z_t, h] (or z_t alone) with the row's own parameters (the batched matmul of the
   real agent);
2. M's LSTM reads [z_t, a_t]; its heads read the new h_t and give the mixture of z_{t+1}, the
   reward r_t and the terminal logit;
3. r_t is added to the row's return while the row is alive; the episode ends after step t when
   the terminal head's probability is above 1/2 (``done="threshold"``, the default: an ending is M's
   prediction, not a coin flip) or, with ``done="sample"``, when a uniform draw of the world falls
   below that probability (a Bernoulli ending, as "Dropout's Dream Land" samples it), or at
   ``max_steps``. With no terminal head, episodes run to ``max_steps``;
4. z_{t+1} is sampled with temperature tau (:func:`wm.models.mdnrnn.sample_z_from_noise`: the
   paper's logits / tau, standard deviations * sqrt(tau); tau = 0 is the deterministic dream).

The whole rollout is one ``tf.while_loop`` inside a ``tf.function`` (no Python per step), which
XLA can compile (``jit_compile=True``), so the same call runs on GPUs and TPUs.

Noise and dropout are **per dream world**: each row names a world (``worlds[i]``, an index into
the start latents), and all rows of one world share its start z, its sampling noise at every
step and its dropout masks. CMA-ES gives every population member the same worlds (common random
numbers, as real training gives them the same tracks), and a row's episode does not depend on
which other rows share the batch. Dropout (``dropout`` > 0): masks on M's LSTM input and on h
where the heads read it, drawn once per world and held for its whole episode ("Dropout's Dream
Land", Wellmer & Kwok 2021), the same places M trains them (:class:`wm.models.mdnrnn.MDNRNN`).
Everything random is a stateless function of ``seed``.

**An ensemble of M's** (``ensemble``: more M's of the same sizes and heads, e.g. trained with other
seeds) is a remedy against C exploiting one M's errors. C reads the agent's own M's h (the first
member: C is linear in that M's h, and the others' h mean nothing to it); every member reads the
same [z_t, a_t] with its own state. The step's reward is the members' mean (``ensemble_reward="mean"``)
or their most pessimistic (``"min"``), less ``disagreement`` times their standard deviation; the
ending reads the members' mean terminal logit; z_{t+1} is the sample of one member drawn per world
and step (its own noise stream: the z noise is every member's). Identical members dream as one.

**Branched dreams** (:func:`branch_starts`, ``--dream_start=branch``): a dream world may start from
a real state of a recorded episode, z_t with every member's (h, c) after reading the episode up to
t, instead of a zero state; short horizons (``max_steps``) then score C where the agent really goes
(MBPO's short rollouts branched from real states).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tfrecords.runtime.errors import UsageError
from wm.models.controller import Controller

if TYPE_CHECKING:
    import tensorflow as tf

    from wm.models.mdnrnn import MDNRNN

START_MODES = ("first", "random", "branch")
DONE_MODES = ("threshold", "sample")  # how the terminal head ends a dream episode
ENSEMBLE_REWARDS = ("mean", "min")  # how an ensemble's members' rewards make the step's
ALG = "philox"


def uniform(shape: Any, seed: tf.Tensor) -> tf.Tensor:
    """U[0, 1) float32 from stateless random bits.

    TensorFlow's float stateless samplers give other numbers under XLA than without it (the same
    seed and algorithm); their integer bits agree, so the dream builds its floats from those and
    the compiled rollout equals the uncompiled one.
    """
    import tensorflow as tf

    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg=ALG)
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))


def normal(shape: Any, seed: tf.Tensor) -> tf.Tensor:
    """N(0, 1) float32 from :func:`uniform` bits (Box-Muller)."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2, alg=ALG)
    u1 = 1.0 - uniform(shape, seeds[0])  # (0, 1]: the log is finite
    u2 = uniform(shape, seeds[1])
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * np.pi * u2)


class DreamResult(NamedTuple):
    """Per row: the dream return, the steps played, whether M ended it (terminal head) before ``max_steps``."""

    returns: np.ndarray
    steps: np.ndarray
    terminated: np.ndarray


class DreamEnv:
    """Plays controllers in M's dream, many rows at once.

    Args:
      mdnrnn: a trained ``wm.models.mdnrnn.MDNRNN`` with a reward head.
      controller: the controller's shape (on [z, h] or z).
      max_steps: steps per dream episode at most.
      temperature: tau for z_{t+1}'s sampling.
      dropout: the dream's dropout rate (masks fixed per world); 0 for none.
      jit_compile: compile the rollout with XLA.
      done: ``threshold`` ends an episode where the terminal head's probability is above 1/2,
        ``sample`` with that probability (one uniform draw per world and step).
      ensemble: more M's dreaming beside ``mdnrnn`` (same sizes and heads); none by default.
      ensemble_reward: ``mean`` or ``min`` of the members' rewards.
      disagreement: the penalty per unit of the members' reward standard deviation (>= 0).
    """

    def __init__(
        self,
        mdnrnn: MDNRNN,
        controller: Controller,
        max_steps: int,
        temperature: float = 1.0,
        dropout: float = 0.0,
        jit_compile: bool = False,
        done: str = "threshold",
        ensemble: Sequence[MDNRNN] = (),
        ensemble_reward: str = "mean",
        disagreement: float = 0.0,
    ) -> None:
        import tensorflow as tf

        if mdnrnn.reward is None:
            raise UsageError("M has no reward head: train it with python -m wm.train_mdnrnn --reward_head")
        if temperature < 0:
            raise UsageError(f"the dream's temperature must be >= 0, got {temperature}")
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"the dream's dropout must be in [0, 1), got {dropout}")
        if max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, got {max_steps}")
        if done not in DONE_MODES:
            raise UsageError(f"the dream's done must be one of {', '.join(DONE_MODES)}, got {done!r}")
        if ensemble_reward not in ENSEMBLE_REWARDS:
            raise UsageError(
                f"the ensemble's reward must be one of {', '.join(ENSEMBLE_REWARDS)}, got {ensemble_reward!r}"
            )
        if disagreement < 0:
            raise UsageError(f"the disagreement penalty must be >= 0, got {disagreement}")
        for k, other in enumerate(ensemble, 1):
            if other.arch | {"dropout": 0} != mdnrnn.arch | {"dropout": 0}:
                raise UsageError(f"ensemble member {k} is not M's shape: {other.arch} against {mdnrnn.arch}")
        self.done = done
        self.m, self.controller = mdnrnn, controller
        self.members = [mdnrnn, *ensemble]
        self.ensemble_reward, self.disagreement = ensemble_reward, float(disagreement)
        self.z_size, self.hidden = int(mdnrnn.z_size), int(mdnrnn.hidden)
        self.action_size = int(mdnrnn.action_size)
        if controller.input_dim not in (self.z_size, self.z_size + self.hidden):
            raise UsageError(
                f"controller input_dim {controller.input_dim} is neither z ({self.z_size}) nor z + h "
                f"({self.z_size + self.hidden})"
            )
        self.use_h = controller.input_dim == self.z_size + self.hidden
        self.max_steps, self.temperature, self.dropout = int(max_steps), float(temperature), float(dropout)
        self.jit_compile = bool(jit_compile)
        signature = [
            tf.TensorSpec([None, controller.num_params], tf.float32),
            tf.TensorSpec([None, self.z_size], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int64),
            tf.TensorSpec([None, len(self.members), 2, self.hidden], tf.float32),
        ]
        # No AutoGraph: the loop is an explicit tf.while_loop and every `if` is on Python values.
        # partials, not lambdas: TensorFlow counts the traces of every function with one code object together,
        # and each DreamEnv (a sweep of dream settings makes several) traces its own
        self._play = tf.function(
            functools.partial(self._rollout, record=False),
            input_signature=signature,
            jit_compile=self.jit_compile,
            autograph=False,
        )
        self._play_recorded = tf.function(
            functools.partial(self._rollout, record=True),
            input_signature=signature,
            jit_compile=self.jit_compile,
            autograph=False,
        )

    # ------------------------------------------------------------ the pieces (also the reference's)

    def masks(self, seed: tf.Tensor, worlds: Any) -> tuple[tf.Tensor, ...]:
        """Dropout masks per world: (input [W, Z + A], heads' h [W, H]), scaled by 1 / keep; ones without dropout."""
        import tensorflow as tf

        shapes = ([worlds, self.z_size + self.action_size], [worlds, self.hidden])
        if not self.dropout:
            return tuple(tf.ones(s, tf.float32) for s in shapes)
        keep = 1.0 - self.dropout
        seeds = tf.random.experimental.stateless_split(self._seed(seed, 0), 2, alg=ALG)
        return tuple(tf.cast(uniform(s, seeds[i]) < keep, tf.float32) / keep for i, s in enumerate(shapes))

    def noise(self, seed: tf.Tensor, t: Any, worlds: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Step t's sampling noise per world: (u ~ U[0, 1) [W, Z], eps ~ N(0, 1) [W, Z])."""
        import tensorflow as tf

        base = tf.random.experimental.stateless_fold_in(self._seed(seed, 1), tf.cast(t, tf.int64), alg=ALG)
        seeds = tf.random.experimental.stateless_split(base, 2, alg=ALG)
        shape = [worlds, self.z_size]
        return uniform(shape, seeds[0]), normal(shape, seeds[1])

    def done_noise(self, seed: tf.Tensor, t: Any, worlds: Any) -> tf.Tensor:
        """Step t's uniform draw per world [W] for a sampled ending (its own stream: the z noise is unchanged)."""
        import tensorflow as tf

        base = tf.random.experimental.stateless_fold_in(self._seed(seed, 2), tf.cast(t, tf.int64), alg=ALG)
        return uniform([worlds], base)

    def member_pick(self, seed: tf.Tensor, t: Any, worlds: Any) -> tf.Tensor:
        """Step t's ensemble member per world [W] whose sample is z_{t+1} (its own stream)."""
        import tensorflow as tf

        base = tf.random.experimental.stateless_fold_in(self._seed(seed, 3), tf.cast(t, tf.int64), alg=ALG)
        k = tf.cast(uniform([worlds], base) * len(self.members), tf.int32)
        return tf.minimum(k, len(self.members) - 1)

    @staticmethod
    def _seed(seed: tf.Tensor, purpose: int) -> tf.Tensor:
        import tensorflow as tf

        return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), purpose, alg=ALG)

    def step(
        self,
        params: tf.Tensor,
        z: tf.Tensor,
        states: Sequence[tuple[tf.Tensor, tf.Tensor]],
        in_mask: tf.Tensor,
        head_mask: tf.Tensor,
        u: tf.Tensor,
        eps: tf.Tensor,
        u_done: tf.Tensor | None = None,
        pick: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, list[tuple[tf.Tensor, tf.Tensor]], tf.Tensor, tf.Tensor, tf.Tensor]:
        """One dream step for every row: (action, every member's (h, c), reward, terminal, z_next); ``u_done`` [N]
        is the rows' uniform draw for a sampled ending (``done="sample"``), ``pick`` [N] the member whose sample
        is z_next (an ensemble's)."""
        import tensorflow as tf

        from wm.agents.agent import controller_tf
        from wm.models.mdnrnn import sample_z_from_noise

        feats = tf.concat([z, states[0][0]], axis=-1) if self.use_h else z
        action = controller_tf(self.controller, params, feats)
        z_in, a_in = z * in_mask[:, : self.z_size], action * in_mask[:, self.z_size :]
        new_states, rewards, logits, samples = [], [], [], []
        for m, state in zip(self.members, states, strict=True):
            h, (h, c) = m.cell(z_in, a_in, state)
            mix, extras = m.heads(h * head_mask)
            new_states.append((h, c))
            rewards.append(extras["reward"])
            logits.append(extras.get("terminal_logit"))
            samples.append(sample_z_from_noise(mix, self.temperature, u, eps))
        if len(self.members) == 1:
            reward, logit, z_next = rewards[0], logits[0], samples[0]
        else:
            r = tf.stack(rewards)  # [K, N]
            reward = tf.reduce_min(r, 0) if self.ensemble_reward == "min" else tf.reduce_mean(r, 0)
            if self.disagreement:
                reward -= self.disagreement * tf.math.reduce_std(r, 0)
            logit = None if logits[0] is None else tf.reduce_mean(tf.stack(logits), 0)
            z_next = tf.gather(tf.stack(samples, axis=1), pick, batch_dims=1)  # [N, K, Z] -> [N, Z]
        if logit is not None and self.done == "sample":
            terminal = u_done < tf.sigmoid(logit)
        elif logit is not None:
            terminal = logit > 0.0
        else:
            terminal = tf.zeros_like(reward, tf.bool)
        return action, new_states, reward, terminal, z_next

    # ------------------------------------------------------------ the compiled rollout

    def _rollout(
        self,
        params: tf.Tensor,
        starts: tf.Tensor,
        worlds: tf.Tensor,
        seed: tf.Tensor,
        start_states: tf.Tensor,
        record: bool,
    ) -> tuple[tf.Tensor, ...]:
        import tensorflow as tf

        n = tf.shape(params)[0]
        num_worlds = tf.shape(starts)[0]
        in_masks, head_masks = self.masks(seed, num_worlds)
        in_mask, head_mask = tf.gather(in_masks, worlds), tf.gather(head_masks, worlds)
        z = tf.gather(starts, worlds)
        first = tf.gather(start_states, worlds)  # [N, K, 2, H]
        states = tuple((first[:, k, 0], first[:, k, 1]) for k in range(len(self.members)))
        ret = tf.zeros([n], tf.float32)
        steps = tf.zeros([n], tf.int32)
        done = tf.zeros([n], tf.bool)
        terminated = tf.zeros([n], tf.bool)
        zs = tf.TensorArray(tf.float32, size=self.max_steps if record else 0, element_shape=[None, self.z_size])
        acts = tf.TensorArray(tf.float32, size=self.max_steps if record else 0, element_shape=[None, self.action_size])

        def body(
            t: Any, z: Any, states: Any, ret: Any, steps: Any, done: Any, terminated: Any, zs: Any, acts: Any
        ) -> tuple[Any, ...]:
            u, eps = self.noise(seed, t, num_worlds)
            u, eps = tf.gather(u, worlds), tf.gather(eps, worlds)
            u_done = tf.gather(self.done_noise(seed, t, num_worlds), worlds) if self.done == "sample" else None
            pick = tf.gather(self.member_pick(seed, t, num_worlds), worlds) if len(self.members) > 1 else None
            action, states, reward, terminal, z_next = self.step(
                params, z, states, in_mask, head_mask, u, eps, u_done, pick
            )
            alive = tf.logical_not(done)
            ret += tf.where(alive, reward, 0.0)
            steps += tf.cast(alive, tf.int32)
            terminated = tf.logical_or(terminated, tf.logical_and(alive, terminal))
            if record:
                zs, acts = zs.write(t, z), acts.write(t, action)
            return t + 1, z_next, tuple(states), ret, steps, tf.logical_or(done, terminal), terminated, zs, acts

        def cond(t: Any, z: Any, states: Any, ret: Any, steps: Any, done: Any, *_: Any) -> Any:
            return tf.logical_and(t < self.max_steps, tf.logical_not(tf.reduce_all(done)))

        out = tf.while_loop(
            cond, body, (tf.constant(0), z, states, ret, steps, done, terminated, zs, acts), parallel_iterations=1
        )
        t, _, _, ret, steps, _, terminated, zs, acts = out
        if record:
            return ret, steps, terminated, zs.stack(), acts.stack(), t
        return ret, steps, terminated

    def rollout(
        self, params: np.ndarray, starts: np.ndarray, worlds: np.ndarray, seed: int, states: np.ndarray | None = None
    ) -> DreamResult:
        """Plays one dream episode per row to its end.

        Args:
          params: [N, n] controller parameters, one row per episode.
          starts: [W, Z] start latents, one per world.
          worlds: [N] the world (index into ``starts``) of each row.
          seed: the stateless seed of the worlds' noise and masks.
          states: [W, K, 2, H] every member's (h, c) at each world's start (:func:`branch_starts`); zeros
            (a fresh episode's state) if None.
        """
        ret, steps, terminated = self._play(*self._args(params, starts, worlds, seed, states))
        return DreamResult(ret.numpy(), steps.numpy(), terminated.numpy())

    def rollout_on_worlds(
        self, params: np.ndarray, starts: np.ndarray, seed: int, states: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Every row of ``params`` [P, n] on every world of ``starts`` [W, Z] (and ``states``, as
        :meth:`rollout`'s; each world's noise and masks the same for every row): (returns [P, W], dream steps
        played)."""
        n = len(starts)
        rows = np.repeat(np.asarray(params, np.float32), n, axis=0)
        res = self.rollout(rows, starts, np.tile(np.arange(n, dtype=np.int32), len(params)), seed, states)
        return res.returns.reshape(len(params), n), int(res.steps.sum())

    def rollout_recorded(
        self, params: np.ndarray, starts: np.ndarray, worlds: np.ndarray, seed: int, states: np.ndarray | None = None
    ) -> tuple[DreamResult, np.ndarray, np.ndarray]:
        """:meth:`rollout` plus the trajectories: (DreamResult, z [T, N, Z], actions [T, N, 3]) for the
        T steps played (a row's steps past its end are M's continuation, not part of its episode)."""
        args = self._args(params, starts, worlds, seed, states)
        ret, steps, terminated, zs, acts, t = self._play_recorded(*args)
        t = int(t)
        return DreamResult(ret.numpy(), steps.numpy(), terminated.numpy()), zs.numpy()[:t], acts.numpy()[:t]

    def _args(
        self, params: np.ndarray, starts: np.ndarray, worlds: np.ndarray, seed: int, states: np.ndarray | None
    ) -> tuple[tf.Tensor, ...]:
        import tensorflow as tf

        params = np.asarray(params, np.float32)
        worlds = np.asarray(worlds, np.int32)
        starts = np.asarray(starts, np.float32)
        if params.ndim != 2 or len(params) != len(worlds):
            raise ValueError(f"params {params.shape} and worlds {worlds.shape} must give one world per row")
        if len(worlds) and (worlds.min() < 0 or worlds.max() >= len(starts)):
            raise ValueError(f"worlds must index the {len(starts)} starts")
        shape = (len(starts), len(self.members), 2, self.hidden)
        states = np.zeros(shape, np.float32) if states is None else np.asarray(states, np.float32)
        if states.shape != shape:
            raise ValueError(f"states {states.shape} must be [worlds, members, 2, hidden] = {shape}")
        return (
            tf.constant(params),
            tf.constant(starts),
            tf.constant(worlds),
            tf.constant(np.asarray([seed & 0x7FFFFFFF, seed >> 31], np.int64)),
            tf.constant(states),
        )


def can_dream(mdnrnn_dir: str) -> bool:
    """Whether the M workdir ``mdnrnn_dir`` has a reward head (so it can dream rewards), read from its
    config.json before any model loads; UsageError (one line) if it is not an M workdir."""
    from wm.core import workdir

    return bool((workdir.require(mdnrnn_dir, "mdnrnn").get("arch") or {}).get("reward_head"))


def check_dreamer(mdnrnn_dir: str) -> None:
    """UsageError (one line) unless ``mdnrnn_dir`` is an M workdir with a reward head."""
    if not can_dream(mdnrnn_dir):
        raise UsageError(
            f"{mdnrnn_dir}: M has no reward head, so it cannot dream rewards: "
            "train it with python -m wm.train_mdnrnn --reward_head --terminal_head"
        )


def _episodes(series: str) -> Any:
    """The latent series' episodes (``mu`` [T, Z], ``actions`` [T, A], ...), checked to be latent series."""
    import tfrecords
    from tfrecords import schema

    shards = tfrecords.list_shards(series)
    manifest = tfrecords.dataset_manifest(shards)
    if manifest and manifest.get("kind") != schema.KIND_LATENTS:
        raise UsageError(f"{series} holds {manifest.get('kind')}, not latent series: run python -m wm.encode first")
    tfrecords.shard_infos(shards)  # several directories must hold the same kind of series
    latent_dim = int((manifest or {}).get("latent_dim", schema.LATENT_DIM))
    return tfrecords.episodes_dataset(shards, kind=schema.KIND_LATENTS, latent_dim=latent_dim)


def _start_steps(length: int, mode: str, per_episode: int, rng: np.random.Generator) -> np.ndarray:
    """The steps of one episode that start dreams: its first, or ``per_episode`` random ones."""
    if mode == "first":
        return np.zeros(1, np.int64)
    return rng.choice(length, min(per_episode, length), replace=False)


def start_latents(series: str, mode: str = "first", per_episode: int = 8, seed: int = 0) -> np.ndarray:
    """Candidate start latents [S, Z] from a latent series (V's means): every episode's first step
    (``mode="first"``) or ``per_episode`` random steps of every episode (``"random"``, seeded); ``"branch"``
    picks the steps ``"random"`` picks (:func:`branch_starts` adds M's states there)."""
    if mode not in START_MODES:
        raise UsageError(f"dream start must be one of {START_MODES}, got {mode!r}")
    rng = np.random.default_rng(seed)
    out = []
    for ep in _episodes(series):
        mu = ep["mu"].numpy()
        if len(mu):
            out.append(mu[_start_steps(len(mu), mode, per_episode, rng)])
    if not out:
        raise UsageError(f"{series} has no episodes to start dreams from")
    return np.concatenate(out).astype(np.float32)


def member_states(m: MDNRNN) -> Any:
    """A compiled function (mu [T, Z], actions [T, A]) -> M's (h, c) before each step of that recorded episode
    [T, 2, H]: zeros before step 0, then the state after reading (z_{t-1}, a_{t-1}), as the agent's M holds it
    when C acts on z_t (no dropout: M as the agent runs it)."""
    import tensorflow as tf

    def body(state: Any, x: Any) -> Any:
        _, (h, c) = m.cell(x[0][None], x[1][None], state)
        return h, c

    def states(mu: Any, actions: Any) -> Any:
        hs, cs = tf.scan(body, (mu[:-1], actions[:-1]), m.initial_state(1))
        after = tf.stack([hs[:, 0], cs[:, 0]], axis=1)  # [T-1, 2, H]: after steps 0..T-2
        return tf.concat([tf.zeros([1, 2, m.hidden], tf.float32), after], 0)

    signature = [tf.TensorSpec([None, m.z_size], tf.float32), tf.TensorSpec([None, m.action_size], tf.float32)]
    return tf.function(states, input_signature=signature, autograph=False)


def branch_starts(
    members: Sequence[MDNRNN], series: str, per_episode: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Dream starts branched from real states: (z [S, Z], every member's (h, c) there [S, K, 2, H]) at
    ``per_episode`` random steps of every episode of ``series`` (the steps :func:`start_latents` picks with
    ``"random"`` and the same seed)."""
    rng = np.random.default_rng(seed)
    fns = [member_states(m) for m in members]
    zs, states = [], []
    for ep in _episodes(series):
        mu, actions = ep["mu"].numpy(), ep["actions"].numpy()
        if not len(mu):
            continue
        steps = _start_steps(len(mu), "branch", per_episode, rng)
        zs.append(mu[steps])
        states.append(np.stack([fn(mu, actions).numpy()[steps] for fn in fns], axis=1))
    if not zs:
        raise UsageError(f"{series} has no episodes to start dreams from")
    return np.concatenate(zs).astype(np.float32), np.concatenate(states).astype(np.float32)


def dream_starts(
    series: str, mode: str, members: Sequence[MDNRNN], per_episode: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """(start latents [S, Z], start states [S, K, 2, H] or None for zero states) for dream start ``mode``."""
    if mode == "branch":
        return branch_starts(members, series, per_episode, seed)
    return start_latents(series, mode, per_episode, seed), None
