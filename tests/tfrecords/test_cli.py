"""tfrecords.runtime.cli: flags generated from a config dataclass, the generic checks, --set parsing, exit codes."""

import dataclasses
import os
import signal
import subprocess
import sys

import pytest
from absl import flags

from tfrecords.runtime import cli
from tfrecords.runtime.cli import UsageError, option


@dataclasses.dataclass
class Demo:
    out: str = option(help="Where to write.", required=True)
    count: int = option(3, help="How many.", min=1)
    rate: float = option(0.5, help="A rate.", above=0, max=1)
    mode: str = option("fast", help="Speed.", choices=("fast", "slow"))
    lazy: str = option("", help="From a registry.", choices=lambda: ("a", "b"))
    seed: int | None = option(None, help="Seed.")
    on: bool = option(True, help="Switch.")
    items: list[str] = option(help="Repeatable.", flag="item", default_factory=list)


def _parse(argv):
    fv = flags.FlagValues()
    cli.define_flags(Demo, fv)
    fv(["prog", *argv])
    return cli.config_from_flags(Demo, fv), fv


def test_flags_come_from_the_fields():
    cfg, fv = _parse(["--out=x", "--count=7", "--rate=0.25", "--mode=slow", "--noon", "--item=a", "--item=b"])
    assert cfg == Demo(out="x", count=7, rate=0.25, mode="slow", lazy="", seed=None, on=False, items=["a", "b"])
    assert fv["count"].help == "How many." and "<fast|slow>" in fv["mode"].help
    default, _ = _parse([])
    assert default == Demo(out="")  # an unset required flag gives "", which check() refuses


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"out": ""}, "--out is required"),
        ({"count": 0}, "--count must be positive, got 0"),
        ({"rate": 0.0}, "--rate must be positive, got 0.0"),
        ({"rate": 1.5}, "--rate must be <= 1, got 1.5"),
        ({"rate": float("nan")}, "--rate must be finite"),
        ({"mode": "warp"}, "--mode must be one of fast, slow, got 'warp'"),
        ({"lazy": "c"}, "--lazy must be one of a, b, got 'c'"),
    ],
)
def test_check_gives_one_line(kw, msg):
    with pytest.raises(UsageError, match=msg):
        cli.check(Demo(**{"out": "x", **kw}))


def test_check_accepts_good_values():
    cli.check(Demo(out="x", lazy=""))  # "" is the default of a choice field: "not set"
    cli.check(Demo(out="x", lazy="b", seed=3))


def test_parse_value_types_and_checks_like_the_flags():
    assert cli.parse_value(Demo, "count", "4") == 4
    assert cli.parse_value(Demo, "on", "false") is False
    assert cli.parse_value(Demo, "rate", "1") == 1.0
    with pytest.raises(UsageError, match="not a valid int"):
        cli.parse_value(Demo, "count", "four")
    with pytest.raises(UsageError, match="count must be positive"):
        cli.parse_value(Demo, "count", "0")
    with pytest.raises(UsageError, match="has no flag 'nope'"):
        cli.parse_value(Demo, "nope", "1")


def test_stop_signals_turn_sigterm_into_terminated_and_restore_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(cli.Terminated), cli.stop_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 1)  # give the handler a chance to run
    assert signal.getsignal(signal.SIGTERM) is before


_SCRIPT = """
import dataclasses, os, signal, time
from tfrecords.runtime.cli import UsageError, option, run_binary, stop_signals

@dataclasses.dataclass
class C:
    n: int = option(1, help="n", min=1)
    mode: str = option("a", help="m", choices=("a", "b"))

def run(cfg):
    if cfg.n == 5:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    if cfg.mode == "b":
        raise UsageError("b is not ready")
    print("ran", cfg.n)

if __name__ == "__main__":
    run_binary(C, run, "demo")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv,code,last",
    [
        (["--n=2"], 0, "ran 2"),
        (["--n=0"], 2, "demo: error: --n must be positive, got 0"),
        (["--mode=c"], 2, "demo: error: --mode must be one of a, b, got 'c'"),
        (["--mode=b"], 2, "demo: error: b is not ready"),
        (["--n=5"], 143, "demo: terminated; rerun the same command to resume"),
    ],
)
def test_run_binary_exit_codes(tmp_path, argv, code, last):
    script = tmp_path / "demo.py"
    script.write_text(_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == code, proc.stderr
    out = (proc.stdout if code == 0 else proc.stderr).strip().splitlines()
    assert out[-1] == last


_VERBOSITY = """
from absl import logging
from tfrecords.runtime.cli import option, run_binary
import dataclasses

@dataclasses.dataclass
class C:
    n: int = option(1, help="n")

def run(cfg):
    print("verbosity", logging.get_verbosity())

if __name__ == "__main__":
    run_binary(C, run, "demo")
"""


@pytest.mark.parametrize("argv,level", [([], "-1"), (["--verbosity=0"], "0"), (["-v", "1"], "1")])
def test_verbosity_is_warning_unless_given(tmp_path, argv, level):
    script = tmp_path / "demo.py"
    script.write_text(_VERBOSITY)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root)
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["verbosity", level], proc.stderr
