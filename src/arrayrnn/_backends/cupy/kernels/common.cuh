// Device helpers every kernel uses: activations, clip, biases, lengths, the LSTM cell.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

// Every entry point the Python side generates starts with this (extern "C": names CuPy can look up without
// mangling).
#define ARRAYRNN_ENTRY extern "C" __global__ void

__device__ __forceinline__ acc_t sigmoid_acc(acc_t z) {
  // 1 / (1 + exp(-z)) written with tanh: no overflow for large |z|, same formula as the generic core
  return acc_tanh(z * (acc_t)0.5) * (acc_t)0.5 + (acc_t)0.5;
}

__device__ __forceinline__ acc_t clip_acc(acc_t z, int options, acc_t clip) {
  // comparisons (not fmin/fmax) so that NaN stays NaN, like xp.clip
  if (options & OPT_CLIP) return z < -clip ? -clip : (z > clip ? clip : z);
  return z;
}

__device__ __forceinline__ acc_t bias_at(const scalar_t* __restrict__ bias, int flag, int options, long long i) {
  return (options & flag) ? load(bias[i]) : (acc_t)0;
}

__device__ __forceinline__ bool step_is_valid(const long long* __restrict__ lengths, int options, int b, int t) {
  return !(options & OPT_LENGTHS) || (long long)t < lengths[b];
}

// z = (gx + b_ih) + (gh + b_hh), the order of the generic core
__device__ __forceinline__ acc_t preactivation(acc_t gx, acc_t gh, const scalar_t* __restrict__ bias_ih,
                                               const scalar_t* __restrict__ bias_hh, int options, long long i) {
  return (gx + bias_at(bias_ih, OPT_BIAS_IH, options, i)) + (gh + bias_at(bias_hh, OPT_BIAS_HH, options, i));
}

// The LSTM pointwise step (PyTorch gates i, f, g, o; ONNX peepholes, coupled and clip) of one element.
// Peepholes: i and f see c_prev, o sees c_new; they are added to z in place (the gradient path records z
// after peepholes, before clip). coupled: f = 1 - i. clip: every pre-activation.
__device__ __forceinline__ void lstm_pointwise(acc_t (&z)[4], acc_t c_prev, const scalar_t* __restrict__ peep_i,
                                               const scalar_t* __restrict__ peep_f,
                                               const scalar_t* __restrict__ peep_o, int j, int options,
                                               acc_t clip, acc_t* h_new, acc_t* c_new) {
  if (options & OPT_PEEP_I) z[0] += load(peep_i[j]) * c_prev;
  const acc_t input_gate = sigmoid_acc(clip_acc(z[0], options, clip));
  acc_t forget_gate;
  if (options & OPT_COUPLED) {
    forget_gate = (acc_t)1 - input_gate;
  } else {
    if (options & OPT_PEEP_F) z[1] += load(peep_f[j]) * c_prev;
    forget_gate = sigmoid_acc(clip_acc(z[1], options, clip));
  }
  const acc_t cell_gate = acc_tanh(clip_acc(z[2], options, clip));
  const acc_t c = forget_gate * c_prev + input_gate * cell_gate;
  if (options & OPT_PEEP_O) z[3] += load(peep_o[j]) * c;
  const acc_t output_gate = sigmoid_acc(clip_acc(z[3], options, clip));
  *c_new = c;
  *h_new = output_gate * acc_tanh(c);
}

__device__ __forceinline__ acc_t gru_combine(acc_t update_gate, acc_t candidate, acc_t h_prev) {
  return ((acc_t)1 - update_gate) * candidate + update_gate * h_prev;
}

__device__ __forceinline__ acc_t rnn_activation(acc_t z, int options) {
  // relu as maximum(z, 0): NaN stays NaN
  if (options & OPT_RELU) return z < (acc_t)0 ? (acc_t)0 : z;
  return acc_tanh(z);
}
