// Dynamic shared memory of a launch (the tiled, persistent and cluster kernels).
// (A fragment of the source that arrayrnn/_backends/cupy/sources.py assembles: concatenated, not #included.)

#ifndef ARRAYRNN_DYNAMIC_SHARED
__device__ __forceinline__ unsigned char* arrayrnn_dynamic_shared() {
  extern __shared__ __align__(16) unsigned char arrayrnn_shared[];
  return arrayrnn_shared;
}
#define ARRAYRNN_DYNAMIC_SHARED() arrayrnn_dynamic_shared()
#endif
