"""Shared helpers of the test suite and the benchmarks (one copy of each, importable as `support.<module>` with
`tests/` on `sys.path`: pytest puts it there; benchmarks and .ci scripts insert it).

- `paths`: the repository, `dataset_scripts/` and the shared real photos.
- `hub_cache`: the fake HF cache writer (blobs, `snapshots/<commit>/`, `refs/`) and the `offline_hub_cache` fixture.
- `hub_server` / `hub_fixtures`: a local Hub-compatible HTTP endpoint and the `hub_server`, `hub_dataset` fixtures.
- `models`: open_clip (the reference implementation), random checkpoints in open_clip's Hub layout, model releases.
- `treeoflife`: the synthetic Tree of Life (random taxa, any size) and index releases in the TreeOfLife-10M layout.
- `training_data`: synthetic TreeOfLife training data in every layout the loaders read (catalogs, shards, repos).
- `images`: small generated photos and a labelled image folder.
- `tolerances`: float tolerances for model outputs computed under other float kernels (processes, CPUs, layouts).
- `training`, `batch`: pieces shared by the training tests and by the batch-inference tests.
- `labelled`: labelled-photo data in every form a fine-tune reads (folder, table, datasets), from birds525 or generated.
- `finetune`: fine-tune configs and runs shared by the fine-tune tests and benchmark.
- `eval_suite`: miniatures of the BioCLIP 2 benchmark suite in its annotation layout and on the local Hub.
- `protocol_features`: synthetic Gaussian-cluster features for the BioCLIP 2 protocol tests.
- `pybioclip_runner`: a script running the same predictions with pybioclip or with bioclip-hf (parity test).
"""
