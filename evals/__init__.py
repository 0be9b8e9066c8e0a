"""Benchmark harness for BioCLIP: zero-shot and few-shot (SimpleShot) classification over YAML task specs.

Run from the repository root, e.g. `python -m evals.harness --model imageomics/bioclip --task rare_species`.
"""
