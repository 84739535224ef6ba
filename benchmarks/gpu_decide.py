"""Which of the CuPy dispatch switches a GPU run supports: every combination of them scored on the run's numbers.

    python benchmarks/gpu_decide.py benchmarks/results/gpu_h100_YYYY-MM-DD.json [older runs ...]
    python benchmarks/gpu_decide.py --env run.json   # the best, as a value of ARRAYRNN_CUPY_DISPATCH
    python benchmarks/gpu_decide.py --exclude cluster run.json   # never switch cluster on (its tests failed)

A path that failed in the newest run (a result that did not match cuDNN, an error other than refusing the shape)
is never switched on either.

The default CuPy path (``_backends/cupy/policy.py``) has switches that wait for a measurement (``CLUSTER_AUTO``,
``FUSED_GRAPH_AUTO``) and choices between measured paths (``SMALL_BATCH_IMPL``, ``GRAD_SMALL_BATCH_IMPL``). For
each combination this sets them, asks the dispatch rule which path each benchmark row would run (as
``gpu_table.py``'s auto column does: the run's own auto timing where it chose the same, else that path's own
timing from the same run), and counts the rows that meet the issue's targets (forward <= 1.0x cuDNN, forward +
backward <= 1.2x). Ranked by targets met, then rows the rule would send to a path the run did not time (unknown),
then the geometric mean of the ratios. Also compares the variants of the fused gradient path that the
breakdown timed (``policy.Config.grad_bias_by_matmul``, ``grad_weight_grad_chunks``). Prints the ranking
and, for the best
combination, its rows; changes nothing: setting the switches in ``_backends/cupy/policy.py`` stays a person's decision.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_table  # noqa: E402


def _switches() -> dict[str, tuple[Any, ...]]:
    from arrayrnn._backends.cupy import policy

    return dict(policy.SWITCHES)


#: the switches and the values tried (those ``ARRAYRNN_CUPY_DISPATCH`` may set)
SWITCHES: dict[str, tuple[Any, ...]] = _switches()


@contextlib.contextmanager
def switched(settings: dict[str, Any]) -> Iterator[None]:
    """The CuPy dispatch config with ``settings`` (``ARRAYRNN_CUPY_DISPATCH`` names) for a block."""
    from arrayrnn._backends.cupy import policy

    with policy.configured(**{name.lower(): value for name, value in settings.items()}):
        yield


def score(index: Any) -> dict[str, Any]:
    """Targets met, rows with an untimed choice, and the geometric mean ratio, under the switches as they are."""
    met = total = unknown = 0
    logs: list[float] = []
    rows = []
    for direction, ratios in gpu_table.auto_ratios(index).items():
        target = gpu_table.TARGETS[direction]
        for key, ratio in ratios:
            rows.append((direction, key, ratio))
            total += 1
            if ratio is None:
                unknown += 1
                continue
            met += ratio <= target
            logs.append(math.log(ratio))
    geomean = math.exp(sum(logs) / len(logs)) if logs else float("nan")
    return {"met": met, "total": total, "unknown": unknown, "geomean": geomean, "rows": rows}


#: the path each switch value sends calls to (a value whose path is broken is not tried)
_PATH_OF = {
    ("CLUSTER_AUTO", True): "cluster",
    ("FUSED_GRAPH_AUTO", True): "fused_graph",
    ("TILED_AUTO", True): "tiled",
    ("SMALL_BATCH_IMPL", "persistent"): "persistent",
    ("GRAD_SMALL_BATCH_IMPL", "persistent"): "persistent",
}


def broken_paths(runs: list[dict[str, Any]]) -> set[str]:
    """Paths that failed in the newest run: a result that did not match cuDNN, or an error other than a refusal of
    the shape or device (``ValueError: impl=...``); "vjp-X" counts for X."""
    broken = set()
    for entry in runs[0].get("results", []) if runs else []:
        error = entry.get("error") or ""
        if entry.get("ok") is False or (error and not error.startswith("ValueError: impl=")):
            impl = entry.get("impl", "").removeprefix("vjp-")
            broken.add(impl.partition("[")[0])
    return broken


def switch_values(excluded: set[str]) -> dict[str, tuple[Any, ...]]:
    """``SWITCHES`` without the values that send calls to an ``excluded`` path."""
    return {
        name: tuple(v for v in values if _PATH_OF.get((name, v)) not in excluded) for name, values in SWITCHES.items()
    }


def rank(
    runs: list[dict[str, Any]], excluded: Optional[set[str]] = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every combination of ``SWITCHES`` with its score, best first; no value that sends calls to a path in
    ``excluded`` or broken in the newest run (:func:`broken_paths`)."""
    index = gpu_table._index(runs)
    values_by_switch = switch_values(set(excluded or ()) | broken_paths(runs))
    scored = []
    for values in itertools.product(*values_by_switch.values()):
        settings = dict(zip(values_by_switch, values))
        with switched(settings):
            scored.append((settings, score(index)))
    scored.sort(key=lambda item: (-item[1]["met"], item[1]["unknown"], item[1]["geomean"]))
    return scored


def breakdown_variants(runs: list[dict[str, Any]]) -> list[str]:
    """Per variant of the fused gradient path the breakdown timed: its total over the rows every variant has,
    relative to the default variant ("fused")."""
    totals: dict[tuple, dict[str, float]] = defaultdict(dict)
    knobs: dict[str, dict[str, Any]] = {}
    for data in runs[:1]:  # one run: the variants were timed side by side
        for entry in data.get("results", []):
            if entry.get("direction") == "vjp-breakdown" and gpu_table._timed(entry):
                totals[entry["cell"], tuple(entry["shape"])][entry["impl"]] = entry["median_ms"]
                knobs[entry["impl"]] = {k: entry[k] for k in ("BIAS_BY_MATMUL", "WEIGHT_GRAD_CHUNKS") if k in entry}
    variants = sorted({v for by_variant in totals.values() for v in by_variant})
    if "fused" not in variants:
        return []
    lines = []
    for variant in variants:
        rows = [by_variant for by_variant in totals.values() if variant in by_variant and "fused" in by_variant]
        if not rows:
            continue
        ratio = sum(r[variant] for r in rows) / sum(r["fused"] for r in rows)
        lines.append(f"- {variant} {knobs.get(variant, {})}: {ratio:.2f}x the time of 'fused' over {len(rows)} rows")
    return lines


def report(runs: list[dict[str, Any]], excluded: Optional[set[str]] = None) -> str:
    scored = rank(runs, excluded)
    left_out = set(excluded or ()) | broken_paths(runs)
    out = [
        "Dispatch switches scored on this run (targets met / rows, rows sent to an untimed path, geometric mean):",
        "",
    ]
    for settings, result in scored:
        text = ", ".join(f"{name}={value!r}" for name, value in settings.items())
        out.append(f"- {text}: {result['met']}/{result['total']} met, {result['unknown']} unknown, "
                   f"geomean {result['geomean']:.2f}x")  # fmt: skip
    if left_out:
        out += ["", f"Never switched on: {', '.join(sorted(left_out))} (failed in this run, or named by --exclude)"]
    best_settings, best = scored[0]
    out += ["", "Best: " + ", ".join(f"{name} = {value!r}" for name, value in best_settings.items()), ""]
    for direction, key, ratio in best["rows"]:
        shown = "not timed" if ratio is None else f"{ratio:.2f}x"
        out.append(f"  {direction:16} {key[0]:4} {key[1]}: {shown}")
    variants = breakdown_variants(runs)
    if variants:
        out += ["", "Fused gradient variants (breakdown, sum over shapes):"] + variants
    return "\n".join(out)


def environment(settings: dict[str, Any]) -> str:
    """``settings`` as the value of ``ARRAYRNN_CUPY_DISPATCH``."""
    return ",".join(f"{name}={int(value) if isinstance(value, bool) else value}" for name, value in settings.items())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="gpu_bench.py JSON files, newest first")
    parser.add_argument("--env", action="store_true", help="print only the best, as ARRAYRNN_CUPY_DISPATCH's value")
    parser.add_argument("--exclude", default="", help="comma-separated paths never to switch on")
    args = parser.parse_args(argv)
    excluded = {name for name in args.exclude.split(",") if name}
    runs = []
    for path in args.runs:
        with open(path, encoding="utf-8") as handle:
            runs.append(json.load(handle))
    print(environment(rank(runs, excluded)[0][0]) if args.env else report(runs, excluded))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
