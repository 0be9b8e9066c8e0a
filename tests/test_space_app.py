"""The Gradio Space (spaces/app.py): launched with one command and driven through gradio_client and headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "spaces" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
TAXA = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica", "Eurasian magpie"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Turdidae", "Turdus", "merula", "common blackbird"),
    ("Animalia", "Chordata", "Aves", "Anseriformes", "Anatidae", "Anas", "platyrhynchos", "mallard"),
    ("Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Felis", "catus", "cat"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina", "dog rose"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def space_env(tmp_path_factory, tiny_model_and_processor, tiny_hf_dir):
    """Environment for the app: the tiny model, a tiny Tree-of-Life index built with it, generated example photos,
    and an offline HF cache holding a random `imageomics/bioclip` with a TreeOfLife-10M index (the selector's)."""
    from support.models import write_model_release
    from support.treeoflife import index_for, write_index_release

    from bioclip_hf.treeoflife.index import TreeOfLifeIndex
    from bioclip_hf.treeoflife.taxonomy import Taxon

    root = tmp_path_factory.mktemp("space")
    model, processor = tiny_model_and_processor
    index = TreeOfLifeIndex.build([Taxon(*t) for t in TAXA], model, processor, templates=("a photo of {}.",), progress=False)
    index.save(root / "index")
    write_model_release(root / "hub", "imageomics/bioclip", root, seed=5)
    write_index_release(root / "hub", "imageomics/TreeOfLife-10M", index_for(16, [Taxon(*t) for t in TAXA]), root)
    examples = root / "examples"
    examples.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(examples / f"example{i}.jpg")
    return {"BIOCLIP_MODEL": str(tiny_hf_dir), "BIOCLIP_INDEX": str(root / "index"), "BIOCLIP_EXAMPLES": str(examples),
            "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(root / "hub"), "HF_HOME": str(root / "home")}  # fmt: skip


@pytest.fixture(scope="module")
def space_url(space_env, tmp_path_factory):
    """`python spaces/app.py` running in a subprocess; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("space_log") / "app.log"
    env = {**os.environ, **space_env, "GRADIO_SERVER_PORT": str(port)}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, str(APP)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"the Space did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def client(space_url):
    from gradio_client import Client

    return Client(space_url, verbose=False)


def _photo(tmp_path, name="bird.png"):
    path = tmp_path / name
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(path)
    return path


def test_tree_of_life_prediction_with_chart_and_lineage(client, space_env, tmp_path):
    from gradio_client import handle_file

    message, plot, lineage = client.predict(handle_file(str(_photo(tmp_path))), "Tree of Life", "family", "", 3,
                                            space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    rows = plot["data"]
    assert message.startswith("### Top prediction (rank family): ")
    assert len(rows) == 3 and {r[0] for r in rows} <= {"Corvidae", "Turdidae", "Anatidae", "Felidae", "Rosaceae"}
    scores = [r[1] for r in rows]
    # The app shows probabilities rounded to 4 decimals: each may be up to 5e-5 above the true one.
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + len(scores) * 5e-5
    assert rows[0][0] in message and f"{100 * scores[0]:.1f}%" in message
    assert lineage.startswith("**Lineage of the top prediction:**") and rows[0][0] in lineage
    assert ("Animalia" in lineage) or ("Plantae" in lineage)


def test_species_rank_shows_common_name(client, space_env, tmp_path):
    from gradio_client import handle_file

    message, plot, lineage = client.predict(handle_file(str(_photo(tmp_path))), "Tree of Life", "species", "", 6,
                                            space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    assert len(plot["data"]) == 6
    top = plot["data"][0][0]
    common = {f"{t[5]} {t[6]}": t[7] for t in TAXA}[top]
    assert lineage.endswith(f"{top} ({common})")


def test_higher_rank_lineage_lists_common_names(client, space_env, tmp_path):
    from gradio_client import handle_file

    _, plot, lineage = client.predict(handle_file(str(_photo(tmp_path))), "Tree of Life", "family", "", 3,
                                      space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    family = plot["data"][0][0]
    expected = [t[7] for t in TAXA if t[4] == family]
    assert f"**Common names in {family}:** " in lineage
    listed = lineage.split(f"**Common names in {family}:** ")[1]
    assert any(common in listed for common in expected)
    assert not any(t[7] in listed for t in TAXA if t[4] != family)  # only species inside the predicted clade


def test_model_selector_switches_between_registry_models(client, space_env, tmp_path):
    from gradio_client import handle_file

    photo = handle_file(str(_photo(tmp_path)))
    message, plot, lineage = client.predict(photo, "Tree of Life", "genus", "", 2, "imageomics/bioclip", api_name="/classify")
    assert message.startswith("### Top prediction (rank genus): ") and len(plot["data"]) == 2
    assert "Model `imageomics/bioclip` @ `01234567`" in message and "`imageomics/TreeOfLife-10M`" in message
    message, plot, lineage = client.predict(photo, "Tree of Life", "genus", "", 2, "imageomics/bioclip-vit-b-16-inat-only",
                                            api_name="/classify")  # fmt: skip
    assert "has no Tree-of-Life index" in message and "Custom labels" in message and not (plot or {}).get("data")
    message, _, _ = client.predict(photo, "Tree of Life", "genus", "", 2, space_env["BIOCLIP_MODEL"], api_name="/classify")
    assert message.startswith("### Top prediction (rank genus): ") and "a local index" in message


def test_custom_labels(client, space_env, tmp_path):
    from gradio_client import handle_file

    message, plot, lineage = client.predict(handle_file(str(_photo(tmp_path))), "Custom labels", "species",
                                            "raven, magpie\nblackbird", 5, space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    assert {r[0] for r in plot["data"]} == {"raven", "magpie", "blackbird"}
    assert sum(r[1] for r in plot["data"]) == pytest.approx(1.0, abs=1e-3)  # 3 values rounded to 4 decimals
    assert "your labels" in message and "no lineage" in lineage
    message, plot, _ = client.predict(handle_file(str(_photo(tmp_path))), "Custom labels", "species", "raven", 5,
                                      space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    assert "at least two labels" in message and not (plot or {}).get("data")


def test_bad_upload_gets_a_message(client, space_env, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a photo")
    message, plot, lineage = client.predict(handle_file(str(bad)), "Tree of Life", "species", "", 5, space_env["BIOCLIP_MODEL"], api_name="/classify")
    assert "Could not read" in message and "notes.txt" in message
    assert not (plot or {}).get("data") and lineage == ""
    truncated = tmp_path / "broken.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    message, _, _ = client.predict(handle_file(str(truncated)), "Tree of Life", "species", "", 5, space_env["BIOCLIP_MODEL"], api_name="/classify")
    assert "Could not read" in message and "broken.jpg" in message


def test_real_bird_photo(client, space_env, bird_photos):
    from gradio_client import handle_file

    message, plot, lineage = client.predict(handle_file(str(bird_photos[0])), "Tree of Life", "order", "", 4,
                                            space_env["BIOCLIP_MODEL"], api_name="/classify")  # fmt: skip
    assert message.startswith("### Top prediction (rank order): ") and len(plot["data"]) == 4


def test_space_files():
    readme = (REPO / "spaces" / "README.md").read_text()
    header = yaml.safe_load(readme.split("---")[1])
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert (REPO / "spaces" / header["app_file"]).is_file()
    requirements = (REPO / "spaces" / "requirements.txt").read_text()
    assert "bioclip-hf" in requirements and "gradio" in requirements


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,1000", "--virtual-time-budget=30000"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install -y chromium)")
def test_chromium_screenshot_shows_a_prediction(client, space_url, space_env, tmp_path):
    from gradio_client import handle_file

    # Warm the server up (the first request after start-up is the slow one), then load the page with ?predict=1.
    first_example = sorted(Path(space_env["BIOCLIP_EXAMPLES"]).glob("*.jpg"))[0]
    client.predict(handle_file(str(first_example)), "Tree of Life", "species", "", 5, space_env["BIOCLIP_MODEL"], api_name="/classify")
    page = space_url + "?predict=1"
    shot = tmp_path / "space.png"
    for _attempt in range(3):
        dom = _chromium(["--dump-dom", page], tmp_path / "profile_dom").stdout
        if "Top prediction (rank species)" in dom:
            break
    assert "Top prediction (rank species)" in dom and "Lineage of the top prediction" in dom
    result = _chromium([f"--screenshot={shot}", page], tmp_path / "profile_shot")
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1000, 1280)
    # The top-k bars are drawn in Gradio's orange in the right half (the chart); a page still "processing" has none.
    chart = pixels[130:520, 640:]
    orange = (chart[..., 0] > 220) & (chart[..., 1] > 90) & (chart[..., 1] < 140) & (chart[..., 2] < 60)
    assert orange.sum() > 1500, f"no bars in the screenshot ({orange.sum()} orange pixels)"
    keep = os.environ.get("BIOCLIP_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "space_prediction.png")


def _load_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bioclip_space_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unloadable_model_gives_a_message_in_process(tmp_path, monkeypatch):
    app = _load_app()
    monkeypatch.setenv("BIOCLIP_MODEL", str(tmp_path / "no_such_model"))
    message, plot, lineage = app.classify(str(_photo(tmp_path)), "Custom labels", "species", "a, b", 5)
    assert message.startswith("⚠️ Prediction failed:") and plot is None and lineage == ""
    message, plot, lineage = app.classify(str(_photo(tmp_path)), "Tree of Life", "species", "", 5)
    assert "has no Tree-of-Life index" in message and plot is None and lineage == ""  # said before loading anything
    assert app.classify(None, "Tree of Life", "species", "", 5)[0] == "Upload a photo or pick an example."
    assert app.parse_labels("raven, magpie\nraven,,\n blackbird ") == ["raven", "magpie", "blackbird"]
    assert not list((REPO / "spaces").glob("*.pyi"))  # building the UI must not write files into the repo
    app.build_demo()
    assert not list((REPO / "spaces").glob("*.pyi"))


def test_one_model_in_memory_at_a_time(tiny_hf_dir, tiny_open_clip, tmp_path, monkeypatch):
    import weakref

    app = _load_app()
    monkeypatch.setenv("BIOCLIP_MODEL", str(tiny_hf_dir))
    assert app.SLOT.name is None  # nothing is loaded until a prediction needs it
    assert app.model_choices()[0] == str(tiny_hf_dir) and "imageomics/bioclip-2" in app.model_choices()
    labels = app.SLOT.labels(str(tiny_hf_dir), ("a", "b"))
    first = weakref.ref(app.SLOT.model)
    assert app.SLOT.labels(str(tiny_hf_dir), ("a", "b")) is labels  # same model: classifiers are reused
    del labels
    other = str(tiny_open_clip[1])
    message, plot, _ = app.classify(str(_photo(tmp_path)), "Custom labels", "species", "x, y", 2, other)
    assert message.startswith("### Top prediction (your labels)") and app.SLOT.name == other
    assert first() is None  # the previous model was released, not kept beside the new one
    app.SLOT.release()
    assert app.SLOT.model is None and app.SLOT.name is None


def test_build_space_vendors_the_package_and_lists_its_dependencies(tmp_path):
    import subprocess
    import sys

    sys.path.insert(0, str(REPO / "spaces"))
    try:
        from build_space import build_space, main
    finally:
        sys.path.remove(str(REPO / "spaces"))
    examples = tmp_path / "photos"
    examples.mkdir()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(examples / "red.jpg")
    (examples / "notes.txt").write_text("not a photo")
    out = build_space(tmp_path / "space", examples)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "bioclip_hf", "examples", "requirements.txt"]
    assert [p.name for p in (out / "examples").iterdir()] == ["red.jpg"]
    assert (out / "bioclip_hf" / "models" / "bioclip" / "assets" / "bpe_simple_vocab_16e6.txt.gz").is_file()
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("torch") for r in requirements) and any(r.startswith("gradio") for r in requirements)
    assert not any("bioclip-hf" in r for r in requirements if not r.startswith("#"))
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert header["app_file"] == "app.py" and header["sdk"] == "gradio"
    # The Space's own folder comes first on sys.path: app.py must pick up the vendored package.
    probe = subprocess.run(
        [sys.executable, "-c", "import app, bioclip_hf; print(bioclip_hf.__file__); assert callable(app.build_demo)"],
        cwd=out, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(out)},
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip().startswith(str(out))
    assert main([str(out)]) == 2  # refuses to overwrite
