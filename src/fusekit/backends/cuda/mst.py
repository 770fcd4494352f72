"""CUDA kernels of the mst family: none yet (Borůvka on the GPU is planned, see docs/mst.md)."""
