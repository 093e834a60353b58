"""The ConvVAE: size, numerics against a float64 NumPy reference, precision, export."""

import numpy as np
import pytest
import tensorflow as tf

from wm.models import vae


def _conv(x, w, b, stride):
    """'valid' Conv2D, NHWC, kernel [kh, kw, in, out]."""
    kh, kw = w.shape[:2]
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
            out += np.einsum("bhwc,co->bhwo", patch, w[i, j])
    return out + b


def _deconv(x, w, b, stride):
    """'valid' Conv2DTranspose, NHWC, kernel [kh, kw, out, in]."""
    kh, kw = w.shape[:2]
    hi, wi = x.shape[1:3]
    out = np.zeros((x.shape[0], (hi - 1) * stride + kh, (wi - 1) * stride + kw, w.shape[2]))
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + stride * (hi - 1) + 1 : stride, j : j + stride * (wi - 1) + 1 : stride, :] += np.einsum(
                "bhwc,oc->bhwo", x, w[i, j]
            )
    return out + b


def _reference(model, frames):
    """float64 forward pass and loss terms with z = mu."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    w = {
        layer.name: [np.float64(v) for v in layer.get_weights()]
        for layer in model.encoder.layers + model.decoder.layers
    }
    x = frames.astype(np.float64) / 255.0
    for i in range(1, 5):
        x = relu(_conv(x, *w[f"conv{i}"], 2))
    x = x.reshape(x.shape[0], -1)
    mu, logvar = x @ w["mu"][0] + w["mu"][1], x @ w["logvar"][0] + w["logvar"][1]
    y = (mu @ w["fc"][0] + w["fc"][1]).reshape(-1, 1, 1, 1024)
    for i in range(1, 5):
        y = _deconv(y, *w[f"deconv{i}"], 2)
        y = relu(y) if i < 4 else 1 / (1 + np.exp(-y))
    r = np.sum((frames / 255.0 - y) ** 2, axis=(1, 2, 3))
    kl_raw = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), axis=-1)
    kl = np.maximum(kl_raw, model.kl_tolerance * model.z_size)
    return mu, logvar, {"reconstruction": r, "kl_raw": kl_raw, "kl": kl, "loss": r + kl}


def test_parameter_count():
    model = vae.ConvVAE()
    assert model.count_params() == 4_348_547
    assert model.encoder.count_params() + model.decoder.count_params() == 4_348_547


def test_loss_terms_match_float64_reference():
    rng = np.random.default_rng(0)
    model = vae.ConvVAE()
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    mu, logvar, ref = _reference(model, frames)
    got_mu, got_logvar = model.encode(frames)
    np.testing.assert_allclose(got_mu, mu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_logvar, logvar, rtol=1e-4, atol=1e-4)
    terms = vae.loss_terms(model, tf.constant(frames), sample=False)
    assert set(terms) == set(ref)
    for k, v in ref.items():
        assert terms[k].dtype == tf.float32 and terms[k].shape == (3,)
        np.testing.assert_allclose(terms[k], v, rtol=1e-4, err_msg=k)


def test_kl_is_clamped_at_free_bits_and_sampling_is_random():
    model = vae.ConvVAE()
    frames = tf.zeros([2, 64, 64, 3], tf.uint8)
    terms = vae.loss_terms(model, frames)  # an untrained encoder is near N(0, I): KL below 16
    np.testing.assert_allclose(terms["kl"], np.maximum(terms["kl_raw"], 0.5 * 32))
    a, b = vae.loss_terms(model, frames)["reconstruction"], vae.loss_terms(model, frames)["reconstruction"]
    assert not np.allclose(a, b)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_are_float32(policy):
    model = vae.ConvVAE(dtype_policy=policy)
    frames = tf.random.uniform([2, 64, 64, 3], 0, 255, tf.int32)
    terms = vae.loss_terms(model, tf.cast(frames, tf.uint8))
    recon, mu, logvar = model(tf.cast(frames, tf.uint8))
    assert all(t.dtype == tf.float32 for t in [*terms.values(), recon, mu, logvar])
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert np.all(np.isfinite(terms["loss"]))


def test_exported_parts_load_with_plain_keras(tmp_path):
    import keras

    model = vae.ConvVAE()
    model.encoder.save(tmp_path / "encoder.keras")
    model.decoder.save(tmp_path / "decoder.keras")
    enc = keras.models.load_model(tmp_path / "encoder.keras")
    dec = keras.models.load_model(tmp_path / "decoder.keras")
    frames = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    mu, _ = enc(frames)
    np.testing.assert_allclose(mu, model.encode(frames)[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dec(mu), model.decode(mu), rtol=1e-6, atol=1e-6)
