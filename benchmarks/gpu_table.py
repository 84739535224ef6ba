"""Turn the JSON of ``benchmarks/gpu_bench.py`` into the README's GPU section (markdown on stdout).

    python benchmarks/gpu_table.py benchmarks/results/gpu_h100_YYYY-MM-DD.json > table.md

Times are relative to cuDNN on the same GPU in the same run (lower is better); **bold** marks a
ratio at or under the target (forward <= 1.0x, forward+backward <= 1.2x). A path whose output did not
match cuDNN is marked "(mismatch)" and never counts as meeting a target.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any, Optional

CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
FORWARD_IMPLS = ("generic", "fused", "graph", "persistent", "auto")
TARGETS = {"forward": 1.0, "forward+backward": 1.2}


def _shape(entry: dict[str, Any]) -> tuple[int, ...]:
    return tuple(entry["shape"])


def _index(results: list[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, Any]]]:
    """(cell, shape, dtype, direction) -> impl -> entry."""
    table: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for entry in results:
        key = (entry["cell"], _shape(entry), entry["dtype"], entry["direction"])
        table[key][entry["impl"]] = entry
    return table


def _timed(entry: Optional[dict[str, Any]]) -> bool:
    return bool(entry) and "median_ms" in entry and not entry.get("error")


def _ratio_cell(entry: Optional[dict[str, Any]], reference: Optional[dict[str, Any]], target: float) -> str:
    if not entry:
        return "–"
    if entry.get("error"):
        return "error"
    if entry.get("skipped"):
        return "–"
    if not _timed(reference):
        return f"{entry['median_ms']:.2f} ms"
    ratio = entry["median_ms"] / reference["median_ms"]
    text = f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"
    if entry.get("ok") is False:
        return f"{text} (mismatch)"
    return f"**{text}**" if ratio <= target else text


def _shape_text(shape: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in shape)


def header(data: dict[str, Any]) -> str:
    machine, versions = data.get("machine", {}), data.get("versions", {})
    parts = [
        machine.get("device", "unknown device"),
        f"CuPy {versions.get('cupy', '?')}",
        f"torch {versions.get('torch', '?')} / cuDNN {versions.get('cudnn', '?')}",
        f"arrayrnn {versions.get('arrayrnn', '?')}"
        + (f" ({versions['git_commit'][:10]})" if versions.get("git_commit") else ""),
        "TF32 off" if not data.get("settings", {}).get("tf32") else "TF32 on",
        str(data.get("date", ""))[:10],
    ]
    return "; ".join(parts)


def forward_table(index, dtype: str) -> list[str]:
    rows = [
        "| cell | T, B, I, H | cuDNN | generic | fused | graph | persistent | auto (picks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        (k for k in index if k[2] == dtype and k[3] == "forward"), key=lambda k: (list(CELL_NAMES).index(k[0]), k[1])
    )
    for key in keys:
        impls = index[key]
        reference = impls.get("cudnn")
        if not any(name in impls for name in FORWARD_IMPLS):
            continue
        cudnn = f"{reference['median_ms']:.2f} ms" if _timed(reference) else "error" if reference else "–"
        cells = [_ratio_cell(impls.get(name), reference, TARGETS["forward"]) for name in FORWARD_IMPLS]
        choice = (impls.get("auto") or {}).get("auto_choice")
        if choice:
            cells[-1] += f" ({choice})"
        rows.append(f"| {CELL_NAMES[key[0]]} | {_shape_text(key[1])} | {cudnn} | " + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def backward_table(index) -> list[str]:
    rows = [
        "| cell | T, B, I, H | cuDNN fwd+bwd | arrayrnn.vjp (picks) | fused | graph | persistent | generic core |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted((k for k in index if k[3] == "forward+backward"), key=lambda k: (list(CELL_NAMES).index(k[0]), k[1]))
    notes = set()
    for key in keys:
        impls = index[key]
        reference = impls.get("cudnn")
        cudnn = f"{reference['median_ms']:.2f} ms" if _timed(reference) else "error" if reference else "–"
        ours = impls.get("vjp")
        if ours and ours.get("skipped"):
            notes.add(ours["skipped"])
        cells = [_ratio_cell(impls.get(name), reference, TARGETS["forward+backward"])
                 for name in ("vjp", "vjp-fused", "vjp-graph", "vjp-persistent", "vjp-generic")]  # fmt: skip
        choice = (ours or {}).get("auto_choice")
        if choice and ours and not ours.get("skipped"):
            cells[0] += f" ({choice})"
        rows.append(f"| {CELL_NAMES[key[0]]} | {_shape_text(key[1])} | {cudnn} | " + " | ".join(cells) + " |")
    if len(rows) == 2:
        return []
    return rows + ([""] + [f"({note})" for note in sorted(notes)] if notes else [])


def targets_summary(index) -> list[str]:
    """Per shape: does the best arrayrnn path meet the target, and the gap where it does not."""
    lines = []
    for direction, impls in (("forward", ("auto",)), ("forward+backward", ("vjp",))):
        target = TARGETS[direction]
        met, missed = 0, []
        for key in sorted(k for k in index if k[3] == direction and k[2] == "float32"):
            entries = index[key]
            reference = entries.get("cudnn")
            candidates = [entries.get(name) for name in impls]
            timed = [e for e in candidates if _timed(e) and e.get("ok") is not False]
            if not _timed(reference) or not timed:
                continue
            ratio = min(e["median_ms"] for e in timed) / reference["median_ms"]
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
    if impl.startswith("persistent[") and "tile" in entry:
        return f"persistent, {entry['threads']} threads, {entry['blocks_per_sm']}/SM", int(entry["tile"])
    if impl.startswith("graph[nb="):
        return "graph", int(impl[len("graph[nb=") : -1])
    return None


def sweep_table(results) -> list[str]:
    runs = defaultdict(lambda: defaultdict(dict))
    chosen = {}
    for entry in results:
        config = _sweep_config(entry)
        if config is not None and _timed(entry):
            key = (entry["cell"], _shape(entry))
            runs[key][config[0]][config[1]] = entry["median_ms"]
            chosen[key] = entry.get("chosen_tile")
    if not runs:
        return []
    rows = ["| cell | T, B, I, H | kernel | ms per batch tile (1 / 2 / 4 / 8) | best | chosen tile |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted(runs, key=lambda k: (list(CELL_NAMES).index(k[0]), k[1])):
        for label, times in runs[key].items():
            text = " / ".join(f"{times[t]:.3f}" if t in times else "–" for t in (1, 2, 4, 8))
            best = min(times, key=times.get)
            row = f"| {CELL_NAMES[key[0]]} | {_shape_text(key[1])} | {label} | {text} | {best} | {chosen[key]} |"
            rows.append(row)
    return rows


def render(data: dict[str, Any]) -> str:
    index = _index(data.get("results", []))
    out = [f"GPU results: {header(data)}.", ""]
    forward = forward_table(index, "float32")
    if forward:
        out += ["Forward, float32, time relative to cuDNN `torch.nn` with the same weights (lower is better):", ""]
        out += forward + [""]
    backward = backward_table(index)
    if backward:
        out += ["Forward + backward, float32 (torch autograd vs `arrayrnn.vjp`):", ""] + backward + [""]
    half = forward_table(index, "float16")
    if half:
        out += ["Forward, float16:", ""] + half + [""]
    summary = targets_summary(index)
    if summary:
        out += ["Targets:", ""] + summary + [""]
    sweep = sweep_table(data.get("results", []))
    if sweep:
        out += ["Batch tile (rows per warp task) and block size sweep, forward float32:", ""] + sweep + [""]
    failures = [e for e in data.get("results", []) if e.get("error")]
    if failures:
        out += [f"{len(failures)} measurement(s) failed; see the JSON for the errors."]
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        sys.stdout.write(render(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
