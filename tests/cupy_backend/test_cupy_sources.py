"""The CUDA source of the CuPy fast paths compiles for the H100 (sm_90) with nvcc, where nvcc is installed.

No GPU needed: this catches syntax and type errors, register spills and missing entry points before
any device time is spent. (CuPy compiles the same source with NVRTC at run time.) The nvcc compiles take about a
minute per dtype: they are marked ``slow`` (``pytest -m "not slow"`` leaves them out; CI runs them).
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

from arrayrnn._backends.cupy import sources as cupy_sources
from tests.cupy_backend import cuda_emulator  # (imports the experimental package where present: its parts register)

NVCC = shutil.which("nvcc")


def test_every_kernel_has_an_entry_point_and_option_bits_are_distinct():
    specs = cupy_sources.kernel_specs()
    source = cupy_sources.source("float32")
    for name, params in specs.items():
        signature = re.search(rf"ARRAYRNN_ENTRY (?:ARRAYRNN_CLUSTER_DIMS\(\d+\) )?{name}\((.*?)\)", source)
        assert signature, name
        assert signature.group(1).count(",") == len(params) - 1, name
    for name in specs:  # each kernel's part (the module CuPy compiles for it) defines it, and no other part does
        part = cupy_sources.part_of(name)
        for other in cupy_sources.parts():
            defined = re.search(rf" {name}\(", cupy_sources.source("float32", other)) is not None
            assert defined == (other == part), (name, other)
    bits = list(cupy_sources.OPTIONS.values())
    assert len(set(bits)) == len(bits) and all(bit & (bit - 1) == 0 for bit in bits)
    with pytest.raises(ValueError, match="float16, float32 and float64"):
        cupy_sources.source("int32")
    assert '#define ARRAYRNN_ENTRY extern "C" __global__ void' in source


def test_kernel_files_are_package_data_and_no_python_file_holds_kernel_code():
    """Every kernel file a part names exists under the package, and the Python sources only generate entry points
    (the kernel bodies live in kernels/*.cuh)."""
    package = pathlib.Path(cupy_sources.__file__).parent
    for part in cupy_sources.parts():
        for file in cupy_sources._PARTS[part].files:
            assert file.text().strip(), file
    for path in package.rglob("*.py"):
        assert "__global__" not in path.read_text(), path


@pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler")
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_each_part_compiles_on_its_own(tmp_path, dtype):
    """A part holds only the kernel files it names: each one compiles alone (g++ with the emulator's CUDA
    stand-ins, syntax and templates only), so no part leans on a file of another."""
    for part in cupy_sources.parts():
        path = tmp_path / f"{part}.cpp"
        path.write_text(cuda_emulator._PRELUDE + cupy_sources.source(dtype, part))
        command = [cuda_emulator.compiler(), "-std=c++17", "-fsyntax-only", "-w", str(path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"part {part}:\n{result.stderr[:3000]}"


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_compiles_for_sm90_without_spills(tmp_path, dtype):
    path = tmp_path / f"kernels_{dtype}.cu"
    path.write_text(cupy_sources.source(dtype))
    command = [NVCC, "-arch=sm_90", "-std=c++17", "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = result.stderr
    assert "warning" not in report.lower(), report
    compiled = set(re.findall(r"Compiling entry function '(\w+)'", report))
    assert compiled == set(cupy_sources.kernel_specs())
    spills = re.findall(
        r"Function properties for (\w+)\n\s+\d+ bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
        report,
    )
    # the cluster kernels keep their reduce-scatter values in registers (a stack frame means an array indexed at
    # run time: local memory in the innermost loop)
    frames = re.findall(r"Function properties for (\w+)\n\s+(\d+) bytes stack frame", report)
    cluster = {name for name in compiled if cupy_sources.part_of(name).startswith("cluster")}
    assert [name for name, size in frames if name in cluster and int(size)] == []
    assert len(spills) >= len(compiled), report
    for name, stores, loads in spills:
        # The graph executor (one switch over every gradient step kernel) may spill a few registers in float64 at
        # the widest batch tile: a few bytes per task, next to the kernel launch per step it saves. Nothing else may.
        allowed = 128 if "exec_" in name or name.startswith("graph_executor") else 0  # (exec_ names are mangled)
        assert int(stores) <= allowed and int(loads) <= allowed, f"{name} spills: {stores} B stored, {loads} B loaded"
