"""Slurm: sbatch templates and a single-node local cluster for tests."""
