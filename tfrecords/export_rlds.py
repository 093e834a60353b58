"""Export rollouts as an RLDS dataset that TensorFlow Datasets reads without this package.

    python -m tfrecords.export_rlds --data=runs/demo/rollouts --out_dir=runs/demo/rlds [--series=runs/demo/series]

Reading it back needs only ``tensorflow_datasets``::

    import tensorflow_datasets as tfds
    ds = tfds.builder_from_directory("runs/demo/rlds").as_dataset(split="train")
    for episode in ds:
        for step in episode["steps"]:
            step["observation"], step["action"], step["reward"], step["is_last"]

Each element is one episode: ``steps`` (a nested dataset) and the episode's metadata
(``episode_id``, ``seed``, ``policy``, ``terminated``, ``episode_return``). The dataset is
written by TFDS's own builder machinery (a ``GeneratorBasedBuilder``), in TFDS's record format
with its ``dataset_info.json`` and ``features.json``; one split, ``train``, in episode order.

How stored episodes map onto RLDS steps. A stored episode of T transitions holds ``frames[t]``
(the observation o_t), ``actions[t]`` (a_t, taken at o_t), ``rewards[t]`` (r_t, after a_t) and
``terminals[t]`` (1 where the environment terminated after a_t), for t < T; the observation
after the last action is not stored. Only the last step can be terminal. RLDS step t holds
(o_t, a_t, r_t, discount_t), and its last step carries the last observation, where action,
reward and discount are not meaningful. So:

* an episode that **terminated** (``terminals[T-1] == 1``) becomes T + 1 steps: steps 0..T-1 hold
  the stored o_t, a_t, r_t with discount 1 (0 on step T-1, whose successor is terminal); step T
  is ``is_last`` and ``is_terminal``, and its observation (the terminal state, never stored and
  never needed: its value is 0) is all zeros, as are its action, reward and discount;
* an episode that was **truncated** (``terminals[T-1] == 0``: the time limit, ``--max_steps``
  or any stop without termination) becomes T steps: step t holds o_t, a_t, r_t, discount 1, and
  step T-1, ``is_last`` but not ``is_terminal``, carries the last stored observation. Its action
  and reward are the stored a_{T-1} and r_{T-1}, kept although RLDS calls them not meaningful
  there (no observation after them was stored, so no transition can be built from them).

Either way every stored frame, action and reward appears once, on step t, the step rewards sum
to the stored return, every pair of consecutive steps is a real transition, and a truncated
episode's last observation is real (bootstrapping from it is right).

With ``--series`` (a ``wm.encode`` latent series of the same rollouts) each step also holds
``latent_mu`` and ``latent_logvar`` (V's posterior of its observation; zeros on a terminal last
step).

Output safety, like every writer of this project: the export is built in a temporary sibling,
``OUT.incomplete``, and renamed to ``OUT`` when it is finished, with ``export_rlds.json`` (what
was exported, every file's size) inside. A run that fails or is killed leaves no ``OUT``; a
rerun starts over (the export is not resumable midway; it is one pass over the data). A rerun
over a finished ``OUT`` of the same data is a no-op; an ``OUT`` holding anything else is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tfrecords import schema, writer
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import check, option, run_binary
from tfrecords.runtime.errors import OneLineError, RunMismatchError, UsageError
from tfrecords.runtime.lock import LOCK_NAME

PROG = "export_rlds"
DATASET_NAME = "world_models_rollouts"
DATASET_VERSION = "1.0.0"
EXPORT_FORMAT = 1
MARKER_NAME = "export_rlds.json"  # in OUT: the export is finished (and what it holds)
TEMP_SUFFIX = ".incomplete"  # OUT.incomplete: the export being built
TEMP_TAG = ".export_rlds_temp"  # in OUT.incomplete: it is ours to remove

HOMEPAGE = "https://worldmodels.github.io"
CITATION = """\
@article{ha2018worldmodels,
  title         = {World Models},
  author        = {Ha, David and Schmidhuber, J{\\"u}rgen},
  journal       = {arXiv preprint arXiv:1803.10122},
  year          = {2018},
  eprint        = {1803.10122},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/1803.10122}
}"""

STEP_MAPPING = (
    "Step t holds observation o_t (frame t), action a_t (taken at o_t) and reward r_t (after a_t). "
    "A terminated episode of T stored transitions has T + 1 steps: step T is is_last and is_terminal, with an "
    "all-zero observation (the terminal state's frame is not stored), zero action, reward and discount; "
    "discount is 0 on step T-1 and 1 before. A truncated episode (time limit) has T steps: step T-1 is "
    "is_last, not is_terminal, carries the last stored frame and keeps the stored a_{T-1} and r_{T-1} "
    "(not meaningful for RLDS; no next observation was stored); discount is 1 throughout. Step rewards sum "
    "to the episode's return."
)


@dataclasses.dataclass
class ExportRldsConfig:
    """Everything ``run`` needs (the flags of ``python -m tfrecords.export_rlds``)."""

    data: str = option(help="A rollout dataset directory (data_gen.generate's or wm.collect's).", required=True)
    out_dir: str = option(help="Directory for the RLDS dataset (tfds.builder_from_directory opens it).", required=True)
    series: str = option("", help="Optional: the wm.encode latent series of --data; adds latents to every step.")
    progress: bool = option(True, help="Show a progress bar.")


# ---------------------------------------------------------------- the step mapping


def episode_steps(ep: schema.Episode) -> dict[str, np.ndarray]:
    """The RLDS steps of one stored episode, as arrays with a leading step axis.

    Keys: ``observation`` (from ``ep.frames``), ``action``, ``reward``, ``discount``, ``is_first``,
    ``is_last``, ``is_terminal``, and ``latent_mu`` / ``latent_logvar`` when ``ep`` has ``mu`` and
    ``logvar``. See the module docstring for the mapping. Raises UsageError if a step other than
    the last is terminal (the rollout format ends an episode at termination).
    """
    t = len(ep)
    if t == 0:
        raise UsageError(f"episode with seed {ep.seed} has no steps")
    terminals = np.asarray(ep.terminals).astype(bool)
    if terminals[:-1].any():
        raise UsageError(
            f"episode with seed {ep.seed} is terminal at step {int(np.argmax(terminals))} of {t}; "
            "the rollout format ends an episode where it terminates"
        )
    terminated = bool(terminals[-1])
    n = t + 1 if terminated else t

    def padded(x: np.ndarray | None, dtype: Any) -> np.ndarray:
        x = np.asarray(x, dtype)
        return np.concatenate([x, np.zeros((1, *x.shape[1:]), dtype)]) if terminated else x

    discount = np.ones(t, np.float32)
    discount[terminals] = 0.0
    steps = {
        "observation": padded(ep.frames, np.uint8),
        "action": padded(np.asarray(ep.actions).reshape(t, schema.ACTION_DIM), np.float32),
        "reward": padded(np.asarray(ep.rewards).reshape(t), np.float32),
        "discount": padded(discount, np.float32),
        "is_first": np.arange(n) == 0,
        "is_last": np.arange(n) == n - 1,
        "is_terminal": (np.arange(n) == n - 1) & terminated,
    }
    if ep.mu is not None:
        steps["latent_mu"] = padded(ep.mu, np.float32)
        steps["latent_logvar"] = padded(ep.logvar, np.float32)
    return steps


def policy_name(manifest: dict) -> str:
    """The policy a rollout manifest records, as one string: its name (``brownian``) or, for an
    agent's rollouts (wm.collect), the policy record as key-sorted JSON."""
    policy = manifest.get("policy", (manifest.get("spec") or {}).get("policy", ""))
    return policy if isinstance(policy, str) else json.dumps(policy, sort_keys=True)


# ---------------------------------------------------------------- inputs


def _dataset_manifest(path: str, flag: str, kind: str) -> dict:
    """The manifest of a finished dataset of ``kind`` at ``path``; UsageError (one line) otherwise."""
    gfile = fileio.gfile()
    if not gfile.exists(path):
        raise UsageError(f"--{flag}: {path} does not exist")
    if not gfile.isdir(path):
        raise UsageError(f"--{flag}: {path} is not a directory")
    manifest = fileio.read_json(fileio.join(path, schema.MANIFEST_NAME))
    if manifest is None:
        if gfile.exists(fileio.join(path, writer.INCOMPLETE_DIR)):
            raise UsageError(f"--{flag}: {path} is unfinished (no {schema.MANIFEST_NAME} yet); rerun what writes it")
        raise UsageError(f"--{flag}: {path} has no {schema.MANIFEST_NAME}; it is not a dataset of this project")
    if manifest.get("kind", schema.KIND_ROLLOUTS) != kind:
        raise UsageError(f"--{flag}: {path} holds {manifest.get('kind')}, not {kind}")
    if manifest.get("schema_version") != schema.SCHEMA_VERSION:
        raise UsageError(
            f"--{flag}: {path} has schema version {manifest.get('schema_version')}, "
            f"this program reads {schema.SCHEMA_VERSION}"
        )
    for s in manifest.get("shards", []):
        if not gfile.exists(fileio.join(path, s["name"])):
            raise UsageError(f"--{flag}: shard {s['name']} of {path} is missing")
    return manifest


def _shards(manifest: dict) -> list[dict]:
    """The manifest's shards in episode order."""
    return sorted(manifest["shards"], key=lambda s: s["first_item"])


def _identity(manifest: dict) -> dict:
    """What identifies a dataset's content: its spec, counts and shards (names and sizes)."""
    return {
        "spec": manifest.get("spec"),
        "episodes": manifest["episodes"],
        "frames": manifest["frames"],
        "shards": [[s["name"], s.get("bytes")] for s in _shards(manifest)],
    }


def _check_series(rollouts: dict, series: dict, data: str, path: str) -> None:
    """UsageError unless ``series`` was encoded from these rollouts, shard for shard."""
    source = (series.get("spec") or {}).get("source") or {}
    mine = {k: rollouts.get(k) for k in ("spec", "episodes", "frames")}
    if source != mine:
        diff = [k for k in ("spec", "episodes", "frames") if source.get(k) != mine[k]]
        raise UsageError(
            f"--series: {path} was encoded from other rollouts than {data} (their {', '.join(diff)} differ)"
        )
    layout = [(s["first_item"], s["episodes"], s["frames"]) for s in _shards(rollouts)]
    if [(s["first_item"], s["episodes"], s["frames"]) for s in _shards(series)] != layout:
        raise UsageError(f"--series: the shards of {path} do not hold the episodes of {data}'s shards")


def _episodes(data: str, rollouts: dict, series_dir: str, series: dict | None) -> Iterator[tuple[int, schema.Episode]]:
    """(episode index, episode) in index order, with the series' mu and logvar when given."""
    from tfrecords.reader import episodes_dataset

    shape = tuple(rollouts.get("frame_shape") or schema.FRAME_SHAPE)
    zdim = int(series.get("latent_dim", schema.LATENT_DIM)) if series else 0
    latent_shards = _shards(series) if series else [None] * len(rollouts["shards"])
    for s, z in zip(_shards(rollouts), latent_shards):
        frames = episodes_dataset(fileio.join(data, s["name"]), kind=schema.KIND_ROLLOUTS, frame_shape=shape)
        lat = (
            iter(episodes_dataset(fileio.join(series_dir, z["name"]), kind=schema.KIND_LATENTS, latent_dim=zdim))
            if z
            else None
        )
        n = 0
        for ep in frames:
            index = s["first_item"] + n
            out = schema.Episode(
                actions=ep[schema.ACTIONS].numpy(),
                rewards=ep[schema.REWARDS].numpy(),
                terminals=ep[schema.TERMINALS].numpy(),
                seed=int(ep[schema.SEED]),
                frames=ep[schema.FRAMES].numpy(),
            )
            if lat is not None:
                zep = next(lat, None)
                if zep is None or int(zep[schema.SEED]) != out.seed or int(zep[schema.MU].shape[0]) != len(out):
                    raise UsageError(f"--series: episode {index} of {series_dir} is not episode {index} of {data}")
                out.mu, out.logvar = zep[schema.MU].numpy(), zep[schema.LOGVAR].numpy()
            n += 1
            yield index, out
        if n != s["episodes"]:
            raise UsageError(f"--data: shard {s['name']} holds {n} episodes, its manifest says {s['episodes']}")


# ---------------------------------------------------------------- the TFDS builder


def _features(tfds: Any, frame_shape: tuple[int, ...], latent_dim: int | None) -> Any:
    """The RLDS feature layout (as ``tfds.rlds.rlds_base.build_info`` builds it), with docs."""
    tf_bool = np.bool_
    step = {
        "observation": tfds.features.Image(
            shape=frame_shape, dtype=np.uint8, encoding_format="png", doc="o_t: the stored frame (PNG, lossless)."
        ),
        "action": tfds.features.Tensor(
            shape=(schema.ACTION_DIM,), dtype=np.float32, doc="a_t, taken at o_t: steering, gas, brake."
        ),
        "reward": tfds.features.Scalar(dtype=np.float32, doc="r_t, received after a_t."),
        "discount": tfds.features.Scalar(
            dtype=np.float32, doc="0 on the step whose a_t led to termination and on the terminal step; else 1."
        ),
        "is_first": tfds.features.Scalar(dtype=tf_bool, doc="The first step of the episode."),
        "is_last": tfds.features.Scalar(dtype=tf_bool, doc="The last step of the episode."),
        "is_terminal": tfds.features.Scalar(
            dtype=tf_bool, doc="The last step of an episode that terminated (not on a time limit)."
        ),
    }
    if latent_dim:
        for k, what in (("latent_mu", "mean"), ("latent_logvar", "log variance")):
            step[k] = tfds.features.Tensor(
                shape=(latent_dim,), dtype=np.float32, doc=f"V's posterior {what} of o_t (wm.encode)."
            )
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(step),
            "episode_id": tfds.features.Scalar(dtype=np.int64, doc="The episode's index in its rollout run."),
            "seed": tfds.features.Scalar(dtype=np.int64, doc="The episode's environment seed."),
            "policy": tfds.features.Text(doc="The policy that played it (from the rollouts' manifest)."),
            "terminated": tfds.features.Scalar(dtype=tf_bool, doc="The episode terminated (else it was truncated)."),
            "episode_return": tfds.features.Scalar(dtype=np.float32, doc="The sum of the stored rewards."),
        }
    )


def _description(rollouts: dict, series: dict | None) -> str:
    env = rollouts.get("env_id") or (rollouts.get("spec") or {}).get("env_id", "CarRacing")
    text = (
        f"Rollouts of {env} for World Models (Ha & Schmidhuber 2018), exported to RLDS: each example is one "
        f"episode of policy {policy_name(rollouts)!r} with its steps. {STEP_MAPPING}"
    )
    if series:
        text += " Each step also holds latent_mu and latent_logvar, V's posterior of its observation (zeros on a "
        text += "terminal last step)."
    return text


def _make_builder(
    data_dir: str, features: Any, description: str, metadata: dict, examples: Iterable[tuple[int, dict]]
) -> Any:
    """A TFDS ``GeneratorBasedBuilder`` writing ``examples`` (key, episode dict) as split ``train``."""
    import tensorflow_datasets as tfds

    # (tfds is untyped, so mypy checks the keyword against object.__init_subclass__)
    class WorldModelsRollouts(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
        name = DATASET_NAME
        VERSION = tfds.core.Version(DATASET_VERSION)
        RELEASE_NOTES = {DATASET_VERSION: "RLDS export of the world-models rollout format (schema version 1)."}
        # No checksums file next to the code (nothing is downloaded). Also sidesteps TFDS 4.9.x's lookup of
        # the class's source, which needs importlib_resources, a package it does not require on Python >= 3.9
        # (tensorflow/datasets#11212).
        code_path = None

        def _info(self) -> Any:
            return tfds.core.DatasetInfo(
                builder=self,
                description=description,
                features=features,
                homepage=HOMEPAGE,
                citation=CITATION,
                metadata=tfds.core.MetadataDict(metadata),
                disable_shuffling=True,  # episode order, as stored
            )

        def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict]]]:
            return {"train": self._generate_examples()}

        def _generate_examples(self) -> Iterator[tuple[int, dict]]:
            yield from examples

    return WorldModelsRollouts(data_dir=data_dir)


# ---------------------------------------------------------------- the output directory


def _files(directory: str) -> dict[str, int]:
    """Every file under ``directory`` (relative path -> size), the marker excluded."""
    gfile = fileio.gfile()
    out = {}
    for root, _, names in gfile.walk(directory):
        for name in names:
            path = fileio.join(root, name)
            rel = path[len(directory) :].lstrip("/")
            if rel != MARKER_NAME:
                out[rel] = int(gfile.stat(path).length)
    return out


def _finished(out_dir: str, spec: dict) -> dict | None:
    """The marker of a finished export of ``spec`` at ``out_dir``; None if there is no ``out_dir``
    or it is an empty directory; one-line errors for anything else."""
    gfile = fileio.gfile()
    if not gfile.exists(out_dir):
        return None
    if not gfile.isdir(out_dir):
        raise UsageError(f"--out_dir: {out_dir} is a file")
    marker = fileio.read_json(fileio.join(out_dir, MARKER_NAME))
    if marker is None:
        if [n for n in gfile.listdir(out_dir) if n != LOCK_NAME]:  # (the lock is this run's own)
            raise RunMismatchError(
                f"{out_dir} exists and is not a finished RLDS export; choose another output directory"
            )
        return None
    if marker.get("spec") != spec:
        raise RunMismatchError(
            f"{out_dir} already holds an RLDS export of other data ({marker.get('data')}, "
            f"series {marker.get('series') or 'none'}); choose another output directory"
        )
    have = _files(out_dir)
    for rel, size in sorted(marker.get("files", {}).items()):
        if have.get(rel) != size:
            raise UsageError(f"{out_dir} is a damaged export ({rel} is missing or has another size); delete it")
    return marker


def _fresh_temp(temp: str) -> None:
    """Makes ``temp`` an empty directory of ours, removing what a killed run of ours left there."""
    gfile = fileio.gfile()
    if gfile.exists(temp):
        if not gfile.exists(fileio.join(temp, TEMP_TAG)):
            raise UsageError(f"{temp} exists and was not made by {PROG}; move it away")
        print(f"{PROG}: removing the unfinished export an earlier run left in {temp}", file=sys.stderr)
        gfile.rmtree(temp)
    gfile.makedirs(temp)
    fileio.write_text_atomic(fileio.join(temp, TEMP_TAG), "an unfinished export; a rerun removes it\n")


# ---------------------------------------------------------------- the binary


def run(cfg: ExportRldsConfig) -> dict:
    """Exports ``cfg.data`` (and ``cfg.series``) to ``cfg.out_dir``; returns the export's record
    (``export_rlds.json``: spec, episodes, steps, files). A finished export of the same data is kept."""
    check(cfg)
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raise UsageError(
            "tensorflow-datasets is not installed; it is the rlds extra: pip install -e '.[rlds]'"
        ) from None
    out_dir = cfg.out_dir.rstrip("/") or cfg.out_dir
    rollouts = _dataset_manifest(cfg.data, "data", schema.KIND_ROLLOUTS)
    series = _dataset_manifest(cfg.series, "series", schema.KIND_LATENTS) if cfg.series else None
    if series is not None:
        _check_series(rollouts, series, cfg.data, cfg.series)
    spec = {
        "format": EXPORT_FORMAT,
        "dataset": f"{DATASET_NAME}/{DATASET_VERSION}",
        "data": _identity(rollouts),
        "series": _identity(series) if series else None,
    }
    done = _finished(out_dir, spec)
    if done is not None:
        print(f"{PROG}: {out_dir} is already complete: {summary(done)}", file=sys.stderr)
        return done

    import tensorflow_datasets as tfds
    from tqdm import tqdm

    frame_shape = tuple(int(d) for d in rollouts.get("frame_shape") or schema.FRAME_SHAPE)
    latent_dim = int(series.get("latent_dim", schema.LATENT_DIM)) if series else None
    policy = policy_name(rollouts)
    metadata = {
        "step_mapping": STEP_MAPPING,
        "rollouts": {
            "spec": rollouts.get("spec"),
            "env_id": rollouts.get("env_id"),
            "frame_shape": list(frame_shape),
            "episodes": rollouts["episodes"],
            "frames": rollouts["frames"],
            "policy": policy,
        },
        "series": None if series is None else {"latent_dim": latent_dim, "vae_step": series.get("vae_step")},
    }
    temp = out_dir + TEMP_SUFFIX
    _fresh_temp(temp)
    bar = tqdm(total=rollouts["episodes"], unit="ep", desc=PROG, disable=not cfg.progress, file=sys.stderr)
    counts = {"episodes": 0, "steps": 0, "terminated": 0}
    failure: list[BaseException] = []  # our own one-line error, whatever TFDS wraps it in

    def examples() -> Iterator[tuple[int, dict]]:
        try:
            for index, ep in _episodes(cfg.data, rollouts, cfg.series, series):
                steps = episode_steps(ep)
                terminated = bool(steps["is_terminal"][-1])
                counts["episodes"] += 1
                counts["steps"] += len(steps["is_first"])
                counts["terminated"] += terminated
                bar.update(1)
                yield (
                    index,
                    {
                        "steps": steps,
                        "episode_id": index,
                        "seed": ep.seed,
                        "policy": policy,
                        "terminated": terminated,
                        "episode_return": np.float32(ep.total_reward),
                    },
                )
        except OneLineError as e:
            failure.append(e)
            raise

    t0 = time.perf_counter()
    try:
        tfds.disable_progress_bar()  # this binary's own bar counts episodes
        features = _features(tfds, frame_shape, latent_dim)
        builder = _make_builder(temp, features, _description(rollouts, series), metadata, examples())
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints where it writes
            builder.download_and_prepare()
        bar.close()
        built = str(builder.data_dir)
        n = builder.info.splits["train"].num_examples
        if n != rollouts["episodes"]:
            raise RuntimeError(f"TFDS wrote {n} episodes, {cfg.data} has {rollouts['episodes']}")
        record = {
            "spec": spec,
            "data": fileio.abspath(cfg.data),
            "series": fileio.abspath(cfg.series) if cfg.series else None,
            "tfds_version": tfds.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **counts,
            "files": _files(built),
        }
        fileio.write_json_atomic(fileio.join(built, MARKER_NAME), record)
        gfile = fileio.gfile()
        if gfile.exists(out_dir):  # an empty directory (_finished refused anything else)
            gfile.rmtree(out_dir)
        gfile.rename(built, out_dir)
        gfile.rmtree(temp)
    except BaseException as e:
        bar.close()
        with contextlib.suppress(Exception):
            fileio.gfile().rmtree(temp)
        if failure and not isinstance(e, KeyboardInterrupt):
            raise failure[0] from None
        raise
    rate = counts["steps"] / max(time.perf_counter() - t0, 1e-9)
    print(f"{PROG}: wrote {summary(record)} to {out_dir} ({rate:.0f} steps/s)", file=sys.stderr)
    return record


def summary(record: dict) -> str:
    """One line describing an export's record."""
    latents = ", with latents" if record.get("series") else ""
    return (
        f"{record['episodes']} episodes ({record['terminated']} terminated, the rest truncated), "
        f"{record['steps']} RLDS steps{latents}"
    )


if __name__ == "__main__":
    run_binary(ExportRldsConfig, run, PROG)
