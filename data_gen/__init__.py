"""Stage 1 of World Models: rollouts of an exploration policy, written as sharded TFRecords.

Importing this package registers ``CarRacingFast-v3``, a pixel-identical and faster
CarRacing (see ``data_gen.fast_car_racing``), with gymnasium.
"""

import tfrecords as _tfrecords  # noqa: F401  (quiets TensorFlow's C++ logging before it loads)
from data_gen.fast_car_racing import register as _register_fast_env

_register_fast_env()
