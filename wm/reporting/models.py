"""The report's sections on the models: "V: the variational autoencoder", "M: the MDN-RNN" and "Dream"."""

from __future__ import annotations

import os

from wm.core import layout
from wm.core.workdir import METRICS_NAME
from wm.reporting.files import exists, gif, join, read_jsonl
from wm.reporting.html import Page, esc, img
from wm.reporting.plots import plot_losses, plot_reconstructions

RECON_FRAMES = 8


def _vae_reconstructions(workdir: str) -> tuple[bytes | None, str]:
    """(PNG, caption) or (None, what is missing)."""
    import numpy as np

    paths = layout.Layout(workdir)
    export = paths.vae_export
    enc_path, dec_path = join(export, "encoder.keras"), join(export, "decoder.keras")
    if not (exists(enc_path) and exists(dec_path)):
        return None, "the exported VAE (vae/export/encoder.keras, decoder.keras): train_vae has not finished"
    rollouts = paths.rollouts
    if not exists(rollouts):
        return None, "rollouts (rollouts/) to reconstruct"
    import keras

    from tfrecords import reader

    try:
        episode = next(iter(reader.episodes_dataset(rollouts).take(1)))
    except (StopIteration, Exception) as e:  # noqa: BLE001 - any unreadable dataset is reported, not fatal
        return None, f"readable rollouts in rollouts/ ({type(e).__name__}: {e})"
    frames = episode["frames"].numpy()
    idx = np.unique(np.linspace(0, len(frames) - 1, RECON_FRAMES).round().astype(int))
    inputs = frames[idx]
    encoder = keras.models.load_model(enc_path, compile=False)
    decoder = keras.models.load_model(dec_path, compile=False)
    mu, _ = encoder(inputs, training=False)
    recons = np.clip(np.asarray(decoder(mu, training=False)), 0.0, 1.0)
    mse = float(np.mean((inputs.astype(np.float32) / 255.0 - recons) ** 2))
    caption = (
        f"Frames {', '.join(map(str, idx))} of the first rollout episode (top) and V's reconstructions "
        f"from their means μ (bottom); mean squared error {mse:.4f} per pixel channel."
    )
    return plot_reconstructions(inputs, recons), caption


def _loss_block(page: Page, run_dir: str, label: str, terms: tuple[str, ...], stage: str) -> str:
    path = join(run_dir, METRICS_NAME)
    rows = [r for r in read_jsonl(path) if "step" in r] if exists(path) else []
    png = plot_losses(rows, terms) if rows else None
    name = os.path.basename(run_dir.rstrip("/"))
    if png is None:
        return page.miss(f"{label}'s loss curves ({name}/metrics.jsonl): the {stage} stage has not logged yet")
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    facts = [f"{train[-1]['step'] if train else 0} steps"]
    if train and isinstance(train[-1].get("loss"), (int, float)):
        facts.append(f"final train loss {train[-1]['loss']:.4g}")
    if evals and isinstance(evals[-1].get("loss"), (int, float)):
        facts.append(f"final eval loss {evals[-1]['loss']:.4g}")
    rates = [r["items_per_sec"] for r in train if isinstance(r.get("items_per_sec"), (int, float))]
    if rates:
        facts.append(f"{rates[-1]:,.0f} items/s")
    note = "" if evals else " (no eval entries: no held-out shards)"
    return (
        f"<figure>{img(png, 'image/png', f'{label} loss curves')}<figcaption>{esc(label)} loss terms per step, "
        f"train and eval{esc(note)}: {esc('; '.join(facts))}.</figcaption></figure>"
    )


def add_vae(page: Page, workdir: str) -> None:
    """V's reconstructions of rollout frames next to the frames, and V's loss curves."""
    body = []
    try:
        png, text = _vae_reconstructions(workdir)
    except Exception as e:  # noqa: BLE001 - a broken export must not stop the report
        png, text = None, f"VAE reconstructions (failed: {type(e).__name__}: {e})"
    if png is None:
        body.append(page.miss(text))
    else:
        body.append(
            f"<figure>{img(png, 'image/png', 'VAE inputs and reconstructions')}"
            f"<figcaption>{esc(text)}</figcaption></figure>"
        )
    body.append(_loss_block(page, layout.Layout(workdir).vae, "V", ("loss", "reconstruction", "kl"), "train_vae"))
    page.section("V: the variational autoencoder", "vae", "\n".join(body))


def add_mdnrnn(page: Page, workdir: str) -> None:
    """M's loss curves."""
    body = _loss_block(
        page, layout.Layout(workdir).mdnrnn, "M", ("loss", "z_nll", "reward_mse", "terminal_ce"), "train_mdnrnn"
    )
    page.section("M: the MDN-RNN", "mdnrnn", body)


def add_dream(page: Page, workdir: str) -> None:
    """The real episode and M's dream of it, side by side (dream.gif)."""
    if not exists(layout.Layout(workdir).dream_gif):
        page.section("Dream", "dream", page.miss("the dream (dream.gif): the dream stage has not run"))
        return
    body = (
        f"<figure>{gif(workdir, layout.DREAM_GIF, 'real episode and dream side by side')}"
        "<figcaption>Left: the real episode. Right: M dreaming on its own from the episode's first frame "
        "with the same actions, decoded by V.</figcaption></figure>"
    )
    page.section("Dream", "dream", body)
