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


def test_native_log_lines_are_recognised():
    from tfrecords.runtime.native_logs import is_native_log_line

    dropped = [
        b"I0000 00:00:1796533625.157603    1405 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
        b"E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN factory",
        b"W0000 00:00:1758131045.228000 3722035 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
        b"2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ]
    kept = [
        b"F0000 00:00:1758131045.203198 3722035 op_kernel.cc:1] Check failed: fatal lines always pass",
        b"train_vae: error: no shards match '/nonexistent'",
        b"Traceback (most recent call last):",
        b"",
    ]
    assert all(is_native_log_line(x) for x in dropped) and not any(is_native_log_line(x) for x in kept)


# A process that installs the filter, then writes C-level log lines and other lines to descriptor 2 (itself and
# from a child process, as a worker would), and a line through Python's stderr.
FILTERED = r"""
import os, subprocess, sys
from tfrecords.runtime import native_logs
native_logs.install()
os.write(2, b"I0000 00:00:1796533625.156187    1405 port.cc:153] oneDNN custom operations are on.\nfrom C\n")
subprocess.run([sys.executable, "-c", "import os; os.write(2, b'W0000 00:00:1.5  7 x.cc:1] w\\nfrom a child\\n')"])
print("from Python", file=sys.stderr)
"""


def test_a_filtered_process_passes_every_line_but_the_native_log_lines():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    out = subprocess.run(
        [sys.executable, "-c", FILTERED], env=dict(env, PYTHONPATH=root), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and sorted(out.stderr.splitlines()) == ["from C", "from Python", "from a child"]
