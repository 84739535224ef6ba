"""Kernel specs of the CuPy gradient path (``kernels/grad_*.cuh``): recording forward steps and backward steps.

Part "grad" of ``sources.source``, following its conventions; what each kernel records and
how the backward carries the cotangent of ``h`` are in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

# Parameter lists, in call order (kinds: the keys of sources.C_TYPES). The kernels: kernels/grad_fused.cuh.
GRAD_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_record_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"), ("in", "c_prev"),
        ("out", "h"), ("out", "c_out"), ("out", "y"), ("out", "z_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_record_step": [
        ("in", "gx"), ("in", "gh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("out", "h"), ("out", "y"), ("out", "gates_out"), ("out", "hn_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_record_finish": [
        ("in", "gx"), ("in", "gh_rz"), ("in", "gh_n"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("lengths", "lengths"), ("out", "h"), ("out", "y"), ("out", "gates_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "grad_combine": [
        ("in", "mm"), ("in", "part"), ("lengths", "lengths"), ("in", "dy"), ("out", "carry"), ("out", "dh_out"),
        ("int", "batch"), ("int", "width"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "rnn_grad_step": [
        ("in", "mm"), ("lengths", "lengths"), ("in", "dy"), ("in", "y"), ("out", "carry"), ("out", "dz"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "lstm_grad_step": [
        ("in", "mm"), ("lengths", "lengths"), ("in", "dy"), ("in", "dm"), ("in", "z"), ("in", "c_new"),
        ("in", "c_prev"), ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"),
        ("out", "carry"), ("out", "dc"), ("out", "dz"), ("out", "m_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_grad_step": [
        ("in", "mm"), ("lengths", "lengths"), ("in", "dy"), ("in", "gates"), ("in", "hn"), ("in", "h_prev"),
        ("out", "part"), ("out", "carry"), ("out", "dgx"), ("out", "dgh"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "gru_grad_candidate": [
        ("in", "mm"), ("lengths", "lengths"), ("in", "dy"), ("in", "gates"), ("in", "h_prev"),
        ("in", "part"), ("out", "carry"), ("out", "dh_out"), ("out", "dgx"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "gru_grad_reset": [
        ("in", "d_reset_h"), ("in", "dh"), ("lengths", "lengths"), ("in", "gates"), ("in", "h_prev"),
        ("out", "part"), ("out", "dgx"), ("out", "rh_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
}  # fmt: skip

# Recording forward kernel -> the forward kernel whose _impl (kernels/fused.cuh, graph.cuh) it calls with the
# template flag RECORD = true and its own parameters in order: one body for both, the recording one also writing its
# records.
GRAD_RECORDS = {
    "lstm_record_step": "lstm_fused_step",
    "gru_record_step": "gru_fused_step",
    "gru_record_finish": "gru_fused_finish",
    "lstm_graph_record": "lstm_graph_step",
    "gru_graph_record": "gru_graph_step",
    "gru_graph_record_reset": "gru_graph_reset",
    "gru_graph_record_finish": "gru_graph_finish",
}

# Graph kernels of the gradient path (``grad_graph.py``, ``kernels/grad_graph.cuh``): one warp per (hidden unit j,
# NB batch rows), as the forward graph kernels in ``kernels/graph.cuh`` (whose ``warp_dots`` / ``warp_task`` they
# use), compiled per batch tile (``*_nb{N}``). The backward ones do the recurrent product ``dh_prev = dz W_hh``
# themselves: with ``weight_t = W_hh^T`` (C-contiguous, ``(H, G*H)``, refreshed by the caller) the warp of unit ``j``
# dots row ``j`` with the previous backward step's ``dz`` rows (coalesced), so a step is one launch and the whole loop
# can be captured in a CUDA graph (cuBLAS cannot).
GRAD_GRAPH_SPECS: dict[str, list[tuple[str, str]]] = {
    "lstm_graph_record": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"), ("lengths", "lengths"),
        ("in", "h_prev"), ("in", "c_prev"), ("out", "h_next"), ("out", "c_out"), ("out", "y"), ("out", "z_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_graph_record": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("out", "h_next"), ("out", "y"), ("out", "gates_out"), ("out", "hn_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "gru_graph_record_reset": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"),
        ("in", "h_prev"), ("out", "rh"), ("out", "gates_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "options"),
    ],
    "gru_graph_record_finish": [
        ("in", "gx"), ("in", "weight_hh"), ("in", "bias_ih"), ("in", "bias_hh"), ("lengths", "lengths"),
        ("in", "h_prev"), ("in", "rh"), ("out", "h_next"), ("out", "y"), ("out", "gates_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "rnn_graph_grad": [
        ("in", "weight_t"), ("in", "d_prev"), ("lengths", "lengths"), ("in", "dy"), ("in", "y"),
        ("out", "carry"), ("out", "dz"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "lstm_graph_grad": [
        ("in", "weight_t"), ("in", "d_prev"), ("lengths", "lengths"), ("in", "dy"), ("in", "z"), ("in", "c_new"),
        ("in", "c_prev"), ("in", "peep_i"), ("in", "peep_f"), ("in", "peep_o"),
        ("out", "carry"), ("out", "dc"), ("out", "dz"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"), ("acc", "clip"),
    ],
    "gru_graph_grad": [
        ("in", "weight_t"), ("in", "d_prev"), ("lengths", "lengths"), ("in", "dy"), ("in", "gates"), ("in", "hn"),
        ("in", "h_prev"), ("out", "part"), ("out", "carry"), ("out", "dgx"), ("out", "dgh"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "gru_graph_grad_candidate": [
        ("in", "weight_rz_t"), ("in", "d_prev"), ("lengths", "lengths"), ("in", "dy"), ("in", "gates"),
        ("in", "h_prev"), ("in", "part"), ("out", "carry"), ("out", "dh_out"), ("out", "dgx"),
        ("int", "batch"), ("int", "hidden"), ("int", "s"), ("int", "t"), ("int", "options"),
    ],
    "gru_graph_grad_reset": [
        ("in", "weight_n_t"), ("lengths", "lengths"), ("in", "dh"), ("in", "gates"), ("in", "h_prev"),
        ("out", "part"), ("out", "dgx"), ("out", "rh_out"),
        ("int", "batch"), ("int", "hidden"), ("int", "t"), ("int", "options"),
    ],
    "graph_grad_finish": [
        ("in", "weight_t"), ("in", "d_prev"), ("in", "part"), ("lengths", "lengths"), ("out", "carry"),
        ("int", "batch"), ("int", "hidden"), ("int", "width"), ("int", "stride"), ("int", "s"), ("int", "options"),
    ],
}  # fmt: skip
