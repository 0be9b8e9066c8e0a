"""Benchmark harness for BioCLIP: zero-shot and few-shot (SimpleShot) classification over YAML task specs.

`bioclip-hf evaluate` is its command line. The task specs (`tasks/*.yaml`) and the `evaluate` metric modules
(`metrics/*/`) ship inside this package; in the repository they live in the top-level `evals/` folder, which
this package links to, so there is one copy of each.
"""
