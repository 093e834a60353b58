"""World Models' V, M and C, their training and the binaries that run them.

``wm/*.py`` are the binaries (``python -m wm.train_vae`` ...); library code lives in the
subpackages, which import only downwards: ``core`` < ``models`` < ``agents`` < ``training``.
"""

import tfrecords as _tfrecords  # noqa: F401  (quiets TensorFlow's C++ logging before it loads)
