"""CUDA C++ source of the CuPy gradient path (``cupy_grad.py``): recording forward steps and backward steps.

Appended to the forward source by ``cupy_sources.source`` (one compiled module per dtype), so every
kernel here is also covered by the nvcc compile test and the CPU warp emulator. Same conventions as
``cupy_sources`` (C-contiguous arrays, ``gx`` without bias, option bits, ``acc_t`` arithmetic, one
thread per ``(b, j)`` state element; the ``FUSED_INDEX`` macro and the device helpers come from there).

Recording forward (the fused path's steps, also writing what the backward pass needs):

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

GRAD_SOURCE = r"""
// ---------------------------------------------------------------------------------------------
// gradient path: recording forward steps (fused: gh = h_prev W_hh^T came from cuBLAS)

__device__ __forceinline__ void lstm_record_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* __restrict__ c_prev,
    scalar_t* __restrict__ h, scalar_t* __restrict__ c_out, scalar_t* __restrict__ y, scalar_t* __restrict__ z_out,
    int batch, int hidden, int t, int options, acc_t clip) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 4 * hidden;
  acc_t z[4];
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const long long col = (long long)g * hidden + j;
    z[g] = preactivation(load(gx[row + col]), load(gh[row + col]), bias_ih, bias_hh, options, col);
  }
  const acc_t c_before = load(c_prev[index]);
  if (options & OPT_PEEP_I) z[0] += load(peep_i[j]) * c_before;
  if ((options & OPT_PEEP_F) && !(options & OPT_COUPLED)) z[1] += load(peep_f[j]) * c_before;
  const acc_t input_gate = sigmoid_acc(clip_acc(z[0], options, clip));
  const acc_t forget_gate =
      (options & OPT_COUPLED) ? (acc_t)1 - input_gate : sigmoid_acc(clip_acc(z[1], options, clip));
  const acc_t cell_gate = acc_tanh(clip_acc(z[2], options, clip));
  const acc_t c_new = forget_gate * c_before + input_gate * cell_gate;
  if (options & OPT_PEEP_O) z[3] += load(peep_o[j]) * c_new;
  const acc_t output_gate = sigmoid_acc(clip_acc(z[3], options, clip));
  const acc_t h_new = output_gate * acc_tanh(c_new);
#pragma unroll
  for (int g = 0; g < 4; ++g) z_out[row + (long long)g * hidden + j] = store(z[g]);
  const bool valid = step_is_valid(lengths, options, b, t);
  c_out[index] = valid ? store(c_new) : c_prev[index];
  if (options & OPT_PROJECT) {
    h[index] = store(h_new);  // the (B, H) buffer cuBLAS projects next; project_update masks h and y
  } else if (valid) {
    h[index] = store(h_new);
    y[index] = store(h_new);
  } else {
    y[index] = store((acc_t)0);
  }
}

// GRU, linear_before_reset=True; records r, u, n and hn = h W_hn^T + b_hn
__device__ __forceinline__ void gru_record_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* __restrict__ h,
    scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, scalar_t* __restrict__ hn_out, int batch,
    int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden;
  const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
  const acc_t reset =
      sigmoid_acc(preactivation(load(gx[row + r_col]), load(gh[row + r_col]), bias_ih, bias_hh, options, r_col));
  const acc_t update =
      sigmoid_acc(preactivation(load(gx[row + z_col]), load(gh[row + z_col]), bias_ih, bias_hh, options, z_col));
  const acc_t input_n = load(gx[row + n_col]) + bias_at(bias_ih, OPT_BIAS_IH, options, n_col);
  const acc_t hidden_n = load(gh[row + n_col]) + bias_at(bias_hh, OPT_BIAS_HH, options, n_col);
  const acc_t candidate = acc_tanh(input_n + reset * hidden_n);
  gates_out[row + r_col] = store(reset);
  gates_out[row + z_col] = store(update);
  gates_out[row + n_col] = store(candidate);
  hn_out[index] = store(hidden_n);
  if (step_is_valid(lengths, options, b, t)) {
    const scalar_t h_new = store(gru_combine(update, candidate, load(h[index])));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}

// GRU, linear_before_reset=False, second half (after gru_fused_reset and cuBLAS); records r, u, n
__device__ __forceinline__ void gru_record_finish_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh_rz, const scalar_t* __restrict__ gh_n,
    const scalar_t* __restrict__ bias_ih, const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths,
    scalar_t* __restrict__ h, scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, int batch, int hidden,
    int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden, rz_row = (long long)b * 2 * hidden;
  const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
  const acc_t reset = sigmoid_acc(
      preactivation(load(gx[row + r_col]), load(gh_rz[rz_row + r_col]), bias_ih, bias_hh, options, r_col));
  const acc_t update = sigmoid_acc(
      preactivation(load(gx[row + z_col]), load(gh_rz[rz_row + z_col]), bias_ih, bias_hh, options, z_col));
  const acc_t candidate =
      acc_tanh(preactivation(load(gx[row + n_col]), load(gh_n[index]), bias_ih, bias_hh, options, n_col));
  gates_out[row + r_col] = store(reset);
  gates_out[row + z_col] = store(update);
  gates_out[row + n_col] = store(candidate);
  if (step_is_valid(lengths, options, b, t)) {
    const scalar_t h_new = store(gru_combine(update, candidate, load(h[index])));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}

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

// LSTM: the gate gradients dz (B, 4H) and the cell cotangent dc (in place) of one step. Without a projection
// dm = dh_in + dy comes from incoming_dh; with one, grad_combine and cuBLAS made dm = dh W_hr (the input dm),
// and m_out = (step valid) ? o tanh(c) : 0 is recorded for the projection's weight gradient.
__device__ __forceinline__ void lstm_grad_step_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ dm_in, const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_new,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, scalar_t* __restrict__ carry, scalar_t* __restrict__ dc,
    scalar_t* __restrict__ dz, scalar_t* __restrict__ m_out, int batch, int hidden, int s, int t, int options,
    acc_t clip) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 4 * hidden;
  acc_t dm;
  if (options & OPT_PROJECT) {
    dm = load(dm_in[index]);
  } else {
    dm = with_output_cotangent(incoming_dh(mm, mm, lengths, carry, options, b, index, s), dy, options, index);
  }
  const bool valid = step_is_valid(lengths, options, b, t);
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

// GRU, linear_before_reset=True: dgx = [dr, du, dn] and dgh = [dr, du, dn * r] (pre-activation gradients),
// part = dh u (the pointwise share of dh_prev; cuBLAS adds dgh W_hh)
__device__ __forceinline__ void gru_grad_step_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ hn, const scalar_t* __restrict__ h_prev,
    scalar_t* __restrict__ part, scalar_t* __restrict__ carry, scalar_t* __restrict__ dgx, scalar_t* __restrict__ dgh,
    int batch, int hidden, int s, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t dh =
      with_output_cotangent(incoming_dh(mm, part, lengths, carry, options | OPT_PART, b, index, s), dy, options, index);
  const long long row = (long long)b * 3 * hidden;
  const acc_t reset = load(gates[row + j]), update = load(gates[row + hidden + j]);
  const acc_t candidate = load(gates[row + 2LL * hidden + j]);
  const acc_t d_candidate = dh * ((acc_t)1 - update) * ((acc_t)1 - candidate * candidate);
  const acc_t d_update = dh * (load(h_prev[index]) - candidate) * update * ((acc_t)1 - update);
  const acc_t d_reset = d_candidate * load(hn[index]) * reset * ((acc_t)1 - reset);
  if (step_is_valid(lengths, options, b, t)) {
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

// GRU, linear_before_reset=False, launch 1 of 2: dh (kept in dh_out for launch 2), du and dn into dgx
// (cuBLAS then forms d_reset_h = dn W_hn from dgx's n block)
__device__ __forceinline__ void gru_grad_candidate_impl(
    const scalar_t* __restrict__ mm, const long long* __restrict__ lengths, const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, const scalar_t* __restrict__ part,
    scalar_t* __restrict__ carry, scalar_t* __restrict__ dh_out, scalar_t* __restrict__ dgx, int batch, int hidden,
    int s, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t dh =
      with_output_cotangent(incoming_dh(mm, part, lengths, carry, options | OPT_PART, b, index, s), dy, options, index);
  dh_out[index] = store(dh);
  const long long row = (long long)b * 3 * hidden;
  const acc_t update = load(gates[row + hidden + j]), candidate = load(gates[row + 2LL * hidden + j]);
  const bool valid = step_is_valid(lengths, options, b, t);
  const acc_t d_candidate = dh * ((acc_t)1 - update) * ((acc_t)1 - candidate * candidate);
  const acc_t d_update = dh * (load(h_prev[index]) - candidate) * update * ((acc_t)1 - update);
  dgx[row + hidden + j] = valid ? store(d_update) : store((acc_t)0);
  dgx[row + 2LL * hidden + j] = valid ? store(d_candidate) : store((acc_t)0);
}

// GRU, linear_before_reset=False, launch 2 of 2: dr into dgx, part = dh u + d_reset_h r (cuBLAS adds
// [dr, du] W_hh[:2H]), rh_out = (step valid) ? r h_prev : 0 for the gradient of W_hn
__device__ __forceinline__ void gru_grad_reset_impl(
    const scalar_t* __restrict__ d_reset_h, const scalar_t* __restrict__ dh, const long long* __restrict__ lengths,
    const scalar_t* __restrict__ gates, const scalar_t* __restrict__ h_prev, scalar_t* __restrict__ part,
    scalar_t* __restrict__ dgx, scalar_t* __restrict__ rh_out, int batch, int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden;
  const acc_t reset = load(gates[row + j]), update = load(gates[row + hidden + j]);
  const acc_t h_before = load(h_prev[index]), d_rh = load(d_reset_h[index]);
  const bool valid = step_is_valid(lengths, options, b, t);
  dgx[row + j] = valid ? store(d_rh * h_before * reset * ((acc_t)1 - reset)) : store((acc_t)0);
  part[index] = store(load(dh[index]) * update + d_rh * reset);
  rh_out[index] = valid ? store(reset * h_before) : store((acc_t)0);
}
"""
