"""Evaluation: answer extraction and multiple-choice benchmarks."""
