"""The whole World Models pipeline in one command.

    python -m wm.pipeline --workdir=runs/dream --preset=dream
    python -m wm.pipeline --workdir=runs/quickstart --preset=quickstart
    python -m wm.pipeline --workdir=gs://bucket/wm --preset=paper --strategy=tpu --tpu=local
    python -m wm.pipeline --workdir=runs/x --preset=smoke --set=train_controller.generations=3

Runs generate -> train_vae -> encode -> train_mdnrnn -> dream -> train_controller -> evaluate ->
report, each stage into its own subdirectory of ``--workdir`` (rollouts/, vae/, series/,
mdnrnn/, dream.gif, controller/, report.html). A stage that finished with the same settings is
skipped (its marker is ``WORKDIR/.pipeline/STAGE.json``) unless a stage before it ran again; an
unfinished one resumes, since every
stage resumes from its own checkpoints. ``--set=STAGE.FLAG=VALUE`` overrides any flag of any
stage; ``--strategy``/``--tpu`` go to the two training stages that use accelerators (V and M).
``WORKDIR/pipeline.json`` records each stage's command, resolved config, status and wall time.
``--seed=N`` seeds the whole run (:func:`seeded`: the rollouts' tracks, V, M, C and the iterations'
collection); the held-out evaluation tracks are the same for every seed.
``--set=train_controller.env=dream`` trains C in M's dream (on ``series/``), and M then gets its
reward and terminal heads.

Iterative training (``--iterations=K``; -1, the default, takes the preset's: 2 for ``dream``, 0 for
the others): after the first pass, K iterations of
``collect@k`` (``wm.collect``: rollouts played by the current ``controller/`` with parameter noise,
into ``iter_k/rollouts``) -> ``encode@k`` (``iter_k/series``) -> ``train_mdnrnn@k`` (M continued
in ``mdnrnn/`` on every series so far, ``iteration.mdnrnn_steps`` more steps) ->
``train_controller@k`` (CMA-ES continued in ``controller/`` from its current state with the new M,
``iteration.generations`` more, in the real environment or, with ``iteration.env=dream``, in the new
M's dream, ending with a real evaluation of its mean), then ``evaluate`` and
``report`` of the final ``controller/``. ``--set=collect.FLAG=V`` sets every ``collect@k``;
``--set=iteration.generations=N`` / ``iteration.mdnrnn_steps=N`` the increments. Raising K later
runs only the new iterations (and what follows them).

Presets (``--preset``): ``smoke``, ``quickstart``, ``dream``, ``long`` and ``paper``, one module each in
:mod:`wm.presets`, whose docstring gives its command, cost and measured result. The workdir's
paths are named once, in :mod:`wm.core.layout`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from tfrecords.runtime import fileio, lock
from tfrecords.runtime.cli import UsageError, check, option, parse_value, run_binary
from wm.core import distribute
from wm.core.layout import Layout
from wm.presets import PRESETS

STAGES = ("generate", "train_vae", "encode", "train_mdnrnn", "dream", "train_controller", "evaluate", "report")
# one iteration, in order (dream@k, the controller's real episode beside its dream, when M has a reward head)
ITERATION_STAGES = ("collect", "encode", "train_mdnrnn", "train_controller", "dream")


@dataclasses.dataclass
class IterationConfig:
    """How much each iteration adds (``--set=iteration.FIELD=VALUE``)."""

    mdnrnn_steps: int = option(100, help="M's extra training steps per iteration (M trained by --steps).", min=0)
    mdnrnn_epochs: int = option(2, help="M's extra epochs per iteration (M trained by --epochs).", min=0)
    generations: int = option(20, help="CMA-ES's extra generations per iteration.", min=0)
    env: str = option(
        "",
        help="Where the iterations' CMA-ES runs: real, dream, or '' (as the first pass).",
        choices=("", "real", "dream"),
    )
    trials: int = option(0, help="The iterations' CMA-ES trials per member (0: as the first pass).", min=0)


# ---------------------------------------------------------------- stages


@dataclasses.dataclass
class Stage:
    """How to build, describe and run one stage."""

    name: str
    module: str
    config_cls: type
    run: Callable[[Any], Any]


def _stages() -> dict[str, Stage]:
    from data_gen import generate
    from wm import collect, dream, encode, evaluate, report, train_controller, train_mdnrnn, train_vae

    stages = [
        Stage("generate", "data_gen.generate", generate.GenerateConfig, generate.run),
        Stage("train_vae", "wm.train_vae", train_vae.TrainVaeConfig, train_vae.run),
        Stage("encode", "wm.encode", encode.EncodeConfig, encode.run),
        Stage("train_mdnrnn", "wm.train_mdnrnn", train_mdnrnn.TrainMdnrnnConfig, train_mdnrnn.run),
        Stage("dream", "wm.dream", dream.DreamConfig, dream.run),
        Stage("train_controller", "wm.train_controller", train_controller.TrainControllerConfig, train_controller.run),
        Stage("evaluate", "wm.evaluate", evaluate.EvaluateConfig, evaluate.run),
        Stage("report", "wm.report", report.ReportConfig, report.run),
        # the iterations' own stage (the others repeat train_mdnrnn's, encode's and train_controller's)
        Stage("collect", "wm.collect", collect.CollectConfig, collect.run),
    ]
    return {st.name: st for st in stages}


def stage_paths(w: Layout) -> dict[str, dict[str, str]]:
    """The path fields of each first-pass stage's config in the workdir ``w`` (the iterations' are set below)."""
    return {
        "generate": {"out_dir": w.rollouts},
        "train_vae": {"data": w.rollouts, "workdir": w.vae},
        "encode": {"vae": w.vae, "data": w.rollouts, "out_dir": w.series},
        "train_mdnrnn": {"series": w.series, "workdir": w.mdnrnn},
        "dream": {"vae": w.vae, "mdnrnn": w.mdnrnn, "out": w.dream_gif, "data": w.rollouts},
        # the series starts dream episodes (--set=train_controller.env=dream); the real env ignores it
        "train_controller": {"vae": w.vae, "mdnrnn": w.mdnrnn, "workdir": w.controller, "series": w.series},
        "evaluate": {"agent": w.controller, "video_dir": w.videos},
        "report": {"workdir": w.workdir},
    }


def parse_overrides(items: list[str], stages: dict[str, Stage]) -> dict[str, dict[str, Any]]:
    """``["train_vae.batch_size=256", ...]`` -> ``{"train_vae": {"batch_size": 256}}``, typed and checked by the
    stages' config fields (the same metadata their flags come from); ``iteration.FIELD`` sets
    :class:`IterationConfig`."""
    classes = {name: st.config_cls for name, st in stages.items()} | {"iteration": IterationConfig}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, field = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set takes STAGE.FLAG=VALUE, got {item!r}")
        if stage not in classes:
            raise UsageError(f"--set: unknown stage {stage!r}; stages: {', '.join([*STAGES, 'collect', 'iteration'])}")
        try:
            out.setdefault(stage, {})[field] = parse_value(classes[stage], field, raw)
        except UsageError as e:
            raise UsageError(f"--set {item!r}: {stage} {e}") from None
    return out


def command_line(stage: Stage, cfg: Any) -> str:
    """The equivalent shell command for a stage's config (flags that differ from the defaults)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    parts = ["python", "-m", stage.module]
    own = type(cfg).__dict__.get("__annotations__", {})
    order = list(dataclasses.fields(cfg))
    # required paths first, the stage's own (--data) before shared ones (--workdir)
    fields = sorted(order, key=lambda f: (not f.metadata.get("required"), f.name not in own, order.index(f)))
    for f in fields:
        v = getattr(cfg, f.name)
        if f.name in defaults and defaults[f.name] == v:
            continue
        if isinstance(v, bool):
            parts.append(f"--{f.name}" if v else f"--no{f.name}")
        else:
            parts.append(f"--{f.name}={v}")
    return " ".join(parts)


# ---------------------------------------------------------------- running


@dataclasses.dataclass
class PipelineConfig:
    """The flags of ``python -m wm.pipeline``."""

    workdir: str = option(help="Root directory of the run (every stage gets a subdirectory).", required=True)
    preset: str = option(
        "quickstart",
        help="Sizes of every stage: smoke, quickstart, dream, dream_only, long or paper.",
        choices=tuple(PRESETS),
    )
    strategy: str = option("default", help="Strategy for V and M training.", choices=distribute.STRATEGIES)
    tpu: str = option("", help="TPU name or address for --strategy=tpu.")
    overrides: list[str] = option(
        help="Override a stage flag: STAGE.FLAG=VALUE (repeatable).", flag="set", default_factory=list
    )
    stages: str = option(
        "", help="Comma-separated stages to run (default: all, in order; collect, encode... include their iterations')."
    )
    iterations: int = option(
        -1,
        help="Iterations after the first pass (collect with the agent, encode, continue M, continue C); "
        "-1: the preset's (dream: 2, others: 0).",
        min=-1,
    )
    seed: int | None = option(
        None,
        help="A seed for the whole run: the rollouts' tracks, V's, M's and C's training, the iterations' "
        "collection (default: none, as before; wm.evaluate's held-out tracks do not change with it).",
        min=0,
    )
    progress: bool = option(True, help="Show progress bars.")


# --seed=N: generate plays tracks (SEED_SPAN * N, i) and collect@k plays (SEED_SPAN * N + k, i), so no two
# runs' and no two iterations' data share a track while k < SEED_SPAN
SEED_SPAN = 1000


def seeded(name: str, seed: int | None, k: int = 0) -> dict[str, int]:
    """The seed flags ``--seed`` gives stage ``name`` (``collect`` of iteration ``k``); none without it."""
    if seed is None:
        return {}
    return {
        "generate": {"seed": SEED_SPAN * seed},
        "train_vae": {"seed": seed},
        "train_mdnrnn": {"seed": seed},
        "train_controller": {"seed": seed},
        "collect": {"seed": SEED_SPAN * seed + k},
    }.get(name, {})


def iterations_of(cfg: PipelineConfig) -> int:
    """``--iterations``, or the preset's when it is -1."""
    if cfg.iterations >= 0:
        return cfg.iterations
    return int(PRESETS.get(cfg.preset, {}).get("pipeline", {}).get("iterations", 0))


def build_configs(cfg: PipelineConfig) -> dict[str, Any]:
    """Every stage's config: preset, then paths, then strategy, then --set overrides."""
    if cfg.preset not in PRESETS:
        raise UsageError(f"unknown --preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    check(cfg)
    stages = _stages()
    overrides = parse_overrides(cfg.overrides, stages)
    out = {}
    controller_env = {**PRESETS[cfg.preset].get("train_controller", {}), **overrides.get("train_controller", {})}
    iteration_env = {**PRESETS[cfg.preset].get("iteration", {}), **overrides.get("iteration", {})}.get("env")
    # whether or not iterations run yet: raising --iterations later must not change M's architecture
    dreaming = controller_env.get("env") == "dream" or iteration_env == "dream"
    paths = stage_paths(Layout(cfg.workdir))
    for name in STAGES:
        st = stages[name]
        values = dict(PRESETS[cfg.preset].get(name, {}))
        if name == "train_mdnrnn" and dreaming:  # the dream needs M's reward and terminal heads
            values.update(reward_head=True, terminal_head=True)
        values.update(paths[name])
        if name in ("train_vae", "train_mdnrnn"):
            values.update(strategy=cfg.strategy, tpu=cfg.tpu)
        fields = {f.name for f in dataclasses.fields(st.config_cls)}
        if "progress" in fields:
            values["progress"] = cfg.progress
        values.update(seeded(name, cfg.seed))
        values.update(overrides.get(name, {}))
        out[name] = st.config_cls(**values)
    iterations = iteration_configs(cfg, out, stages, overrides)
    # in the order they run: the first pass, the iterations, then evaluation and the report of the final agent
    return {**{n: out[n] for n in STAGES[:-2]}, **iterations, **{n: out[n] for n in STAGES[-2:]}}


def iteration_configs(
    cfg: PipelineConfig, base: dict[str, Any], stages: dict[str, Stage], overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The configs of iterations 1..K: collect with the current agent, encode, continue M, continue C."""
    it = IterationConfig(**{**PRESETS[cfg.preset].get("iteration", {}), **overrides.get("iteration", {})})
    check(it)
    w = Layout(cfg.workdir)
    out: dict[str, Any] = {}
    for k in range(1, iterations_of(cfg) + 1):
        series = ",".join(w.series_through(k))
        rollouts = w.iteration(k).rollouts
        collect_values = {**PRESETS[cfg.preset].get("collect", {}), "agent": w.controller, "out_dir": rollouts}
        collect_values.update(seed=k, progress=cfg.progress)  # seed k: tracks no other iteration (or generate) used
        collect_values.update(seeded("collect", cfg.seed, k))
        collect_values.update(overrides.get("collect", {}))
        out[f"collect@{k}"] = stages["collect"].config_cls(**collect_values)
        out[f"encode@{k}"] = dataclasses.replace(base["encode"], data=rollouts, out_dir=w.iteration(k).series)
        m = base["train_mdnrnn"]
        more = {"steps": m.steps + k * it.mdnrnn_steps} if m.steps else {"epochs": m.epochs + k * it.mdnrnn_epochs}
        out[f"train_mdnrnn@{k}"] = dataclasses.replace(m, series=series, **more)
        c = base["train_controller"]
        more_gens = c.generations + k * it.generations
        c = dataclasses.replace(
            c, series=series, generations=more_gens, env=it.env or c.env, trials=it.trials or c.trials
        )
        out[f"train_controller@{k}"] = c
        if base["train_mdnrnn"].reward_head:
            out[f"dream@{k}"] = dataclasses.replace(
                base["dream"],
                agent=w.controller,
                out=w.iteration(k).dream_vs_real,
                vae="",
                mdnrnn="",
                max_steps=out[f"collect@{k}"].max_steps,
                scale=2,  # with every 2nd frame: 1000 steps in ~5 MB (24 MB at the default scale 3, every frame)
                frame_stride=2,
                temperature=c.temperature,
                dream_dropout=c.dream_dropout,
                dream_done=c.dream_done,
                seed=k,
            )
    return out


def run(cfg: PipelineConfig) -> dict[str, Any]:
    """Runs (or resumes) the pipeline; returns the contents of pipeline.json."""
    configs = build_configs(cfg)
    stages = _stages()
    names = list(configs)
    known = set(names) | set(STAGES) | set(ITERATION_STAGES)
    selected = [s.strip() for s in cfg.stages.split(",") if s.strip()] or list(names)
    unknown = [s for s in selected if s not in known]
    if unknown:
        raise UsageError(f"--stages: unknown {unknown}; stages: {', '.join(names)}")
    w = Layout(cfg.workdir)
    fileio.makedirs(w.markers)
    status_path = w.pipeline_json
    status = fileio.read_json(status_path) or {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": [],
    }
    status["preset"] = cfg.preset
    status["iterations"] = iterations_of(cfg)
    by_name = {s["name"]: s for s in status["stages"]}
    status["stages"] = [by_name.get(n, {"name": n, "status": "pending", "wall_time": None}) for n in names]
    entries = {s["name"]: s for s in status["stages"]}
    upstream = None  # the token of the previous stage's finished output
    for name in names:
        st, stage_cfg = stages[name.split("@")[0]], configs[name]
        entry = entries[name]
        entry["command"] = command_line(st, stage_cfg)
        # the stage's config as it runs (the report reads its values); its marker keeps it without --progress
        entry["config"] = json.loads(json.dumps(dataclasses.asdict(stage_cfg), default=str))
        marker_path = w.marker(name)
        marker = fileio.read_json(marker_path) or {}
        if name not in selected and name.split("@")[0] not in selected:
            upstream = marker.get("token")
            continue
        fingerprint = {k: v for k, v in entry["config"].items() if k != "progress"}
        # Skip only if this stage finished with these settings on the very output the stage
        # before it has now: an upstream stage that ran again makes this one stale.
        if marker.get("config") == fingerprint and marker.get("upstream") == upstream:
            entry["status"] = "skipped"
            upstream = marker["token"]
            print(f"pipeline: {name}: already done, skipped", file=sys.stderr)
            continue
        print(f"pipeline: {name}: {entry['command']}", file=sys.stderr)
        # wall time adds up over the attempts that a kill or failure cut short
        prior = (entry.get("wall_time") or 0) if entry.get("status") in ("running", "failed", "interrupted") else 0
        entry["status"] = "running"
        fileio.write_json_atomic(status_path, status)
        t0 = time.perf_counter()
        try:
            with lock.hold(lock.locked_dirs(stage_cfg), name):  # against a stage run by hand meanwhile
                st.run(stage_cfg)
        except BaseException as e:
            entry["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            entry["wall_time"] = prior + time.perf_counter() - t0
            fileio.write_json_atomic(status_path, status)
            raise
        entry["wall_time"] = prior + time.perf_counter() - t0
        entry["status"] = "done"
        token = uuid.uuid4().hex
        fileio.write_json_atomic(status_path, status)
        fileio.write_json_atomic(marker_path, {"config": fingerprint, "upstream": upstream, "token": token})
        upstream = token
    fileio.write_json_atomic(status_path, status)
    total = sum(s.get("wall_time") or 0 for s in status["stages"])
    print(f"pipeline: done in {total / 60:.1f} min of stage time; report: {w.report}", file=sys.stderr)
    return status


if __name__ == "__main__":
    run_binary(PipelineConfig, run, "pipeline")
