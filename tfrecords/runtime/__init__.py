"""What every binary of the project shares, below the TFRecord format and the models.

``cli``: flags generated from config dataclasses, one-line errors and exit codes; ``fileio``:
paths and atomic writes on any ``tf.io.gfile`` filesystem; ``errors``: the one-line error
classes; ``lock``: one run per directory; ``native_logs``: TensorFlow's C++ log lines kept off
stderr; ``tf_env``: the process environment set before TensorFlow loads. None of these modules
imports TensorFlow at import time.
"""
