"""Turn the JSON of ``benchmarks/gpu_bench.py`` into the GPU tables of docs/benchmarks.md (markdown on stdout).

    python benchmarks/gpu_table.py benchmarks/results/gpu_h100_YYYY-MM-DD.json [older runs ...] > table.md

Times are relative to cuDNN on the same GPU in the same run (lower is better; where the run timed a path
alternately with cuDNN, the median of those per-pair ratios); **bold** marks a
ratio at or under the target (forward <= 1.0x, forward+backward <= 1.2x). A path whose output did not
match cuDNN is marked "(mismatch)" and never counts as meeting a target.

Several result files: each row (cell, shape, dtype, direction) comes whole from the first file that timed
cuDNN for it, so every ratio is still within one run; rows from a later file are marked with that run's
letter. The "auto" column shows the path the *current* ``choose_impl`` heuristic picks: where the run
recorded a different choice (the heuristic moved after the run), the cell is that path's own measurement
from the same run, marked †.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from typing import Any, Optional

CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
FORWARD_IMPLS = ("generic", "fused", "fused_graph", "graph", "tiled", "persistent", "cluster", "auto")
BACKWARD_IMPLS = ("vjp", "vjp-fused", "vjp-fused_graph", "vjp-graph", "vjp-persistent", "vjp-cluster", "vjp-generic")
TARGETS = {"forward": 1.0, "forward+backward": 1.2}
RUN_LETTERS = "ABCDEFGH"


def _shape(entry: dict[str, Any]) -> tuple[int, ...]:
    return tuple(entry["shape"])


def _timed(entry: Optional[dict[str, Any]]) -> bool:
    return bool(entry) and "median_ms" in entry and not entry.get("error") and not entry.get("skipped")


def _index(runs: list[dict[str, Any]]) -> dict[tuple, tuple[int, dict[str, dict[str, Any]]]]:
    """(cell, shape, dtype, direction) -> (run number, impl -> entry), each row from one run: the first whose
    cuDNN reference for that row was timed (else the first that has the row at all)."""
    table: dict[tuple, tuple[int, dict[str, dict[str, Any]]]] = {}
    for number, data in enumerate(runs):
        rows: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
        clusters = _has_clusters(data)
        for entry in data.get("results", []):
            entry["_clusters"] = clusters  # the run's GPU, for today's auto choice (_auto)
            rows[(entry["cell"], _shape(entry), entry["dtype"], entry["direction"])][entry["impl"]] = entry
        for key, impls in rows.items():
            if key not in table or (not _timed(table[key][1].get("cudnn")) and _timed(impls.get("cudnn"))):
                table[key] = (number, impls)
    return table


def _has_clusters(data: dict[str, Any]) -> bool:
    """Whether the run's GPU has thread block clusters (compute capability 9.0 or later)."""
    capability = str(data.get("machine", {}).get("compute_capability", "0"))
    try:
        return float(capability) >= 9.0
    except ValueError:
        return False


def _ratio_cell(entry: Optional[dict[str, Any]], reference: Optional[dict[str, Any]], target: float) -> str:
    if not entry:
        return "–"
    if entry.get("error"):
        # a path that refuses the shape or the device (ValueError "impl='cluster': ...") is not a failure
        return "n/a" if entry["error"].startswith("ValueError: impl=") else "error"
    if entry.get("skipped"):
        return "–"
    if "paired_ratio" in entry:  # timed alternately with cuDNN (gpu_bench.Machine.time_pairs)
        ratio = entry["paired_ratio"]
    elif not _timed(reference):
        return f"{entry['median_ms']:.2f} ms"
    else:
        ratio = entry["median_ms"] / reference["median_ms"]
    text = f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"
    if entry.get("ok") is False:
        return f"{text} (mismatch)"
    return f"**{text}**" if ratio <= target else text


def _reference_cell(reference: Optional[dict[str, Any]]) -> str:
    if _timed(reference):
        return f"{reference['median_ms']:.2f} ms"
    return "error" if reference and reference.get("error") else "–"


def _shape_text(shape: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in shape)


#: shared memory per block of a cluster kernel on a GPU with clusters (an H100's), for today's auto choice
HOPPER_CLUSTER_SHARED = 227 * 1024


def _current_choice(
    cell: str, shape: tuple[int, ...], dtype: str, direction: str, clusters: bool = False
) -> Optional[str]:
    """The path today's heuristic picks for this row on the run's GPU (``clusters``: compute capability 9.0 or
    later; None where arrayrnn cannot be imported)."""
    try:
        from arrayrnn._backends.cupy import policy
    except ImportError:
        return None
    steps, batch, _, hidden = shape
    shared = HOPPER_CLUSTER_SHARED if clusters and policy.current().cluster_auto else 0
    if direction == "forward":
        return policy.choose_impl(cell, steps=steps, batch=batch, hidden=hidden, dtype=dtype, cluster_shared=shared)
    forward = policy.choose_impl(
        cell, steps=steps * policy.current().grad_buffer_factor, batch=batch, hidden=hidden, dtype=dtype,
        cluster_shared=shared,
    )  # fmt: skip
    return policy.grad_choice(cell, forward, batch=batch, hidden=hidden, dtype=dtype, cluster_shared=shared)


def _auto(impls: dict[str, dict[str, Any]], key: tuple, auto_name: str, prefix: str) -> tuple[Optional[dict], str]:
    """(entry, label) for the auto column: the run's own auto measurement where it chose what today's heuristic
    chooses, else (or where the run did not time auto) that path's measurement from the same run (marked †)."""
    measured = impls.get(auto_name)
    recorded = (measured or {}).get("auto_choice")
    current = _current_choice(*key, clusters=any(entry.get("_clusters") for entry in impls.values()))
    if current is not None and measured is None:  # the run did not time auto itself: the path it picks
        return impls.get(prefix + current), f" ({current}†)"
    if current is None or recorded is None or current == recorded:
        return measured, f" ({recorded})" if recorded else ""
    return impls.get(prefix + current), f" ({current}†)"


def header(data: dict[str, Any]) -> str:
    machine, versions = data.get("machine", {}), data.get("versions", {})
    parts = [
        machine.get("device", "unknown device"),
        f"CuPy {versions.get('cupy', '?')}",
        f"torch {versions.get('torch', '?')} / cuDNN {versions.get('cudnn', '?')}",
        f"arrayrnn {versions.get('arrayrnn', '?')}",
        "TF32 off" if not data.get("settings", {}).get("tf32") else "TF32 on",
        str(data.get("date", ""))[:19].replace("T", " ") + " UTC",
    ]
    return "; ".join(parts)


def _keys(index, dtype: Optional[str], direction: str) -> list[tuple]:
    keys = [k for k in index if k[3] == direction and (dtype is None or k[2] == dtype)]
    return sorted(keys, key=lambda k: (list(CELL_NAMES).index(k[0]), k[1]))


def _row_start(key: tuple, run: int, reference: Optional[dict]) -> str:
    mark = f" ({RUN_LETTERS[run]})" if run else ""
    return f"| {CELL_NAMES[key[0]]} | {_shape_text(key[1])}{mark} | {_reference_cell(reference)} | "


def forward_table(index, dtype: str) -> list[str]:
    keys = _keys(index, dtype, "forward")
    # the paths some run measured (a path newer than every run gets no empty column)
    shown = [name for name in FORWARD_IMPLS[:-1] if any(name in index[key][1] for key in keys)]
    rows = [
        "| cell | T, B, I, H | cuDNN | " + " | ".join(shown) + " | auto (picks) |",
        "|---|---|---|" + "---|" * (len(shown) + 1),
    ]
    for key in keys:
        run, impls = index[key]
        reference = impls.get("cudnn")
        if not any(name in impls for name in FORWARD_IMPLS):
            continue
        cells = [_ratio_cell(impls.get(name), reference, TARGETS["forward"]) for name in shown]
        auto, label = _auto(impls, key, "auto", "")
        cells.append(_ratio_cell(auto, reference, TARGETS["forward"]) + (label if auto else ""))
        rows.append(_row_start(key, run, reference) + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def backward_table(index) -> list[str]:
    keys = _keys(index, None, "forward+backward")
    shown = [name for name in BACKWARD_IMPLS[1:] if any(name in index[key][1] for key in keys)]
    titles = [name.removeprefix("vjp-") if name != "vjp-generic" else "generic core" for name in shown]
    rows = [
        "| cell | T, B, I, H | cuDNN fwd+bwd | arrayrnn.vjp (picks) | " + " | ".join(titles) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for key in keys:
        run, impls = index[key]
        reference = impls.get("cudnn")
        auto, label = _auto(impls, key, "vjp", "vjp-")
        cells = [_ratio_cell(auto, reference, TARGETS["forward+backward"]) + (label if auto else "")]
        cells += [_ratio_cell(impls.get(name), reference, TARGETS["forward+backward"]) for name in shown]
        rows.append(_row_start(key, run, reference) + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def auto_ratios(index) -> dict[str, list[tuple[tuple, Optional[float]]]]:
    """Per direction (float32 rows): (row key, time of the default path, the auto column, relative to cuDNN), the
    ratio ``None`` where that path was not timed in the row's run or did not match cuDNN."""
    found: dict[str, list[tuple[tuple, Optional[float]]]] = {}
    for direction, (auto_name, prefix) in (("forward", ("auto", "")), ("forward+backward", ("vjp", "vjp-"))):
        found[direction] = []
        for key in _keys(index, "float32", direction):
            _, impls = index[key]
            reference = impls.get("cudnn")
            auto, _ = _auto(impls, key, auto_name, prefix)
            if not _timed(auto) or auto.get("ok") is False or ("paired_ratio" not in auto and not _timed(reference)):
                found[direction].append((key, None))
                continue
            found[direction].append((key, auto.get("paired_ratio") or auto["median_ms"] / reference["median_ms"]))
    return found


def targets_summary(index) -> list[str]:
    """Per shape: does the default path (the auto column) meet the target, and the gap where it does not."""
    lines = []
    for direction, ratios in auto_ratios(index).items():
        target = TARGETS[direction]
        met, missed = 0, []
        for key, ratio in ratios:
            if ratio is None:
                continue
            if ratio <= target:
                met += 1
            else:
                missed.append(f"{CELL_NAMES[key[0]]} ({_shape_text(key[1])}): {ratio:.2f}× (target {target}×)")
        if met or missed:
            lines.append(f"- {direction}: target ≤ {target}× cuDNN met on {met} of {met + len(missed)} shapes"
                         + (";" if missed else "."))  # fmt: skip
            lines += [f"  - {text}" for text in missed]
    return lines


def _sweep_config(entry: dict[str, Any]) -> Optional[tuple[str, int]]:
    """(configuration label, batch tile) of a sweep entry: the persistent kernel's (with its threads per block
    and blocks per SM) or, in older results, the graph kernel's ``graph[nb=N]``."""
    impl = entry["impl"]
    if impl.startswith("cluster[") and "tile" in entry:
        return f"cluster, {entry['cluster_size']} blocks of {entry['threads']} threads", int(entry["tile"])
    if impl.startswith("persistent[") and "tile" in entry:
        barrier = ", acq/rel barrier" if entry.get("acqrel_barrier") else ""
        cap = f", at most {entry['max_blocks']} block(s)" if entry.get("max_blocks") else ""
        label = f"persistent, {entry['threads']} threads, {entry['blocks_per_sm']}/SM{barrier}{cap}"
        return label, int(entry["tile"])
    if impl.startswith("graph[nb="):
        return "graph", int(impl[len("graph[nb=") : -1])
    return None


def sweep_table(runs: list[dict[str, Any]]) -> list[str]:
    times = defaultdict(lambda: defaultdict(dict))
    chosen = {}
    for number, data in enumerate(runs):
        for entry in data.get("results", []):
            config = _sweep_config(entry)
            if config is not None and _timed(entry):
                key = (entry["cell"], _shape(entry))
                label = config[0] + (f" ({RUN_LETTERS[number]})" if number else "")
                times[key][label][config[1]] = entry["median_ms"]
                chosen[key, label] = entry.get("chosen_tile")
    if not times:
        return []
    rows = ["| cell | T, B, I, H | kernel | ms per batch tile (1 / 2 / 4 / 8) | best | chosen tile then |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted(times, key=lambda k: (list(CELL_NAMES).index(k[0]), k[1])):
        for label, by_tile in times[key].items():
            text = " / ".join(f"{by_tile[t]:.3f}" if t in by_tile else "–" for t in (1, 2, 4, 8))
            best = min(by_tile, key=by_tile.get)
            start = f"| {CELL_NAMES[key[0]]} | {_shape_text(key[1])} | {label} | "
            rows.append(start + f"{text} | {best} | {chosen[key, label]} |")
    return rows


def breakdown_table(runs: list[dict[str, Any]]) -> list[str]:
    """Milliseconds per part of the fused gradient path, per variant (benchmarks/gpu_bench.py breakdown_section)."""
    rows = []
    for number, data in enumerate(runs):
        for entry in data.get("results", []):
            if entry.get("direction") != "vjp-breakdown" or not _timed(entry):
                continue
            grads = next((entry[k] for k in entry if k.endswith("_param_grads_ms")), None)
            cells = [entry.get("forward_ms"), entry.get("backward_loop_ms"), entry.get("previous_hidden_ms"), grads,
                     entry.get("median_ms")]  # fmt: skip
            mark = f" ({RUN_LETTERS[number]})" if number else ""
            text = " | ".join("–" if v is None else f"{v:.2f}" for v in cells)
            start = f"| {CELL_NAMES[entry['cell']]} | {_shape_text(_shape(entry))}{mark} | {entry['impl']} |"
            rows.append(f"{start} {text} |")
    if not rows:
        return []
    head = "| cell | T, B, I, H | variant | recording forward | backward loop | previous h | param grads | total (ms) |"
    return [head, "|---|---|---|---|---|---|---|---|"] + rows


def barrier_table(runs: list[dict[str, Any]]) -> list[str]:
    """Microseconds per barrier (barrier-only kernels), by blocks: the grid barrier's two flavours and, where
    measured, the cluster barrier (one cluster of that many blocks)."""
    cost: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for number, data in enumerate(runs):
        for entry in data.get("results", []):
            if entry.get("direction") == "barrier" and _timed(entry) and "us_per_barrier" in entry:
                cost[number, entry["blocks"]][entry["impl"]] = entry["us_per_barrier"]
    if not cost:
        return []
    kinds = ["fences", "acqrel"] + (["cluster"] if any("cluster" in by_kind for by_kind in cost.values()) else [])
    titles = {"fences": "grid, fences", "acqrel": "grid, release/acquire", "cluster": "cluster barrier"}
    rows = ["| blocks of 256 threads | " + " | ".join(f"µs per barrier, {titles[k]}" for k in kinds) + " |",
            "|---|" + "---|" * len(kinds)]  # fmt: skip
    for (number, blocks), by_kind in sorted(cost.items()):
        mark = f" ({RUN_LETTERS[number]})" if number else ""
        cells = [f"{by_kind[k]:.2f}" if k in by_kind else "–" for k in kinds]
        rows.append(f"| {blocks}{mark} | " + " | ".join(cells) + " |")
    return rows


def render(runs: list[dict[str, Any]], names: Optional[list[str]] = None) -> str:
    if isinstance(runs, dict):
        runs = [runs]
    names = names or [""] * len(runs)
    index = _index(runs)
    source = lambda n: f" (`{names[n]}`)" if names[n] else ""  # noqa: E731
    out = [f"GPU results: {header(runs[0])}{source(0)}."]
    out += [f"Rows marked ({RUN_LETTERS[n]}): {header(data)}{source(n)}." for n, data in enumerate(runs) if n]
    out.append("")
    forward = forward_table(index, "float32")
    if forward:
        out += ["Forward, float32, time relative to cuDNN `torch.nn` with the same weights (lower is better):", ""]
        out += forward + [""]
    backward = backward_table(index)
    if backward:
        out += ["Forward + backward, float32 (torch autograd vs `arrayrnn.vjp`):", ""] + backward + [""]
    if any("†" in row for row in forward + backward):
        out += ["† the run did not time auto itself, or its auto chose differently (the heuristic moved after the "
                "run); shown: the measurement, in the same run, of the path the heuristic picks now.", ""]  # fmt: skip
    half = forward_table(index, "float16")
    if half:
        out += ["Forward, float16:", ""] + half + [""]
    summary = targets_summary(index)
    if summary:
        out += ["Targets (the default path, the auto column):", ""] + summary + [""]
    breakdown = breakdown_table(runs)
    if breakdown:
        out += ["Fused gradient path, where the time goes (between device synchronisations):", ""] + breakdown + [""]
    barriers = barrier_table(runs)
    if barriers:
        out += ["Barriers alone (the per-step floor of the persistent and cluster kernels):", ""] + barriers + [""]
    sweep = sweep_table(runs)
    if sweep:
        out += ["Batch tile (rows per warp task) and block size sweeps, forward float32:", ""] + sweep + [""]
    failures = [e for data in runs for e in data.get("results", []) if e.get("error")]
    if failures:
        out += [f"{len(failures)} measurement(s) failed; see the JSON for the errors."]
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for path in argv:
        with open(path) as handle:
            runs.append(json.load(handle))
    sys.stdout.write(render(runs, [os.path.basename(path) for path in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
