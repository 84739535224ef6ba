// Path "fused": the pointwise step kernels run after cuBLAS.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// ---------------------------------------------------------------------------------------------
// fused pointwise steps: one thread per (b, j); gh = h_prev W_hh^T came from cuBLAS

#define FUSED_INDEX(width)                                                     \
  const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;  \
  if (index >= (long long)batch * (width)) return;                             \
  const int b = (int)(index / (width));                                        \
  const int j = (int)(index - (long long)b * (width));

// h = y = (1 - u) n + u h on a valid step (h updated in place); else y = 0 and h unchanged
__device__ __forceinline__ void fused_gru_output(bool valid, acc_t update, acc_t candidate, scalar_t* __restrict__ h,
                                                 scalar_t* __restrict__ y, long long index) {
  if (valid) {
    const scalar_t h_new = store(gru_combine(update, candidate, load(h[index])));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}

// RECORD (the gradient path's lstm_record_step) also writes the pre-activations z (after peepholes, before
// clip) to z_out and the masked state to c_out (c_prev on a padded step); the forward step passes c as both
// c_prev and c_out (so those two are not __restrict__) and nullptr for z_out.
template <bool RECORD>
__device__ __forceinline__ void lstm_fused_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const scalar_t* __restrict__ peep_i, const scalar_t* __restrict__ peep_f,
    const scalar_t* __restrict__ peep_o, const long long* __restrict__ lengths, const scalar_t* c_prev,
    scalar_t* __restrict__ h, scalar_t* c_out, scalar_t* __restrict__ y, scalar_t* __restrict__ z_out, int batch,
    int hidden, int t, int options, acc_t clip) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 4 * hidden;
  acc_t z[4];
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const long long col = (long long)g * hidden + j;
    z[g] = preactivation(load(gx[row + col]), load(gh[row + col]), bias_ih, bias_hh, options, col);
  }
  const acc_t c_before = load(c_prev[index]);
  acc_t h_new, c_new;
  lstm_pointwise(z, c_before, peep_i, peep_f, peep_o, j, options, clip, &h_new, &c_new);
  if (RECORD) {
#pragma unroll
    for (int g = 0; g < 4; ++g) z_out[row + (long long)g * hidden + j] = store(z[g]);
  }
  const bool valid = step_is_valid(lengths, options, b, t);
  if (valid) {
    c_out[index] = store(c_new);
  } else if (RECORD) {
    c_out[index] = c_prev[index];
  }
  if (options & OPT_PROJECT) {
    // h is the (B, H) buffer projected by cuBLAS next; project_update masks h and y afterwards
    h[index] = store(h_new);
  } else if (valid) {
    h[index] = store(h_new);
    y[index] = store(h_new);
  } else {
    y[index] = store((acc_t)0);
  }
}

// after the LSTM projection: h = y = source on a valid step, else y = 0 and h unchanged
__device__ __forceinline__ void project_update_impl(const scalar_t* __restrict__ source,
                                                    const long long* __restrict__ lengths, scalar_t* __restrict__ h,
                                                    scalar_t* __restrict__ y, int batch, int width, int t,
                                                    int options) {
  FUSED_INDEX(width)
  (void)j;
  if (step_is_valid(lengths, options, b, t)) {
    h[index] = source[index];
    y[index] = source[index];
  } else {
    y[index] = store((acc_t)0);
  }
}

// GRU, linear_before_reset=True (PyTorch): n = tanh(gx_n + b_in + r * (gh_n + b_hn)).
// RECORD (gru_record_step) also writes r, u, n to gates_out (B, 3H) and hn = h W_hn^T + b_hn to hn_out.
template <bool RECORD>
__device__ __forceinline__ void gru_fused_step_impl(
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
  if (RECORD) {
    gates_out[row + r_col] = store(reset);
    gates_out[row + z_col] = store(update);
    gates_out[row + n_col] = store(candidate);
    hn_out[index] = store(hidden_n);
  }
  fused_gru_output(step_is_valid(lengths, options, b, t), update, candidate, h, y, index);
}

// GRU, linear_before_reset=False, first half: rh = r * h_prev (cuBLAS then computes rh W_hn^T)
__device__ __forceinline__ void gru_fused_reset_impl(const scalar_t* __restrict__ gx,
                                                     const scalar_t* __restrict__ gh_rz,
                                                     const scalar_t* __restrict__ bias_ih,
                                                     const scalar_t* __restrict__ bias_hh,
                                                     const scalar_t* __restrict__ h, scalar_t* __restrict__ rh,
                                                     int batch, int hidden, int options) {
  FUSED_INDEX(hidden)
  const acc_t reset = sigmoid_acc(preactivation(load(gx[(long long)b * 3 * hidden + j]),
                                                load(gh_rz[(long long)b * 2 * hidden + j]), bias_ih, bias_hh,
                                                options, j));
  rh[index] = store(reset * load(h[index]));
}

// GRU, linear_before_reset=False, second half: n = tanh(gx_n + b_in + (rh W_hn^T + b_hn)).
// RECORD (gru_record_finish) also recomputes r and writes r, u, n to gates_out (B, 3H).
template <bool RECORD>
__device__ __forceinline__ void gru_fused_finish_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh_rz, const scalar_t* __restrict__ gh_n,
    const scalar_t* __restrict__ bias_ih, const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths,
    scalar_t* __restrict__ h, scalar_t* __restrict__ y, scalar_t* __restrict__ gates_out, int batch, int hidden,
    int t, int options) {
  FUSED_INDEX(hidden)
  const long long row = (long long)b * 3 * hidden, rz_row = (long long)b * 2 * hidden;
  const long long r_col = j, z_col = (long long)hidden + j, n_col = 2LL * hidden + j;
  const acc_t update = sigmoid_acc(
      preactivation(load(gx[row + z_col]), load(gh_rz[rz_row + z_col]), bias_ih, bias_hh, options, z_col));
  const acc_t candidate =
      acc_tanh(preactivation(load(gx[row + n_col]), load(gh_n[index]), bias_ih, bias_hh, options, n_col));
  if (RECORD) {
    gates_out[row + r_col] = store(sigmoid_acc(
        preactivation(load(gx[row + r_col]), load(gh_rz[rz_row + r_col]), bias_ih, bias_hh, options, r_col)));
    gates_out[row + z_col] = store(update);
    gates_out[row + n_col] = store(candidate);
  }
  fused_gru_output(step_is_valid(lengths, options, b, t), update, candidate, h, y, index);
}

__device__ __forceinline__ void rnn_fused_step_impl(
    const scalar_t* __restrict__ gx, const scalar_t* __restrict__ gh, const scalar_t* __restrict__ bias_ih,
    const scalar_t* __restrict__ bias_hh, const long long* __restrict__ lengths, scalar_t* __restrict__ h,
    scalar_t* __restrict__ y, int batch, int hidden, int t, int options) {
  FUSED_INDEX(hidden)
  const acc_t z = preactivation(load(gx[index]), load(gh[index]), bias_ih, bias_hh, options, j);
  if (step_is_valid(lengths, options, b, t)) {
    const scalar_t h_new = store(rnn_activation(z, options));
    h[index] = h_new;
    y[index] = h_new;
  } else {
    y[index] = store((acc_t)0);
  }
}
