"""BioCLIP Gradio Space: open-ended Tree-of-Life prediction at any rank, or zero-shot with your own labels.

Run locally from the repository root:  python spaces/app.py   (then open http://127.0.0.1:7860)

A selector offers every released model of the registry (`bioclip-hf list-models`) plus $BIOCLIP_MODEL; a model is
loaded when first used, and only one model is held in memory at a time (switching releases the previous one).

Environment:
    BIOCLIP_MODEL     model folder or Hub id selected at start (default imageomics/bioclip-2); a `bioclip-hf finetune`
                      output (folder or Hub repo) predicts its own classes from the label index it carries
    BIOCLIP_INDEX     Tree-of-Life index folder from `bioclip-hf build-index` for BIOCLIP_MODEL (default: its
                      released index; the other models always use theirs)
    BIOCLIP_DTYPE     encoder precision: auto (default: bfloat16 on CPUs with native bf16, else float32), float32, ...
    BIOCLIP_EXAMPLES  folder of example photos (default spaces/examples/, else a few of ../shared/data/birds525)
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (Gradio's own variables)

Open the page with `?predict=1` to classify the first example as soon as the page loads.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

HERE = Path(__file__).resolve().parent
try:
    import bioclip_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

from bioclip_hf.hub.registry import DEFAULT_MODEL, NoIndexError, UnknownModelError, known_model_ids  # noqa: E402
from bioclip_hf.treeoflife.taxonomy import RANKS  # noqa: E402

logger = logging.getLogger("bioclip_space")

MODES = ("Tree of Life", "Custom labels")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
EMPTY_PLOT = None  # clears the bar chart (an empty DataFrame would fix the chart's axis types before any data)
SPECIES_PER_CLADE = 3  # species (with common names) listed under a higher-rank prediction


def model_name() -> str:
    """The model selected at start: $BIOCLIP_MODEL or the package default."""
    return os.environ.get("BIOCLIP_MODEL") or DEFAULT_MODEL


def model_choices() -> list[str]:
    """The selector's models: $BIOCLIP_MODEL (if it is not a registry model) first, then the registry's."""
    return list(dict.fromkeys([model_name(), *known_model_ids()]))


class ModelSlot:
    """Holds at most one model (with its classifiers) in memory; asking for another releases it first.

    Loading is lazy: nothing is read until a prediction needs the model. A lock keeps a switch from freeing a
    model that another request is still using.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.name: str | None = None
        self.model: Any = None
        self.processor: Any = None
        self._tree_of_life: Any = None
        self._labels: dict[tuple[str, ...], Any] = {}

    def load(self, name: str) -> tuple[Any, Any]:
        from bioclip_hf.models.loading import load_model_and_processor
        from bioclip_hf.models.precision import apply_precision, resolve_precision, training_precision

        with self.lock:
            if name != self.name:
                self.release()
                model, self.processor = load_model_and_processor(name)
                # $BIOCLIP_DTYPE (default auto): on a CPU with native bf16 the encoders keep bf16 weights (half the
                # memory of a free CPU Space) and every classifier sharing the model runs them in bf16.
                precision = resolve_precision(os.environ.get("BIOCLIP_DTYPE", "auto"), model.device,
                                              training_precision(name, model.config))  # fmt: skip
                logger.info("%s runs in %s (%s)", name, precision.dtype, precision.reason)
                self.model = apply_precision(model, precision)
                self.name = name
            return self.model, self.processor

    def release(self) -> None:
        """Drop the current model and its classifiers and return their memory."""
        with self.lock:
            if self.name is not None:
                logger.info("releasing %s", self.name)
            self.name = self.model = self.processor = self._tree_of_life = None
            self._labels.clear()
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def tree_of_life(self, name: str) -> Any:
        """The Tree-of-Life classifier of `name` ($BIOCLIP_INDEX for $BIOCLIP_MODEL, else its released index)."""
        from bioclip_hf.hub.index_files import bundled_index
        from bioclip_hf.hub.registry import index_source
        from bioclip_hf.inference.classify import TreeOfLifeClassifier

        with self.lock:
            index = (os.environ.get("BIOCLIP_INDEX") if name == model_name() else None) or None
            if index is None:
                index = bundled_index(name)  # a fine-tune (folder or Hub repo) predicts its own classes
            if index is None:
                index_source(name)  # a model without an index fails here, before its weights are loaded
            model, processor = self.load(name)
            if self._tree_of_life is None:
                self._tree_of_life = TreeOfLifeClassifier(index=index, model=model, processor=processor,
                                                          model_name_or_path=name, num_workers=1)  # fmt: skip
            return self._tree_of_life

    def labels(self, name: str, labels: tuple[str, ...]) -> Any:
        from bioclip_hf.inference.classify import CustomLabelsClassifier

        with self.lock:
            model, processor = self.load(name)
            if labels not in self._labels:
                if len(self._labels) >= 16:  # bounded: label sets typed into the Space are unbounded
                    self._labels.pop(next(iter(self._labels)))
                self._labels[labels] = CustomLabelsClassifier(list(labels), model=model, processor=processor,
                                                              model_name_or_path=name, num_workers=1)  # fmt: skip
            return self._labels[labels]


SLOT = ModelSlot()


def example_photos(limit: int = 6) -> list[str]:
    """Example photos: $BIOCLIP_EXAMPLES, spaces/examples/, or a few real photos of ../shared/data/birds525."""
    candidates = [os.environ.get("BIOCLIP_EXAMPLES"), HERE / "examples"]
    for folder in filter(None, candidates):
        photos = sorted(str(p) for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            return photos[:limit]
    birds = HERE.parents[1] / "shared" / "data" / "birds525" / "images"
    if birds.is_dir():
        return [str(next(iter(sorted(d.glob("*.jpg"))))) for d in sorted(birds.iterdir())[::97][:limit]]
    return []


def parse_labels(text: str) -> list[str]:
    """Labels from comma- or newline-separated text, de-duplicated in order."""
    pieces = [piece.strip() for line in (text or "").splitlines() for piece in line.split(",")]
    return list(dict.fromkeys(piece for piece in pieces if piece))


def lineage_markdown(top: Any, rank: str, species: list[tuple[Any, float]]) -> str:
    """The top clade's lineage, kingdom first, with common names: the species' own at species rank, else the most
    likely species inside the clade ("common raven (*Corvus corax*) 41%")."""
    from bioclip_hf.treeoflife.index import clade_label

    names = [top.name_at(r) or "?" for r in RANKS[: RANKS.index(rank)]] + [clade_label(top, rank)]
    text = "**Lineage of the top prediction:** " + " › ".join(names)
    if rank == "species":
        return text + (f" ({top.common_name})" if top.common_name else "")
    inside = [(taxon, score) for taxon, score in species if taxon.lineage(rank) == top.lineage(rank)]
    described = [f"{taxon.common_name} (*{taxon.name_at('species') or clade_label(taxon, 'species')}*) {100 * score:.0f}%"
                 for taxon, score in inside if taxon.common_name][:SPECIES_PER_CLADE]  # fmt: skip
    if described:
        text += f"\n\n**Common names in {names[-1]}:** " + ", ".join(described)
    return text


def predict_tree_of_life(image: str, name: str, rank: str, k: int) -> tuple[list[str], list[float], str, str]:
    """(clade labels, scores, lineage markdown, provenance line) for one photo; the photo is embedded once."""
    from bioclip_hf.treeoflife.index import clade_label

    classifier = SLOT.tree_of_life(name)
    _, features = classifier.embed_images([image])
    if features.shape[0] == 0:
        return [], [], "", ""
    top = classifier.index.predict(features, classifier.logit_scale, rank, k)[0]
    species = top if rank == "species" else classifier.index.predict(features, classifier.logit_scale, "species", 50)[0]
    info = classifier.provenance()
    model, index = info["model"], info["index"]
    where = f"`{index['repo_id']}` @ `{str(index.get('commit'))[:8]}`" if "repo_id" in index else "a local index"
    provenance = f"<sub>Model `{model['id']}`" + (f" @ `{model['commit'][:8]}`" if model.get("commit") else "") + \
        f" · index {where} ({index['num_taxa']:,} taxa)</sub>"  # fmt: skip
    lineage = lineage_markdown(top[0][0], rank, species) if top else ""
    return [clade_label(taxon, rank) for taxon, _ in top], [score for _, score in top], lineage, provenance


def classify(image: str | None, mode: str, rank: str, labels_text: str, k: float,
             model: str | None = None) -> tuple[str, pd.DataFrame | None, str]:  # fmt: skip
    """Classify one photo; returns (message, top-k table for the bar chart, lineage). Never raises on bad input."""
    from bioclip_hf.models.bioclip.processing_bioclip import to_pil

    if not image:
        return "Upload a photo or pick an example.", EMPTY_PLOT, ""
    name, model = Path(str(image)).name, model or model_name()
    try:
        to_pil(image).convert("RGB")
    except (OSError, ValueError, TypeError, SyntaxError) as err:
        logger.info("bad upload %s: %s", name, err)
        return f"⚠️ Could not read **{name}** as an image. Please upload a photo (JPEG, PNG or WebP).", EMPTY_PLOT, ""
    k, provenance = max(1, int(k)), ""
    try:
        if mode == MODES[1]:
            labels = parse_labels(labels_text)
            if len(labels) < 2:
                return "⚠️ Enter at least two labels, separated by commas or new lines.", EMPTY_PLOT, ""
            records = SLOT.labels(model, tuple(labels)).predict([image], k=k)
            names, scores = [r["label"] for r in records], [r["score"] for r in records]
            lineage = "Zero-shot among your labels (no lineage)."
        else:
            names, scores, lineage, provenance = predict_tree_of_life(image, model, rank, k)
    except (UnknownModelError, NoIndexError):
        return f"⚠️ `{model}` has no Tree-of-Life index: choose the **Custom labels** mode (or another model).", EMPTY_PLOT, ""
    except (ValueError, OSError, RuntimeError) as err:  # e.g. a model or index that cannot be loaded
        logger.warning("prediction failed: %s", err)
        return f"⚠️ Prediction failed: {str(err).splitlines()[0]}", EMPTY_PLOT, ""
    if not names:
        return f"⚠️ Could not read **{name}** as an image.", EMPTY_PLOT, ""
    table = pd.DataFrame({"prediction": names, "probability": [round(score, 4) for score in scores]})
    where = "your labels" if mode == MODES[1] else f"rank {rank}"
    message = f"### Top prediction ({where}): {names[0]} — {100 * scores[0]:.1f}%"
    return message + (f"\n\n{provenance}" if provenance else ""), table, lineage


def tolerate_bad_uploads(component: gr.Image) -> gr.Image:
    """Make an image input hand unreadable uploads to `classify` (which explains) instead of failing inside Gradio.

    Patched on the instance: a `gr.Image` subclass would make Gradio write a .pyi stub next to this file.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except Exception:  # noqa: BLE001 - PIL raises many types for non-images; `classify` reports it
            return getattr(payload, "path", None)

    component.preprocess = preprocess
    return component


def autorun(image: str | None, mode: str, rank: str, labels_text: str, k: float, model: str, request: gr.Request):
    """On page load with `?predict=1`: classify the preselected photo (used for demos and screenshots)."""
    if request is not None and request.query_params.get("predict"):
        return classify(image, mode, rank, labels_text, k, model)
    return gr.skip(), gr.skip(), gr.skip()


def build_demo() -> gr.Blocks:
    """The Gradio app (not launched)."""
    examples = example_photos()
    with gr.Blocks(title="BioCLIP: Tree of Life classifier") as demo:
        gr.Markdown("# BioCLIP — Tree of Life classifier\nUpload a photo of an organism or pick an example, then "
                    "predict a taxon at any rank, or classify among your own labels.")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=1):
                image = tolerate_bad_uploads(gr.Image(type="filepath", label="Photo", value=examples[0] if examples else None,
                                                      height=320))  # fmt: skip
                model = gr.Dropdown(model_choices(), value=model_name(), label="Model (loaded on first use)")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Mode")
                rank = gr.Dropdown(list(RANKS), value="species", label="Rank (Tree of Life)")
                labels = gr.Textbox(label="Labels (custom mode: comma or line separated)", lines=2,
                                    placeholder="e.g. raven, magpie, blackbird")  # fmt: skip
                k = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                button = gr.Button("Predict", variant="primary")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples")
            with gr.Column(scale=1):
                message = gr.Markdown("Upload a photo or pick an example.", elem_id="message")
                plot = gr.BarPlot(None, x="prediction", y="probability", sort="-y", y_lim=[0, 1], label="Top-k predictions",
                                  x_label_angle=-30, height=360)  # fmt: skip
                lineage = gr.Markdown(elem_id="lineage")
        inputs, outputs = [image, mode, rank, labels, k, model], [message, plot, lineage]
        button.click(classify, inputs, outputs, api_name="classify")
        demo.load(autorun, inputs, outputs, api_name=False)
    return demo


def preload() -> None:
    """Load the start model and its Tree-of-Life index before serving, so the first request is fast (errors show
    per request)."""
    try:
        SLOT.tree_of_life(model_name())
    except (ValueError, OSError, RuntimeError) as err:
        logger.warning("Tree-of-Life classifier unavailable: %s", err)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if os.environ.get("BIOCLIP_PRELOAD", "1") != "0":
        preload()
    build_demo().launch()
