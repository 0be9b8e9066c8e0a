"""Saved models, runs and indexes keep their format across the house move.

`tests/data/pre_move/` holds files written by the package before the move (commit baf29f1): a trained tiny model's
config/processor files, its run config and trainer state, and a 12-taxa index in both index layouts. Weights and
tokenizer files are left out (megabytes); their formats are transformers' and safetensors', which the move did not touch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

PRE_MOVE = Path(__file__).parent / "data" / "pre_move"
ROLE_FILES = {"configuration_bioclip.py", "modeling_bioclip.py", "processing_bioclip.py", "image_transforms.py",
              "open_clip_format.py"}  # what save_pretrained copied before the move  # fmt: skip


def _auto_map(path: Path) -> dict[str, str]:
    return json.loads(path.read_text())["auto_map"]


def test_config_and_processor_written_before_the_move_load(tmp_path):
    from transformers import AutoConfig, AutoImageProcessor

    import bioclip_hf

    bioclip_hf.register_auto_classes()
    for name in ("config.json", "preprocessor_config.json", "processor_config.json"):
        shutil.copy(PRE_MOVE / name, tmp_path / name)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is bioclip_hf.BioCLIPConfig
    assert (config.vision_config.image_size, config.projection_dim) == (24, 16)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is bioclip_hf.BioCLIPImageProcessor
    assert (processor.size, processor.resize_mode, processor.preprocess_mode) == (24, "shortest", "open_clip")
    model = bioclip_hf.BioCLIPModel(config)
    assert model.encode_image(torch.zeros(1, 3, 24, 24)).shape == (1, 16)


def test_saving_now_writes_the_pre_move_format(tiny_hf_dir):
    """Same `auto_map` strings, the same settings keys, and (at least) the same remote-code files."""
    for name in ("config.json", "preprocessor_config.json", "processor_config.json"):
        assert _auto_map(tiny_hf_dir / name) == _auto_map(PRE_MOVE / name), name
    before = set(json.loads((PRE_MOVE / "preprocessor_config.json").read_text()))
    assert set(json.loads((tiny_hf_dir / "preprocessor_config.json").read_text())) == before
    import bioclip_hf

    copied = {p.name for p in tiny_hf_dir.glob("*.py")}
    role_dir = Path(bioclip_hf.__file__).parent / "models" / "bioclip"
    assert ROLE_FILES <= copied <= {p.name for p in role_dir.glob("*.py")}


def test_run_written_before_the_move_parses_and_resumes_its_state(tmp_path):
    from bioclip_hf.training.config import parse_config
    from bioclip_hf.training.trainer import TrainerState

    model_json = tmp_path / "tiny.json"
    model_json.write_text("{}")
    text = (PRE_MOVE / "run_config.yaml").read_text().replace("/tmp/oldart/a/tiny.json", str(model_json))
    (tmp_path / "run_config.yaml").write_text(text)
    config = parse_config([str(tmp_path / "run_config.yaml")])
    assert (config.max_steps, config.batch_size, config.save_steps, config.model_config) == (4, 4, 2, str(model_json))
    shutil.copy(PRE_MOVE / "trainer_state_0.json", tmp_path / "trainer_state_0.json")
    state = TrainerState.load(tmp_path, rank=0)
    assert (state.step, state.batches_seen) == (4, 4)


def test_indexes_written_before_the_move_load_in_both_layouts(tmp_path):
    from bioclip_hf import TreeOfLifeIndex

    shutil.copytree(PRE_MOVE, tmp_path / "pre_move")  # loading writes its derived-map cache beside the files
    folder = TreeOfLifeIndex.load(tmp_path / "pre_move" / "index")
    release = TreeOfLifeIndex.load(tmp_path / "pre_move" / "embeddings" / "txt_emb_species.npy")
    assert len(folder.taxa) == len(release.taxa) == 12
    assert [t.ranks() for t in folder.taxa] == [t.ranks() for t in release.taxa]
    assert [t.common_name for t in folder.taxa] == [t.common_name for t in release.taxa]
    # Both were written from the same float32 matrix; the release layout stores it as-is (no arithmetic).
    assert np.array_equal(folder.embeddings.float().numpy(), release.embeddings.float().numpy())
    families = {t.lineage("family") for t in release.taxa}
    assert len(release.groups("family")) == len(families)
