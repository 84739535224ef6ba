// Storage dtype float64: scalar_t, acc_t and their conversions.
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

typedef double scalar_t;
typedef double acc_t;
__device__ __forceinline__ acc_t load(scalar_t v) { return v; }
__device__ __forceinline__ scalar_t store(acc_t v) { return v; }
__device__ __forceinline__ acc_t acc_tanh(acc_t v) { return tanh(v); }
__device__ __forceinline__ acc_t acc_from_bits(unsigned long long b) { return __longlong_as_double((long long)b); }
