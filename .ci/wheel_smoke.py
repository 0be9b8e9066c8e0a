"""Wheel smoke test: the package as users get it, i.e. built into a wheel and installed into a fresh venv.

    python .ci/wheel_smoke.py prepare WORKDIR   # build the wheel, create WORKDIR/venv, install torch + the wheel
    python .ci/wheel_smoke.py check WORKDIR     # from a folder outside the checkout: evaluate + 1-step train
    python .ci/wheel_smoke.py all WORKDIR       # both

`.ci/run` starts `prepare` in the background while the test suite runs, then runs `check`. The venv gets the CPU
torch wheel (`torch==2.13.0`, no torchvision: the package must not need it) and the wheel with its `train` and
`eval` extras, never the checkout: commands run with a clean environment from WORKDIR/outside, and the first
check asserts `bioclip_hf` is imported from the venv. The fixtures (a tiny random model, an image folder in the
Birds 525 layout, TreeOfLife-style shards) are made with the installed package and the tests' own builders; the
Hub is never contacted (HF_HUB_OFFLINE=1, empty HF_HOME).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_REQUIREMENT = "torch==2.13.0"
TINY_MODEL = {  # open_clip model config: tiny so that every step takes seconds
    "embed_dim": 16,
    "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 6, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
BIRDS = {  # class folder -> (common name, scientific name, RGB)
    "COMMON RAVEN": ("Common Raven", "Corvus corax", (20, 20, 30)),
    "EURASIAN MAGPIE": ("Eurasian Magpie", "Pica pica", (230, 230, 240)),
    "MALLARD DUCK": ("Mallard Duck", "Anas platyrhynchos", (40, 120, 60)),
}
MAKE_MODEL = """
import json, sys
import bioclip_hf
from bioclip_hf import BioCLIPConfig, BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer
assert "site-packages" in bioclip_hf.__file__, f"bioclip_hf imported from {bioclip_hf.__file__}, not the venv"
try:
    import torchvision  # noqa: F401
    sys.exit("torchvision is installed in the smoke venv: the test would not show that the package runs without it")
except ImportError:
    pass
# Package data from the repository's linked folders (evals/, model_card.md, configs/) must be in the wheel.
from bioclip_hf.evaluation.harness import METRICS_DIR
from bioclip_hf.evaluation.tasks import list_tasks
from bioclip_hf.hub.cards import DATASET_TEMPLATE_PATH, RESULTS_TEMPLATE_PATH, TEMPLATE_PATH
from bioclip_hf.training.config import RECIPES_DIR
assert len(list_tasks()) >= 10 and "birds525" in list_tasks(), list_tasks()
assert sorted(p.name for p in METRICS_DIR.iterdir()) == ["taxonomic_accuracy", "top_k_accuracy"]
assert TEMPLATE_PATH.is_file() and sorted(RECIPES_DIR.glob("*.yaml")), RECIPES_DIR
assert DATASET_TEMPLATE_PATH.is_file() and RESULTS_TEMPLATE_PATH.is_file()  # every card comes from a shipped template
cfg = json.load(open(sys.argv[1]))
BioCLIPModel(BioCLIPConfig.from_open_clip(cfg)).save_pretrained(sys.argv[2])
size = cfg["vision_cfg"]["image_size"]
BioCLIPProcessor(BioCLIPImageProcessor(size=size), load_tokenizer()).save_pretrained(sys.argv[2])
print(bioclip_hf.__file__)
"""


def log(message: str) -> None:
    print(f"[wheel-smoke] {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `command`; on failure print its output and stop with its status."""
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-5000:])
        sys.stderr.write(result.stderr[-5000:])
        raise SystemExit(f"[wheel-smoke] failed ({result.returncode}): {' '.join(map(str, command))}")
    shown = " ".join(str(part) if len(str(part)) < 60 else "<script>" for part in command[:5])
    log(f"{time.monotonic() - start:5.1f} s  {shown} ...")
    return result


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Python/venv/HF settings: PYTHONPATH pointing at the checkout would make pip
    think the package is installed and Python import it from there."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "VIRTUAL_ENV"))}
    return {**env, **extra}


def prepare(work: Path) -> None:
    """Build the wheel from a copy of the checkout and install it (+ CPU torch) into a fresh venv."""
    import shutil

    # A copy: setuptools builds in-tree (build/, *.egg-info), and stale files there would leak into the wheel.
    source, dist = work / "source", work / "dist"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".ruff_cache", "dist")
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)  # links (evals/, model_card.md) stay links
    env = clean_env()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], env=env)
    (wheel,) = dist.glob("bioclip_hf-*.whl")
    run([sys.executable, "-m", "venv", str(work / "venv")], env=env)
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, TORCH_REQUIREMENT], env=env)
    run([*pip, f"{wheel}[train,eval]"], env=env)


def make_bird_folder(root: Path, per_class: int = 3) -> Path:
    """An image folder in the Birds 525 layout (images/<CLASS>/<n>.jpg + labels.csv), colour-coded classes."""
    from PIL import Image

    rows = []
    for folder, (common, scientific, colour) in BIRDS.items():
        for n in range(1, per_class + 1):
            path = root / "images" / folder / f"{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + n, 36), tuple(min(255, c + 10 * n) for c in colour)).save(path)
            rows.append({"file": f"images/{folder}/{n}.jpg", "common_name": common, "scientific_name": scientific})
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "common_name", "scientific_name"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_fixtures(work: Path) -> dict[str, Path]:
    """Data made with this interpreter (the dev env: the tests' shard builder needs the checkout)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.training_data import make_shards

    data = work / "data"
    (data / "tiny_open_clip.json").parent.mkdir(parents=True, exist_ok=True)
    (data / "tiny_open_clip.json").write_text(json.dumps(TINY_MODEL))
    make_shards(data / "shards", num_images=12, shard_size=4, bad_rows=False)
    return {"config": data / "tiny_open_clip.json", "shards": data / "shards", "birds": make_bird_folder(data / "birds")}


def card_sections(template: Path) -> list[str]:
    """The `## ` headings of the model card template (the checkout's model_card.md)."""
    return re.findall(r"^## .+$", template.read_text(), flags=re.M)


def check(work: Path) -> None:
    """From a folder outside the checkout, with the venv's `bioclip-hf`: evaluate a tiny model, train one step."""
    fixtures = make_fixtures(work)
    outside = work / "outside"
    outside.mkdir(exist_ok=True)
    venv_bin = work / "venv" / "bin"
    env = clean_env(PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", HF_HOME=str(work / "hf_home"),
                    HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    cli = [str(venv_bin / "bioclip-hf")]
    model = outside / "tiny-model"
    origin = run([str(venv_bin / "python"), "-c", MAKE_MODEL, str(fixtures["config"]), str(model)], cwd=outside, env=env)
    log(f"bioclip_hf imported from {origin.stdout.strip()}")

    results = outside / "results.json"
    run([*cli, "evaluate", "--task", "birds525", "--data-dir", str(fixtures["birds"]), "--model", str(model),
         "--templates", "single", "--shots", "1", "--seeds", "2", "--output", str(results)], cwd=outside, env=env)  # fmt: skip
    task = json.loads(results.read_text())["tasks"]["birds525"]
    assert task["num_classes"] == 3 and task["num_examples"] == 9, task
    assert {"taxonomic", "common"} <= set(task["zero_shot"]) and "top1_accuracy" in task["few_shot"]["1"], task
    assert results.with_suffix(".md").is_file()

    run([*cli, "train", "--model_config", str(fixtures["config"]), "--train_data", str(fixtures["shards"]),
         "--max_steps", "1", "--batch_size", "4", "--warmup_steps", "0", "--shuffle_buffer", "4",
         "--report_to", "none", "--progress_bar", "false", "--output_dir", "run"], cwd=outside, env=env)  # fmt: skip
    card = (outside / "run" / "model" / "README.md").read_text()
    missing = [heading for heading in card_sections(REPO / "model_card.md") if heading not in card]
    assert not missing, f"model/README.md lacks the template's sections {missing}"
    assert (outside / "run" / "model" / "model.safetensors").is_file()
    log("installed wheel: evaluate and train work outside the checkout; the card has the template's sections")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "check", "all"))
    parser.add_argument("workdir", help="scratch folder outside the checkout (created)")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    if work.is_relative_to(REPO):
        parser.error(f"workdir must be outside the checkout ({REPO})")
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if args.step in ("prepare", "all"):
        prepare(work)
    if args.step in ("check", "all"):
        check(work)
    log(f"{args.step}: {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
