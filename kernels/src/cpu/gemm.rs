//! Safe strided GEMM over slices (bounds checked), on top of CpuFloat::gemm (matrixmultiply).
