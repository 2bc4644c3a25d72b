//! ferrotron-parallel: process groups: the Comm trait (MPI, NCCL, host-staged MPI), the pp x dp x tp mesh, tensor-parallel layers, pipeline schedules.
