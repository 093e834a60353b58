"""Reporting for the benchmarks that time a baseline and several variants of ours in alternating rounds."""

import statistics


def latest(label: str, names, rates: dict, fmt: str) -> str:
    """Each variant's rate in the last round, as ``label[name] rate``, comma-separated (a round's progress line)."""
    return ", ".join(f"{label}[{k}] {rates[k][-1]:{fmt}}" for k in names)


def medians(base: list, names, rates: dict):
    """For each variant in ``names``' order: its name, its median rate and the baseline's median rate."""
    b = statistics.median(base)
    for k in names:
        yield k, statistics.median(rates[k]), b
