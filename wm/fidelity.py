"""How faithfully M's dream ranks controllers: Spearman's rho between dream and real returns.

    python -m wm.fidelity --agent=runs/demo/controller --episodes=8

Plays a set of controllers of clearly different quality (the agent's CMA-ES parameters, the zero
controller, the CMA-ES means of ``--means`` evenly spaced generations of its run (the last included),
and the agent's parameters plus Gaussian noise at each of ``--scales`` times their RMS,
``--per_scale`` of each) on the same ``--episodes`` real tracks and as many dream worlds of M (started
from ``--series``' latents, as ``wm.train_controller --env=dream`` starts them), and prints a table per
controller, the mean dream - real gap and, on its last line, ``spearman rho = R (K controllers)``. The
result goes to ``AGENT/fidelity.json`` (or ``--out``); ``wm.report`` shows it as a scatter.

The dream's settings default to the agent's run (its ``--series``, ``--dream_start``, ``--temperature``;
dropout: M's own) and can be changed here (``--temperature``, ``--dream_dropout``), so that each
remedy for a dream that ranks badly is measured by this one number. ``--dream_done=sample`` ends dream
episodes with the terminal head's probability instead of above 1/2. An ensemble of M's (``--dream_ensemble``, with
``--ensemble_reward`` and ``--dream_disagreement``), dreams branched from real states
(``--dream_start=branch``) and short dreams (``--dream_horizon``) are set as ``wm.train_controller``
sets them. Each ``--variant=KEY=VALUE,...`` (temperature, dream_dropout, dream_done, dream_start,
dream_horizon, members: the first N of M and the ensemble, ensemble_reward, dream_disagreement) gauges
one more dream setting on the same controllers, worlds (a start mode's worlds share the base's noise)
and real returns, so a sweep costs one real pass: its rho and gap are printed before the last line and kept
under ``variants`` in the JSON. The tracks come from ``--seed``
through a seed stream that neither training nor ``wm.evaluate`` uses. CMA-ES agents only (a PPO policy
has no parameter vector to perturb).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

from data_gen import rollout
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.agents import fidelity, loading
from wm.agents import workers as workers_lib
from wm.agents.dream import DONE_MODES, ENSEMBLE_REWARDS, START_MODES, check_dreamer
from wm.core import distribute, layout

OUT_NAME = layout.FIDELITY_JSON


@dataclasses.dataclass
class FidelityConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.fidelity``)."""

    agent: str = option(help="A train_controller (CMA-ES) workdir.", required=True)
    episodes: int = option(8, help="Real tracks, and dream worlds, each controller plays.", min=1)
    scales: str = option("0.25,0.5,1,2,4", help="Noise scales of the perturbed controllers (times the RMS).")
    per_scale: int = option(1, help="Perturbed controllers per scale.", min=1)
    means: int = option(4, help="CMA-ES means along the run to play (evenly spaced generations; 0: none).", min=0)
    seed: int = option(0, help="Seed of the tracks, the dream worlds and the perturbations.")
    max_steps: int = option(1000, help="Maximum steps per episode, real and dreamed.", min=1)
    series: str = option("", help="Latent series whose z's start the dreams (default: the agent's --series).")
    dream_start: str = option("", help="Dream starts (default: the agent's).", choices=START_MODES)
    temperature: float = option(-1.0, help="The dream's tau (-1: the agent's run's, else 1.0).", min=-1)
    dream_dropout: float = option(-1.0, help="The dream's dropout (-1: M's training dropout).", min=-1)
    dream_done: str = option(
        "",
        help="How the dream's episodes end: threshold or sample (default: the agent's run's).",
        choices=("", *DONE_MODES),
    )
    dream_horizon: int = option(
        -1, help="Dream episodes' steps at most (-1: the agent's run's; 0: --max_steps).", min=-1
    )
    dream_ensemble: str = option(
        "-", help="More M workdirs dreaming beside the agent's M, comma-separated ('-': the agent's run's; '': none)."
    )
    ensemble_reward: str = option(
        "", help="An ensemble's step reward: mean or min (default: the agent's run's).", choices=("", *ENSEMBLE_REWARDS)
    )
    dream_disagreement: float = option(
        -1.0, help="An ensemble's penalty per unit of its reward std (-1: the agent's run's).", min=-1
    )
    variants: list[str] = option(
        help="Another dream setting to gauge on the same controllers and real returns, e.g. "
        "temperature=1.5,dream_dropout=0.1,dream_done=sample (repeatable; unset keys as the base; keys also "
        "dream_start, dream_horizon, members, ensemble_reward, dream_disagreement).",
        flag="variant",
        default_factory=list,
    )
    jit_compile: str = option("auto", help="XLA for the dream: auto/on compile it, off.", choices=("auto", "on", "off"))
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: min(real episodes, 64)).", min=0)
    layout: str = option("auto", help=workers_lib.LAYOUT_HELP, choices=workers_lib.LAYOUTS)
    env_id: str = option("", help="Environment id (default: the agent's).")
    out: str = option("", help=f"Result JSON path (default: AGENT/{OUT_NAME}).")
    progress: bool = option(True, help="Show a progress bar.")


def validate(cfg: FidelityConfig) -> tuple[dict, list[float]]:
    """Raises UsageError for bad settings; returns (the agent's config, the noise scales)."""
    check(cfg)
    try:
        scales = fidelity.parse_scales(cfg.scales)
        for v in cfg.variants:
            fidelity.parse_variant(v, DONE_MODES)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    config = loading.load_policy_config(cfg.agent)
    if config.get("algorithm", "cma-es") != "cma-es":
        raise UsageError(f"{cfg.agent} is a {config.get('algorithm')} agent: the gauge perturbs CMA-ES parameters")
    check_dreamer(config["mdnrnn"])
    if cfg.dream_ensemble != "-":
        for member in (d.strip() for d in cfg.dream_ensemble.split(",") if d.strip()):
            check_dreamer(member)
    if not (cfg.series or config.get("flags", {}).get("series")):
        raise UsageError(f"{cfg.agent} was trained without --series: give --series (wm.encode's latent series)")
    if cfg.env_id:
        rollout.check_env_id(cfg.env_id)
    if cfg.out and fileio.gfile().isdir(cfg.out):
        raise UsageError(f"--out {cfg.out} is a directory; give the JSON's file name")
    workers_lib.resolve_layout(cfg.layout, "", [cfg.agent])
    return config, scales


def _more_settings(cfg: FidelityConfig, flags: dict) -> dict[str, Any]:
    """The base setting's dream start, horizon and ensemble settings, where they are not the defaults
    (--flag, else the agent's run's)."""
    out: dict[str, Any] = {"dream_start": cfg.dream_start or flags.get("dream_start", "first")}
    out["dream_horizon"] = cfg.dream_horizon if cfg.dream_horizon >= 0 else int(flags.get("dream_horizon", 0))
    out["ensemble_reward"] = cfg.ensemble_reward or flags.get("ensemble_reward", "mean")
    disagreement = cfg.dream_disagreement if cfg.dream_disagreement >= 0 else flags.get("dream_disagreement", 0.0)
    out["dream_disagreement"] = float(disagreement)
    defaults = {"dream_start": "first", "dream_horizon": 0, "ensemble_reward": "mean", "dream_disagreement": 0.0}
    return {k: v for k, v in out.items() if v != defaults[k]}


def _means_along(agent_dir: str, n: int) -> list[tuple[str, Any]]:
    """(``mean gen G``, parameters) of ``n`` evenly spaced generations the run's state still holds."""
    from wm.training.cma_state import STATE_NAME, CmaState

    data = fileio.read_bytes(fileio.join(agent_dir, STATE_NAME))
    if data is None or n <= 0:
        return []
    state = CmaState.loads(data)
    held = [g for g in range(1, state.generation + 1) if state.mean_of(g) is not None]
    return [(f"mean gen {g}", state.mean_of(g)) for g in fidelity.spaced(held[0], held[-1], n)] if held else []


def run(cfg: FidelityConfig) -> dict:
    """Plays the controllers in reality and in the dream; writes and returns the result."""
    config, scales = validate(cfg)
    import numpy as np
    from tqdm import tqdm

    from wm.agents.dream import dream_starts
    from wm.models.loading import load_mdnrnn

    flags = config.get("flags", {})
    along = _means_along(cfg.agent, cfg.means)
    n_rows = 2 + len(along) + len(scales) * cfg.per_scale
    envs = cfg.envs or min(cfg.episodes * n_rows, 64)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    distribute.set_inference_threads(workers)  # before TensorFlow's first op
    agent, params, _ = loading.load_policy(cfg.agent)
    rows, names = fidelity.controller_set(params, scales, cfg.per_scale, cfg.seed, along)
    t0 = time.perf_counter()

    # the dream: every controller on the same worlds, in the base setting and in each variant
    series = cfg.series or flags["series"]
    base: dict[str, Any] = {
        "temperature": cfg.temperature if cfg.temperature >= 0 else float(flags.get("temperature", 1.0)),
        "dream_dropout": agent.mdnrnn.dropout if cfg.dream_dropout < 0 else cfg.dream_dropout,
        "dream_done": cfg.dream_done or flags.get("dream_done", "threshold"),
    }
    base.update(_more_settings(cfg, flags))
    settings = [base] + [{**base, **fidelity.parse_variant(v, DONE_MODES)} for v in cfg.variants]
    ensemble_dirs = flags.get("dream_ensemble", "") if cfg.dream_ensemble == "-" else cfg.dream_ensemble
    ensemble = [load_mdnrnn(d.strip()) for d in ensemble_dirs.split(",") if d.strip()]
    for x in settings:
        if int(x.get("members", 1)) > 1 + len(ensemble):
            raise UsageError(
                f"--variant members={x['members']}: the dream has {1 + len(ensemble)} (M and --dream_ensemble)"
            )
    worlds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    world_seed = 0
    for mode in dict.fromkeys(str(x.get("dream_start", "first")) for x in settings):  # the base's first
        starts, states = dream_starts(series, mode, [agent.mdnrnn, *ensemble], seed=cfg.seed)
        rng = np.random.default_rng([cfg.seed, fidelity.FIDELITY_STREAM])
        idx = rng.choice(len(starts), cfg.episodes, replace=len(starts) < cfg.episodes)
        world_seed = world_seed or int(rng.integers(1 << 62))  # every start mode's worlds get the base's noise
        worlds[mode] = (starts[idx], None if states is None else states[idx])
    dreams, dream_steps = fidelity.dream_returns(
        agent, rows, worlds, world_seed, settings, cfg.max_steps, cfg.jit_compile, ensemble
    )
    starts = worlds[str(base.get("dream_start", "first"))][0]
    dream, temperature, dropout = dreams[0], base["temperature"], base["dream_dropout"]
    dream_time = time.perf_counter() - t0

    # reality: every controller on the same tracks
    env_id = cfg.env_id or config.get("env_id", rollout.DEFAULT_ENV_ID)
    seeds = loading.track_seeds(cfg.seed, fidelity.FIDELITY_STREAM, cfg.episodes)
    jobs = [(k, s) for k in range(len(rows)) for s in seeds]
    spec = workers_lib.AgentSpec(agent_dir=fileio.abspath(cfg.agent), precision="")
    bar = tqdm(total=len(jobs), unit="ep", desc="fidelity", disable=not cfg.progress, file=sys.stderr)
    with workers_lib.make_runner(cfg.layout, spec, env_id, envs, workers, cfg.max_steps, agent=agent) as runner:
        results = runner.run(rows, jobs, cfg.max_steps, on_episode=lambda r: bar.update(1))
    bar.close()
    real = np.array([r.ret for r in results]).reshape(len(rows), cfg.episodes)

    gauge = fidelity.Gauge(names, real, dream)
    result: dict[str, Any] = {
        "agent": fileio.abspath(cfg.agent),
        "spearman_rho": gauge.rho,
        "mean_gap": gauge.mean_gap,
        "controllers": gauge.rows(),
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "env_id": env_id,
        "dream": {
            "series": series,
            "temperature": temperature,
            "dropout": dropout,
            "done": base["dream_done"],
            "starts": len(starts),
            "setting": base,
        },
        "variants": [
            {"setting": setting, "spearman_rho": g.rho, "mean_gap": g.mean_gap, "dream_means": g.dream.mean(1).tolist()}
            for setting, g in ((s, fidelity.Gauge(names, real, d)) for s, d in zip(settings[1:], dreams[1:]))
        ],
        "env_steps": int(sum(r.steps for r in results)),
        "dream_steps": dream_steps,
        "wall_time": time.perf_counter() - t0,
        "dream_wall_time": dream_time,
    }
    out = cfg.out or fileio.join(cfg.agent, OUT_NAME)
    fileio.write_text_atomic(out, json.dumps(result, indent=2, sort_keys=True))
    print(gauge.table())
    for v in result["variants"]:
        setting = ", ".join(f"{k}={x:g}" if isinstance(x, float) else f"{k}={x}" for k, x in v["setting"].items())
        print(f"variant {setting}: spearman rho = {v['spearman_rho']:.2f}, mean gap {v['mean_gap']:+.1f}")
    print(f"mean dream - real gap: {gauge.mean_gap:+.1f} (dream tau {temperature:g}, dropout {dropout:g}); {out}")
    print(f"spearman rho = {gauge.rho:.2f} ({len(rows)} controllers)")
    return result


if __name__ == "__main__":
    run_binary(FidelityConfig, run, "fidelity")
