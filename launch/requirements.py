"""Prints the package's requirements from setup.cfg, one per line, leaving out the ones named.

For machines whose TensorFlow is preinstalled and must stay (a Cloud TPU VM, Colab's TPU runtime):

    python -m pip install -e . --no-deps
    python -m pip install $(python launch/requirements.py --without=tensorflow)

setup.cfg stays the one list of dependencies; BUILD.md, launch/tpu_vm.sh and launch/colab_tpu.ipynb
take theirs from here (tests/test_launch.py checks that none of them lists packages of its own).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re

SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg")


def requirements(without: set[str] = frozenset()) -> list[str]:
    """setup.cfg's ``install_requires``, without the distributions named in ``without``."""
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    lines = [x.strip() for x in cfg["options"]["install_requires"].splitlines() if x.strip()]
    return [x for x in lines if re.match(r"[A-Za-z0-9_.-]+", x).group(0).lower() not in without]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", default="", help="Comma-separated distribution names to leave out.")
    args = parser.parse_args()
    print("\n".join(requirements({n.strip().lower() for n in args.without.split(",") if n.strip()})))


if __name__ == "__main__":
    main()
