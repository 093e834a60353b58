"""The public command line is a contract: every ``python -m MODULE`` the README documents, and
every ``--flag`` it documents for that command, must exist.

The README is parsed, not copied: commands and flags come from its fenced code blocks
(continuation lines joined; ``&&``/``;`` separate commands; comments dropped) and from its prose.
In prose a backticked flag belongs to the command named in the same sentence (``--reader=tf`` in
``wm.train_vae``), or in a span such as ```wm.pipeline --workdir=gs://...```; otherwise to a
command of the nearest enclosing section's code blocks (which one is left open: "one of them");
with none, to some documented command. ``--set=STAGE.FLAG=VALUE`` overrides are checked against
the stage's own binary. Flags of other programs (```tensorboard --logdir DIR```) are ignored.

Each binary is then run with ``--helpfull``: absl's ``--help`` lists only the main module's
flags, hiding the shared ones (``--workdir``, ``--steps``, ... of the training loop), while
every flag listed by ``--helpfull`` is one the binary accepts. absl ends both with exit status 1
(``absl.app.HelpFlag``), so the check is: status 0 or 1, the binary's own flag listing printed,
no traceback.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys

import pytest

from wm import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# Binaries the README must keep documenting as ``python -m MODULE`` (at least these).
REQUIRED_MODULES = frozenset(
    {
        "data_gen.generate",
        "wm.train_vae",
        "wm.encode",
        "wm.train_mdnrnn",
        "wm.dream",
        "wm.train_controller",
        "wm.train_ppo",
        "wm.evaluate",
        "wm.pipeline",
        "tfrecords.inspect",
        "tfrecords.export_rlds",
        "wm.export",
        "wm.collect",
    }
)
# Binaries that are part of the command line without a ``python -m`` line of their own in the
# README (wm.report runs as the pipeline's last stage): their --help must work all the same.
UNDOCUMENTED_BINARIES = ("wm.report",)
# The project's top-level packages: ``python -m pip`` or ``python -m pytest`` are not its binaries.
PACKAGES = frozenset(d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "__init__.py")))

_CMD = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
_FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")
_SET = re.compile(r"(?<![\w-])--set=([a-z_]\w*)\.([a-z_]\w*)=")
_SPAN = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^(#{1,6})\s")
_SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<=[.!?])\s+(?=\S)")
_HELP_FLAG = re.compile(r"^\s+(?:-\S+,)?--(?:\[no\])?(\w+):", re.M)


@dataclasses.dataclass
class Contract:
    """What the README documents. ``flags``: module -> flags that module must accept.
    ``one_of``: (flag, candidate modules, where) -- at least one candidate must accept it.
    ``overrides``: (stage, flag, where) from ``--set=STAGE.FLAG=VALUE``."""

    flags: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    one_of: list[tuple[str, tuple[str, ...], str]] = dataclasses.field(default_factory=list)
    overrides: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def add(self, module: str, names) -> None:
        self.flags.setdefault(module, set()).update(names)


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _blocks(text: str):
    """Yields ("code", lines, section) and ("prose", paragraph, section) in order; ``section`` is the
    tuple of indices of the enclosing headings, outermost first."""
    lines = text.splitlines()
    stack: list[tuple[int, int]] = []  # (level, heading index)
    n_headings = 0
    i, para = 0, []

    def section():
        return tuple(idx for _, idx in stack)

    def flush():
        if para:
            yield ("prose", " ".join(s.strip() for s in para), section())
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            yield from flush()
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            yield ("code", lines[i + 1 : j], section())
            i = j + 1
            continue
        m = _HEADING.match(line)
        if m:
            yield from flush()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, n_headings))
            n_headings += 1
        elif not line.strip():
            yield from flush()
        elif re.match(r"\s*(?:[-*]|\d+\.)\s", line) or line.lstrip().startswith("|"):
            yield from flush()  # a list item or a table row starts a paragraph of its own
            para.append(line)
        else:
            para.append(line)
        i += 1
    yield from flush()


def _shell_commands(lines: list[str]):
    """(module, flag text) for each ``python -m`` command of a project module in a shell block."""
    logical, cur = [], ""
    for line in lines:
        line = re.sub(r"(?:^|\s)#.*$", "", line)  # comments
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        logical.append(cur + line)
        cur = ""
    logical.append(cur)
    for line in logical:
        for segment in re.split(r"&&|\|\||;", line):
            m = _CMD.search(segment)
            if m and _is_project(m.group(1)):
                yield m.group(1), segment[m.end() :]


def parse_readme(text: str) -> Contract:
    blocks = list(_blocks(text))
    contract = Contract()
    section_cmds: dict[int, set[str]] = {}  # heading index -> modules run in code blocks directly under it
    for kind, body, sec in blocks:
        if kind == "code":
            for module, rest in _shell_commands(body):
                contract.add(module, _FLAG.findall(rest))
                contract.overrides += [(s, f, f"{module}: {rest.strip()}") for s, f in _SET.findall(rest)]
                section_cmds.setdefault(sec[-1] if sec else -1, set()).add(module)
        else:
            for m in _CMD.finditer(body):
                if _is_project(m.group(1)):
                    contract.add(m.group(1), ())
    modules = set(contract.flags)
    mention = (
        re.compile(
            r"(?<![\w./])("
            + "|".join(re.escape(m) for m in sorted(modules, key=len, reverse=True))
            + r")(?![\w/]|\.\w)"
        )
        if modules
        else None
    )

    for kind, body, sec in blocks:
        if kind != "prose":
            continue
        for sentence in _SENTENCE_END.split(body):
            mentions = [(m.start(), m.group(1)) for m in mention.finditer(sentence)] if mention else []
            loose: list[tuple[int, str]] = []  # (position, flag) not tied to a command by a span
            pos = 0
            for span in _SPAN.finditer(sentence):
                loose += [(pos + f.start(), f.group(1)) for f in _FLAG.finditer(sentence[pos : span.start()])]
                pos = span.end()
                code = span.group(1).strip()
                if "--" not in code:
                    continue
                cmd = _CMD.search(code)
                first = code.split()[0]
                if cmd or (first in modules):
                    module, rest = (cmd.group(1), code[cmd.end() :]) if cmd else (first, code[len(first) :])
                    if _is_project(module):
                        contract.add(module, _FLAG.findall(rest))
                        contract.overrides += [(s, f, code) for s, f in _SET.findall(rest)]
                elif first.startswith("--"):
                    loose += [(span.start(), f) for f in _FLAG.findall(code)]
                    contract.overrides += [(s, f, code) for s, f in _SET.findall(code)]
                # else: another program's command line (tensorboard --logdir ...), not ours
            loose += [(pos + f.start(), f.group(1)) for f in _FLAG.finditer(sentence[pos:])]
            for at, flag in loose:
                if mentions:  # the command named in the same sentence, the nearest one
                    contract.add(min(mentions, key=lambda m: abs(m[0] - at))[1], [flag])
                    continue
                candidates = next((section_cmds[i] for i in reversed(sec) if section_cmds.get(i)), modules)
                if len(candidates) == 1:
                    contract.add(next(iter(candidates)), [flag])
                elif (flag, tuple(sorted(candidates))) not in {(f, c) for f, c, _ in contract.one_of}:
                    contract.one_of.append((flag, tuple(sorted(candidates)), sentence[:160]))
    return contract


def _readme_contract() -> Contract:
    with open(README, encoding="utf-8") as f:
        return parse_readme(f.read())


CONTRACT = _readme_contract()
BINARIES = sorted(set(CONTRACT.flags) | set(UNDOCUMENTED_BINARIES))


def test_readme_documents_the_known_binaries():
    missing = REQUIRED_MODULES - set(CONTRACT.flags)
    assert not missing, f"README no longer documents `python -m MODULE` for {sorted(missing)}"
    # the parse found the obvious flags in the obvious places (a guard against a parser regression)
    assert {"workdir", "preset", "strategy", "tpu", "set", "stages"} <= CONTRACT.flags["wm.pipeline"]
    assert {"out_dir", "episodes", "workers", "full_frame", "writer"} <= CONTRACT.flags["data_gen.generate"]
    assert "reader" in CONTRACT.flags["wm.train_vae"] and "episodes" in CONTRACT.flags["wm.evaluate"]
    assert ("train_controller", "generations") in {(s, f) for s, f, _ in CONTRACT.overrides}


def test_parser_attributes_flags_to_their_command():
    text = "\n".join(
        [
            "# Tool",
            "Run `tensorboard --logdir runs` to watch; `python -m pkg_a.one DIR` checks.",
            "```bash",
            "# a comment with --not_a_flag",
            "python -m pip install -e . && python -m pkg_a.one --alpha=1 \\",
            "    [--beta=x|y] [--gamma=N | --delta=2]",
            "python -m pkg_a.two --epsilon",
            "python -m pkg_a.pipe --set=STAGE.FLAG=VALUE --set=one.alpha=3",
            "```",
            "",
            "- `--zeta` is shared. The `--eta=on` flag of `pkg_a.two` (`--theta`) too; e.g. `--eta=off`.",
            "  Overrides: `--set=two.epsilon=1`, `--zeta` again.",
            "- `pkg_a.pipe --iota=gs://x` works.",
            "## Other",
            "| `--kappa` | a table row with no command in its section |",
        ]
    )
    global PACKAGES
    saved, PACKAGES = PACKAGES, PACKAGES | {"pkg_a"}
    try:
        c = parse_readme(text)
    finally:
        PACKAGES = saved
    assert set(c.flags) == {"pkg_a.one", "pkg_a.two", "pkg_a.pipe"}
    assert c.flags["pkg_a.one"] == {"alpha", "beta", "gamma", "delta"}
    assert c.flags["pkg_a.two"] == {"epsilon", "eta", "theta"}
    assert c.flags["pkg_a.pipe"] == {"set", "iota"}
    every = ("pkg_a.one", "pkg_a.pipe", "pkg_a.two")
    assert [(f, m) for f, m, _ in c.one_of] == [("zeta", every), ("set", every), ("kappa", every)]
    assert [(s, f) for s, f, _ in c.overrides] == [("one", "alpha"), ("two", "epsilon")]


def _help(module: str) -> tuple[str, subprocess.CompletedProcess]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", module, "--helpfull"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    return module, proc


@pytest.fixture(scope="module")
def accepted() -> dict[str, set[str]]:
    """module -> every flag name its ``--helpfull`` lists; asserts each help ran cleanly."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(_help, BINARIES))
    out, problems = {}, []
    for module, proc in sorted(results.items()):
        own = re.compile(r"^\S*" + re.escape(module.replace(".", "/")) + r"\.py:$", re.M)  # its flags' heading
        if proc.returncode not in (0, 1) or "Traceback" in proc.stderr or not own.search(proc.stdout):
            problems.append(
                f"python -m {module} --helpfull: exit {proc.returncode}\n"
                f"stdout: {proc.stdout[-800:]}\nstderr: {proc.stderr[-1500:]}"
            )
        out[module] = set(_HELP_FLAG.findall(proc.stdout))
    assert not problems, "\n\n".join(problems)
    return out


def _accepts(flags: set[str], name: str) -> bool:
    return name in flags or (name.startswith("no") and name[2:] in flags)  # --noprogress for --[no]progress


@pytest.mark.slow
def test_every_documented_flag_is_accepted_by_its_binary(accepted):
    problems = [
        f"python -m {m}: README documents --{f}, which --helpfull does not list"
        for m, names in sorted(CONTRACT.flags.items())
        for f in sorted(names)
        if not _accepts(accepted[m], f)
    ]
    for flag, candidates, where in CONTRACT.one_of:
        if not any(_accepts(accepted[m], flag) for m in candidates):
            problems.append(f"README's --{flag} is a flag of none of {', '.join(candidates)} (in: {where!r})")
    stage_modules = {m.rsplit(".", 1)[1]: m for m in accepted}
    iteration_fields = {f.name for f in dataclasses.fields(pipeline.IterationConfig)}
    for stage, flag, where in CONTRACT.overrides:
        module = stage_modules.get(stage)
        if stage == "iteration":  # the pipeline's own settings of an iteration, not a binary's
            if flag not in iteration_fields:
                problems.append(f"README's --set=iteration.{flag}=...: IterationConfig has no {flag} (in: {where!r})")
        elif module is None:
            problems.append(
                f"README's --set={stage}.{flag}=...: no documented binary runs stage {stage!r} (in: {where!r})"
            )
        elif not _accepts(accepted[module], flag):
            problems.append(f"README's --set={stage}.{flag}=...: {module} has no --{flag} (in: {where!r})")
    assert not problems, "\n".join(problems)


# README's contract for bad input: one line ``PROG: error: ...`` on stderr, exit status 2, nothing else printed.
BAD_INPUTS = {
    "unknown flag": ("wm.train_vae", ["--data=/nonexistent", "--workdir=/nonexistent", "--no_such_flag=1"]),
    "bad int": ("wm.train_vae", ["--data=/nonexistent", "--workdir=/nonexistent", "--steps=abc"]),
    "bad choice": ("wm.evaluate", ["--agent=/nonexistent", "--layout=sideways"]),
    "stray argument": ("wm.evaluate", ["--agent=/nonexistent", "extra"]),
    "missing agent": ("wm.evaluate", ["--agent=/nonexistent"]),
    "unknown preset": ("wm.pipeline", ["--workdir=/nonexistent", "--preset=nope"]),
    "inspect's unknown flag": ("tfrecords.inspect", ["/nonexistent", "--no_such_flag"]),
    "inspect's stray argument": ("tfrecords.inspect", ["/nonexistent", "extra"]),
}


def _bad(case: str) -> tuple[str, subprocess.CompletedProcess]:
    module, args = BAD_INPUTS[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}  # the user's default logging
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, timeout=180)
    return case, proc


@pytest.mark.slow
def test_bad_input_to_a_binary_is_one_line_and_exit_2():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(_bad, BAD_INPUTS))
    problems = []
    for case, proc in results.items():
        module = BAD_INPUTS[case][0]
        prog = module.rsplit(".", 1)[1]
        err = proc.stderr.decode(errors="replace").splitlines()
        if proc.returncode != 2 or len(err) != 1 or not err[0].startswith(f"{prog}: error: ") or proc.stdout:
            problems.append(f"{case} (python -m {module}): exit {proc.returncode}, stderr {err}, stdout {proc.stdout}")
    assert not problems, "\n".join(problems)
