// Gradient of path "fused": the backward step kernels run between cuBLAS products.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

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
