// Storage dtype float16: scalar_t, acc_t and their conversions.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)
//
// float16 is stored as its 16 raw bits and converted with the PTX instructions cuda_fp16.h uses, so NVRTC
// needs no header; the arithmetic runs in float and is rounded once when stored (to nearest, ties to even).
// The CPU emulator defines the two conversions in software instead.

typedef unsigned short scalar_t;
typedef float acc_t;
#ifndef ARRAYRNN_HALF_TO_FLOAT
__device__ __forceinline__ float arrayrnn_half_to_float(unsigned short v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
  return f;
}
__device__ __forceinline__ unsigned short arrayrnn_float_to_half(float v) {
  unsigned short bits;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
  return bits;
}
#define ARRAYRNN_HALF_TO_FLOAT(v) arrayrnn_half_to_float(v)
#define ARRAYRNN_FLOAT_TO_HALF(v) arrayrnn_float_to_half(v)
#endif
__device__ __forceinline__ acc_t load(scalar_t v) { return ARRAYRNN_HALF_TO_FLOAT(v); }
__device__ __forceinline__ scalar_t store(acc_t v) { return ARRAYRNN_FLOAT_TO_HALF(v); }
__device__ __forceinline__ acc_t acc_tanh(acc_t v) { return tanhf(v); }
__device__ __forceinline__ acc_t acc_from_bits(unsigned long long b) { return __int_as_float((int)(unsigned int)b); }
