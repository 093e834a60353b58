"""The TensorFlow environment every binary gets from importing ``tfrecords`` first."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = (
    "import os, tfrecords, tensorflow\n"
    "from tensorflow.python.util import _pywrap_util_port as port\n"
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled())\n"
)


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN default is x86-only")
def test_onednn_is_on_by_default_on_x86():
    # TensorFlow's own default leaves it off on AVX2-only CPUs, where V trains 5.7x slower without it
    assert _probe() == "1 True"


def test_an_explicit_onednn_setting_wins():
    assert _probe(TF_ENABLE_ONEDNN_OPTS="0") == "0 False"
