"""CUDA C++ source of the CuPy gradient path (``cupy_grad.py``): recording forward steps and backward steps.

Appended to the forward source by ``cupy_sources.source`` (one compiled module per dtype), so every
kernel here is also covered by the nvcc compile test and the CPU warp emulator. Same conventions as
``cupy_sources`` (C-contiguous arrays, ``gx`` without bias, option bits, ``acc_t`` arithmetic, one
thread per ``(b, j)`` state element; the ``FUSED_INDEX`` macro and the device helpers come from there).

Recording forward (the fused and graph forward steps, also writing what the backward pass needs; they have no
body of their own: each entry point calls its forward twin's ``_impl`` in ``cupy_sources`` with the template
flag ``RECORD = true``, see ``GRAD_RECORDS``):

* ``lstm_record_step``: the gate pre-activations ``z (B, 4H)`` *after* peepholes and *before* clip
  (activations and clip masks are recomputed from them) and the cell state ``c`` of every step, written
  to ``c_out`` (the masked state: the state of a padded step is ``c_prev``), so ``c_{t-1}`` of any step is
  the previous step's record;
* ``gru_record_step`` (``linear_before_reset=True``): ``r, u, n (B, 3H)`` and ``h W_hn^T + b_hn (B, H)``;
  ``gru_record_finish`` (``False``): ``r, u, n`` (``gru_fused_reset`` and cuBLAS did the first half);
* RNN: nothing (the fused step's ``y`` holds ``h``; its derivative is read back from ``y``).

Backward, one kernel per step between cuBLAS matmuls (the loop runs the forward order backwards; ``s`` is
the step processed just before, ``-1`` for the first). The cotangent of ``h`` entering step ``t`` is

    dh_in = (s >= 0 and step s valid) ? mm + part : carry

where ``mm = dz_s W_hh`` (cuBLAS) and ``part`` the pointwise share of ``dh_prev`` (GRU: ``dh u``) written
at step ``s``, and ``carry`` the cotangent before step ``s`` (a padded step passes it through untouched,
exactly the ``where`` of the generic core, so NaN in padding never leaks). Each kernel stores ``dh_in``
back to ``carry``. Gate gradients of padded steps are written as exact zeros (``where``, not a product).
"""

from __future__ import annotations

# Parameter lists, in call order (kinds as in cupy_sources: in/out/lengths/int/acc).
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

# Recording forward kernel -> the forward kernel whose _impl (in cupy_sources) it calls with the template flag
# RECORD = true and its own parameters in order: one body for both, the recording one also writing its records.
GRAD_RECORDS = {
    "lstm_record_step": "lstm_fused_step",
    "gru_record_step": "gru_fused_step",
    "gru_record_finish": "gru_fused_finish",
    "lstm_graph_record": "lstm_graph_step",
    "gru_graph_record": "gru_graph_step",
    "gru_graph_record_reset": "gru_graph_reset",
    "gru_graph_record_finish": "gru_graph_finish",
}

GRAD_SOURCE = r"""
// ---------------------------------------------------------------------------------------------
// gradient path: backward steps (one thread per (b, j); cuBLAS forms dz W_hh between them)

// The cotangent of h entering backward step t (see the module docstring); stored back to carry.
__device__ __forceinline__ acc_t incoming_dh(const scalar_t* __restrict__ mm, const scalar_t* __restrict__ part,
                                             const long long* __restrict__ lengths, scalar_t* __restrict__ carry,
                                             int options, int b, long long index, int s) {
  acc_t dh;
  if (s >= 0 && step_is_valid(lengths, options, b, s)) {
    dh = load(mm[index]);
    if (options & OPT_PART) dh += load(part[index]);
    const scalar_t rounded = store(dh);  // carried in the storage dtype, like every other state
    carry[index] = rounded;
    return load(rounded);
  }
  return load(carry[index]);
}

__device__ __forceinline__ acc_t with_output_cotangent(acc_t dh, const scalar_t* __restrict__ dy, int options,
                                                       long long index) {
  return (options & OPT_DY) ? dh + load(dy[index]) : dh;
}

// (B, width): carry <- dh_in; with t >= 0 also dh_out = (step t valid) ? dh_in + dy : 0 (the LSTM projection's
// cotangent, projected back by cuBLAS next); with t < 0 only the final carry (after the last step).
__device__ __forceinline__ void grad_combine_impl(const scalar_t* __restrict__ mm, const scalar_t* __restrict__ part,
                                                  const long long* __restrict__ lengths,
                                                  const scalar_t* __restrict__ dy, scalar_t* __restrict__ carry,
                                                  scalar_t* __restrict__ dh_out, int batch, int width, int s, int t,
                                                  int options) {
  FUSED_INDEX(width)
  (void)j;
  const acc_t dh = incoming_dh(mm, part, lengths, carry, options, b, index, s);
  if (t >= 0) {
    dh_out[index] = step_is_valid(lengths, options, b, t) ? store(with_output_cotangent(dh, dy, options, index))
                                                          : store((acc_t)0);
  }
}

__device__ __forceinline__ void rnn_grad_step_impl(const scalar_t* __restrict__ mm,
                                                   const long long* __restrict__ lengths,
                                                   const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                                                   scalar_t* __restrict__ carry, scalar_t* __restrict__ dz,
                                                   int batch, int hidden, int s, int t, int options) {
  FUSED_INDEX(hidden)
  (void)j;
  const acc_t dh = with_output_cotangent(incoming_dh(mm, mm, lengths, carry, options, b, index, s), dy, options, index);
  acc_t d_pre = (acc_t)0;
  if (step_is_valid(lengths, options, b, t)) {
    const acc_t h_new = load(y[index]);
    if (options & OPT_RELU) {
      d_pre = h_new > (acc_t)0 ? dh : (acc_t)0;
    } else {
      d_pre = dh * ((acc_t)1 - h_new * h_new);
    }
  }
  dz[index] = store(d_pre);
}

__device__ __forceinline__ acc_t kept(acc_t d, acc_t z, int options, acc_t clip) {
  // the derivative of clip: 0 where |z| > clip (and for NaN, like the generic core's abs(z) <= clip)
  if ((options & OPT_CLIP) && !(z >= -clip && z <= clip)) return (acc_t)0;
  return d;
}

// LSTM: the gate gradients dz (B, 4H) and the cell cotangent dc (in place) of element (b, j) from the
// cotangent dm of o tanh(c) (shared by the fused and graph kernels); with a projection also
// m_out = (step valid) ? o tanh(c) : 0 for the projection's weight gradient.
__device__ __forceinline__ void lstm_grad_pointwise(
    acc_t dm, bool valid, const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_new,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, scalar_t* __restrict__ dc, scalar_t* __restrict__ dz,
    scalar_t* __restrict__ m_out, int b, int j, long long index, int hidden, int options, acc_t clip) {
  const long long row = (long long)b * 4 * hidden;
  const acc_t zi = load(z[row + j]), zf = load(z[row + hidden + j]);
  const acc_t zg = load(z[row + 2LL * hidden + j]), zo = load(z[row + 3LL * hidden + j]);
  const acc_t input_gate = sigmoid_acc(clip_acc(zi, options, clip));
  const acc_t forget_gate =
      (options & OPT_COUPLED) ? (acc_t)1 - input_gate : sigmoid_acc(clip_acc(zf, options, clip));
  const acc_t cell_gate = acc_tanh(clip_acc(zg, options, clip));
  const acc_t output_gate = sigmoid_acc(clip_acc(zo, options, clip));
  const acc_t c = load(c_new[index]);
  const acc_t c_before = load(c_prev[index]);
  const acc_t tanh_c = acc_tanh(c);
  const acc_t dc_in = load(dc[index]);
  acc_t dcell = dc_in + dm * output_gate * ((acc_t)1 - tanh_c * tanh_c);
  const acc_t dzo = kept(dm * tanh_c * output_gate * ((acc_t)1 - output_gate), zo, options, clip);
  if (options & OPT_PEEP_O) dcell += dzo * load(peep_o[j]);
  acc_t d_input = dcell * cell_gate;
  acc_t d_forget = dcell * c_before;
  if (options & OPT_COUPLED) {
    d_input -= d_forget;
    d_forget = (acc_t)0;
  }
  const acc_t dzi = kept(d_input * input_gate * ((acc_t)1 - input_gate), zi, options, clip);
  const acc_t dzf = kept(d_forget * forget_gate * ((acc_t)1 - forget_gate), zf, options, clip);
  const acc_t dzg = kept(dcell * input_gate * ((acc_t)1 - cell_gate * cell_gate), zg, options, clip);
  acc_t dc_prev = dcell * forget_gate;
  if (options & OPT_PEEP_I) dc_prev += dzi * load(peep_i[j]);
  if ((options & OPT_PEEP_F) && !(options & OPT_COUPLED)) dc_prev += dzf * load(peep_f[j]);
  dz[row + j] = valid ? store(dzi) : store((acc_t)0);
  dz[row + hidden + j] = valid ? store(dzf) : store((acc_t)0);
  dz[row + 2LL * hidden + j] = valid ? store(dzg) : store((acc_t)0);
  dz[row + 3LL * hidden + j] = valid ? store(dzo) : store((acc_t)0);
  if (valid) dc[index] = store(dc_prev);
  if (options & OPT_PROJECT) m_out[index] = valid ? store(output_gate * tanh_c) : store((acc_t)0);
}

// LSTM, one step: without a projection dm = dh_in + dy comes from incoming_dh; with one, grad_combine and
// cuBLAS made dm = dh W_hr (the input dm).
__device__ __forceinline__ void lstm_grad_step_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ dm_in, const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_new,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, scalar_t* __restrict__ carry, scalar_t* __restrict__ dc,
    scalar_t* __restrict__ dz, scalar_t* __restrict__ m_out, int batch, int hidden, int s, int t, int options,
    acc_t clip) {
  FUSED_INDEX(hidden)
  acc_t dm;
  if (options & OPT_PROJECT) {
    dm = load(dm_in[index]);
  } else {
    dm = with_output_cotangent(incoming_dh(mm, mm, lengths, carry, options, b, index, s), dy, options, index);
  }
  lstm_grad_pointwise(dm, step_is_valid(lengths, options, b, t), z, c_new, c_prev, peep_i, peep_f, peep_o, dc, dz,
                      m_out, b, j, index, hidden, options, clip);
}

// GRU, linear_before_reset=True, element (b, j) from dh: dgx = [dr, du, dn] and dgh = [dr, du, dn * r]
// (pre-activation gradients), part = dh u (the pointwise share of dh_prev; dgh W_hh is added next step)
__device__ __forceinline__ void gru_grad_pointwise(acc_t dh, bool valid, const scalar_t* __restrict__ gates,
                                                   const scalar_t* __restrict__ hn,
                                                   const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part,
                                                   scalar_t* __restrict__ dgx, scalar_t* __restrict__ dgh, int b,
                                                   int j, long long index, int hidden) {
  const long long row = (long long)b * 3 * hidden;
  const acc_t reset = load(gates[row + j]), update = load(gates[row + hidden + j]);
  const acc_t candidate = load(gates[row + 2LL * hidden + j]);
  const acc_t d_candidate = dh * ((acc_t)1 - update) * ((acc_t)1 - candidate * candidate);
  const acc_t d_update = dh * (load(h_prev[index]) - candidate) * update * ((acc_t)1 - update);
  const acc_t d_reset = d_candidate * load(hn[index]) * reset * ((acc_t)1 - reset);
  if (valid) {
    dgx[row + j] = store(d_reset);
    dgx[row + hidden + j] = store(d_update);
    dgx[row + 2LL * hidden + j] = store(d_candidate);
    dgh[row + j] = store(d_reset);
    dgh[row + hidden + j] = store(d_update);
    dgh[row + 2LL * hidden + j] = store(d_candidate * reset);
  } else {
    const scalar_t zero = store((acc_t)0);
    dgx[row + j] = zero;
    dgx[row + hidden + j] = zero;
    dgx[row + 2LL * hidden + j] = zero;
    dgh[row + j] = zero;
    dgh[row + hidden + j] = zero;
    dgh[row + 2LL * hidden + j] = zero;
  }
  part[index] = store(dh * update);
}

__device__ __forceinline__ void gru_grad_step_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ part, scalar_t* __restrict__ carry, scalar_t* __restrict__ dgx, scalar_t* __restrict__ dgh,
    int batch, int hidden, int s, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t dh =
      with_output_cotangent(incoming_dh(mm, part, lengths, carry, options | OPT_PART, b, index, s), dy, options, index);
  gru_grad_pointwise(dh, step_is_valid(lengths, options, b, t), gates, hn, h_prev, part, dgx, dgh, b, j, index,
                     hidden);
}

// GRU, linear_before_reset=False, first half of element (b, j) from dh: dh kept in dh_out for the second half,
// du and dn into dgx (d_reset_h = dn W_hn is formed between the halves)
__device__ __forceinline__ void gru_grad_candidate_pointwise(acc_t dh, bool valid, const scalar_t* __restrict__ gates,
                                                             const scalar_t* __restrict__ h_prev,
                                                             scalar_t* __restrict__ dh_out, scalar_t* __restrict__ dgx,
                                                             int b, int j, long long index, int hidden) {
  dh_out[index] = store(dh);
  const long long row = (long long)b * 3 * hidden;
  const acc_t update = load(gates[row + hidden + j]), candidate = load(gates[row + 2LL * hidden + j]);
  const acc_t d_candidate = dh * ((acc_t)1 - update) * ((acc_t)1 - candidate * candidate);
  const acc_t d_update = dh * (load(h_prev[index]) - candidate) * update * ((acc_t)1 - update);
  dgx[row + hidden + j] = valid ? store(d_update) : store((acc_t)0);
  dgx[row + 2LL * hidden + j] = valid ? store(d_candidate) : store((acc_t)0);
}

// second half: dr into dgx, part = dh u + d_reset_h r ([dr, du] W_hh[:2H] is added next step),
// rh_out = (step valid) ? r h_prev : 0 for the gradient of W_hn
__device__ __forceinline__ void gru_grad_reset_pointwise(acc_t d_rh, bool valid, const scalar_t* __restrict__ dh,
                                                         const scalar_t* __restrict__ gates,
                                                         const scalar_t* __restrict__ h_prev,
                                                         scalar_t* __restrict__ part, scalar_t* __restrict__ dgx,
                                                         scalar_t* __restrict__ rh_out, int b, int j, long long index,
                                                         int hidden) {
  const long long row = (long long)b * 3 * hidden;
  const acc_t reset = load(gates[row + j]), update = load(gates[row + hidden + j]);
  const acc_t h_before = load(h_prev[index]);
  dgx[row + j] = valid ? store(d_rh * h_before * reset * ((acc_t)1 - reset)) : store((acc_t)0);
  part[index] = store(load(dh[index]) * update + d_rh * reset);
  rh_out[index] = valid ? store(reset * h_before) : store((acc_t)0);
}

__device__ __forceinline__ void gru_grad_candidate_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, const scalar_t* __restrict__ part,
    scalar_t* __restrict__ carry, scalar_t* __restrict__ dh_out, scalar_t* __restrict__ dgx, int batch, int hidden,
    int s, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t dh =
      with_output_cotangent(incoming_dh(mm, part, lengths, carry, options | OPT_PART, b, index, s), dy, options, index);
  gru_grad_candidate_pointwise(dh, step_is_valid(lengths, options, b, t), gates, h_prev, dh_out, dgx, b, j, index,
                               hidden);
}

__device__ __forceinline__ void gru_grad_reset_impl(
    const scalar_t* __restrict__ d_reset_h, const scalar_t* __restrict__ dh, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ rh_out, int batch, int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  gru_grad_reset_pointwise(load(d_reset_h[index]), step_is_valid(lengths, options, b, t), dh, gates, h_prev, part,
                           dgx, rh_out, b, j, index, hidden);
}
"""

# Graph kernels of the gradient path (``cupy_grad_graph.py``): one warp per (hidden unit j, NB batch rows), as
# the forward graph kernels in ``cupy_sources`` (whose ``warp_dots`` / ``warp_task`` they use), compiled per
# batch tile (``*_nb{N}``). The backward ones do the recurrent product ``dh_prev = dz W_hh`` themselves:
# with ``weight_t = W_hh^T`` (C-contiguous, ``(H, G*H)``, refreshed by the caller) the warp of unit ``j`` dots
# row ``j`` with the previous backward step's ``dz`` rows (coalesced), so a step is one launch and the
# whole loop can be captured in a CUDA graph (cuBLAS cannot).
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

GRAD_GRAPH_SOURCE = r"""
// ---------------------------------------------------------------------------------------------
// gradient path, graph kernels: one warp per (hidden unit j, NB batch rows)

// sums[n] = weight[row, :width] . vec[(b0 + n) * vec_stride + (0 .. width)]; every lane gets every sum, or with
// SCATTER (the cluster kernels: warp_reduce_scatter, 5 * NB shuffles down to about NB + 5) only lane n gets
// sums[n], the one the step bodies read. The whole warp must call this (full shuffle mask).
template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void warp_row_dots(const scalar_t* __restrict__ weight, long long row,
                                              const scalar_t* __restrict__ vec, long long vec_stride, int b0,
                                              int batch, int width, int lane, acc_t (&sums)[NB]) {
  constexpr int P = SCATTER ? scatter_width(NB) : NB;
  acc_t v[P];
#pragma unroll
  for (int n = 0; n < P; ++n) v[n] = (acc_t)0;
#pragma unroll 4
  for (int k = lane; k < width; k += 32) {
    const acc_t w = load(weight[row * width + k]);
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      if (b0 + n < batch) v[n] += w * load_state<COHERENT>(vec, (long long)(b0 + n) * vec_stride + k);  // uniform
    }
  }
  if constexpr (SCATTER) {
    warp_reduce_scatter<P>(v, lane);
    const acc_t mine = scattered_sum<P>(v, lane % NB);
#pragma unroll
    for (int n = 0; n < NB; ++n) sums[n] = mine;
  } else {
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      sums[n] = v[n];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sums[n] += __shfl_xor_sync(0xffffffffu, sums[n], offset);
    }
  }
}

// incoming_dh with this warp's dot in place of cuBLAS's mm
__device__ __forceinline__ acc_t graph_incoming(acc_t dot, const scalar_t* __restrict__ part,
                                                const long long* __restrict__ lengths, scalar_t* __restrict__ carry,
                                                int options, int b, long long at, int s) {
  if (s >= 0 && step_is_valid(lengths, options, b, s)) {
    acc_t dh = dot;
    if (options & OPT_PART) dh += load(part[at]);
    const scalar_t rounded = store(dh);
    carry[at] = rounded;
    return load(rounded);
  }
  return load(carry[at]);
}

// ---- backward steps: d_prev is the previous backward step's gate gradients (B, G*H) (unread when s < 0)

// dh_in + dy of element (b, at), batch row n of this warp, entering graph backward step t: graph_incoming of the
// warp's dots[n] (not read when s < 0: unset then), part added per part_options, then dy per options & OPT_DY
template <int NB>
__device__ __forceinline__ acc_t graph_step_dh(const acc_t (&dots)[NB], int n, const scalar_t* __restrict__ part,
                                               const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
                                               scalar_t* __restrict__ carry, int part_options, int options, int b,
                                               long long at, int s) {
  const acc_t dot = s >= 0 ? dots[n] : (acc_t)0;
  return with_output_cotangent(graph_incoming(dot, part, lengths, carry, part_options, b, at, s), dy, options, at);
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void rnn_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dz, int batch, int hidden, int s, int t, int options, long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, hidden, b0, batch, hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, d_prev, lengths, dy, carry, options & ~OPT_PART, options, b, at, s);
      acc_t d_pre = (acc_t)0;
      if (step_is_valid(lengths, options, b, t)) {
        const acc_t h_new = load(y[at]);
        d_pre = (options & OPT_RELU) ? (h_new > (acc_t)0 ? dh : (acc_t)0) : dh * ((acc_t)1 - h_new * h_new);
      }
      dz[at] = store(d_pre);
    }
  }
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void lstm_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_new,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, scalar_t* __restrict__ carry, scalar_t* __restrict__ dc,
    scalar_t* __restrict__ dz, int batch, int hidden, int s, int t, int options, acc_t clip,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) {
    warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, 4LL * hidden, b0, batch, 4 * hidden, lane, dots);
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dm = graph_step_dh<NB>(dots, n, d_prev, lengths, dy, carry, options & ~OPT_PART, options, b, at, s);
      lstm_grad_pointwise(dm, step_is_valid(lengths, options, b, t), z, c_new, c_prev, peep_i, peep_f, peep_o, dc,
                          dz, dz, b, j, at, hidden, options & ~OPT_PROJECT, clip);
    }
  }
}

template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void gru_graph_grad_impl(
    const scalar_t* __restrict__ weight_t, const scalar_t* __restrict__ d_prev, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn,
    const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ dgh, int batch, int hidden, int s, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) {
    warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, 3LL * hidden, b0, batch, 3 * hidden, lane, dots);
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, part, lengths, dy, carry, options | OPT_PART, options, b, at, s);
      gru_grad_pointwise(dh, step_is_valid(lengths, options, b, t), gates, hn, h_prev, part, dgx, dgh, b, j, at,
                         hidden);
    }
  }
}

// GRU, linear_before_reset=False, launch 1 of 2: dh_in from [dr, du]_s W_hh[:2H] (d_prev = dgx_s, row stride 3H)
template <int NB, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_grad_candidate_impl(
    const scalar_t* __restrict__ weight_rz_t, const scalar_t* __restrict__ d_prev,
    const long long* __restrict__ lengths, const scalar_t* __restrict__ dy, const scalar_t* __restrict__ gates,
    const scalar_t* __restrict__ h_prev, const scalar_t* __restrict__ part, scalar_t* __restrict__ carry,
    scalar_t* __restrict__ dh_out, scalar_t* __restrict__ dgx, int batch, int hidden, int s, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  if (s >= 0) warp_row_dots<NB, COHERENT>(weight_rz_t, j, d_prev, 3LL * hidden, b0, batch, 2 * hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      const long long at = (long long)b * hidden + j;
      const acc_t dh = graph_step_dh<NB>(dots, n, part, lengths, dy, carry, options | OPT_PART, options, b, at, s);
      gru_grad_candidate_pointwise(dh, step_is_valid(lengths, options, b, t), gates, h_prev, dh_out, dgx, b, j, at,
                                   hidden);
    }
  }
}

// launch 2 of 2: d_reset_h = dn W_hn from this step's n block of dgx (columns 2H.., written by launch 1);
// writes only the r block of dgx
template <int NB, bool COHERENT = false>
__device__ __forceinline__ void gru_graph_grad_reset_impl(
    const scalar_t* __restrict__ weight_n_t, const long long* __restrict__ lengths, const scalar_t* __restrict__ dh,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ rh_out, int batch, int hidden, int t, int options,
    long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  const scalar_t* dn = dgx + 2LL * hidden;
  warp_row_dots<NB, COHERENT>(weight_n_t, j, dn, 3LL * hidden, b0, batch, hidden, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) {
      gru_grad_reset_pointwise(dots[n], step_is_valid(lengths, options, b, t), dh, gates, h_prev, part, dgx, rh_out,
                               b, j, (long long)b * hidden + j, hidden);
    }
  }
}

// after the last backward step: carry = (step s valid) ? d_prev_s W (+ part) : carry
template <int NB, bool COHERENT = false, bool SCATTER = false>
__device__ __forceinline__ void graph_grad_finish_impl(const scalar_t* __restrict__ weight_t,
                                                       const scalar_t* __restrict__ d_prev,
                                                       const scalar_t* __restrict__ part,
                                                       const long long* __restrict__ lengths,
                                                       scalar_t* __restrict__ carry, int batch, int hidden, int width,
                                                       int stride, int s, int options,
                                                       long long warp = launch_warp()) {
  int lane, j, b0;
  if (!warp_task<NB>(batch, hidden, &lane, &j, &b0, warp)) return;
  acc_t dots[NB];
  warp_row_dots<NB, COHERENT, SCATTER>(weight_t, j, d_prev, stride, b0, batch, width, lane, dots);
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const int b = b0 + n;
    if (lane == n && b < batch) graph_incoming(dots[n], part, lengths, carry, options, b, (long long)b * hidden + j, s);
  }
}
"""
