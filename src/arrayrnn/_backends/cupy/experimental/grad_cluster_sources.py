"""Kernel specs of the "cluster" gradient path (``kernels/grad_cluster.cuh``): the backward loop in ONE cluster.

The blocks exchange each step's gate gradients through each other's shared memory (layout: ``benchmarks/NOTES.md``).
"""

from __future__ import annotations

#: the recording forward kernels (bodies in ``kernels/cluster.cuh``) and the backward kernels, per batch tile
#: and cluster size; "weight_t" is ``W_hh^T`` (H, G*H) C-contiguous; "dy" is read when ``options`` has OPT_DY
GRAD_CLUSTER_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_cluster_record": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("in", "h0"), ("in", "c0"), ("out", "h_last"), ("state", "cs"), ("out", "y"), ("out", "z"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"), ("acc", "clip"),
        ("int", "units"),
    ],
    "gru_cluster_record": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h0"), ("out", "h_last"), ("out", "y"), ("out", "gates"), ("out", "hn"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
    "rnn_cluster_grad": [
        ("in", "weight_t"), ("lengths", "lengths"), ("in", "dy"), ("in", "y"), ("state", "carry"), ("state", "dz"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
    "lstm_cluster_grad": [
        ("in", "weight_t"), ("lengths", "lengths"), ("in", "dy"), ("in", "z"), ("in", "cs"), ("in", "c0"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("state", "carry"), ("state", "dc"), ("state", "dz"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"), ("acc", "clip"),
        ("int", "units"),
    ],
    "gru_cluster_grad": [
        ("in", "weight_t"), ("lengths", "lengths"), ("in", "dy"), ("in", "gates"), ("in", "hn"), ("in", "h_prev"),
        ("state", "part"), ("state", "carry"), ("out", "dgx"), ("state", "dgh"),
        ("int", "steps"), ("int", "batch"), ("int", "hidden"), ("int", "reverse"), ("int", "options"),
        ("int", "units"),
    ],
}  # fmt: skip
