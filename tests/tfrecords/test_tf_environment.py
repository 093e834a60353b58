"""The TensorFlow environment every binary gets from importing ``tfrecords`` first."""

import os
import subprocess
import sys

PROBE = "import os, tfrecords\nprint(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_onednn_is_left_to_tensorflow_and_to_the_user():
    # Forcing oneDNN on made a resumed wm.collect differ from an uninterrupted one on AVX2-only CPUs
    # (BENCHMARKS.md, "oneDNN on AVX2-only CPUs"), so the project sets nothing; TensorFlow decides.
    assert _probe() == "None 2"
    assert _probe(TF_ENABLE_ONEDNN_OPTS="1") == "1 2"
    assert _probe(TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="0") == "0 0"
