//! ferrotron-launch: torchrun-style launcher, environment detection (torchrun, mpirun, srun), rendezvous.
