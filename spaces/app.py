"""BioCLIP Gradio Space: open-ended Tree-of-Life prediction at any rank, or zero-shot with your own labels.

Run locally from the repository root:  python spaces/app.py   (then open http://127.0.0.1:7860)

Environment:
    BIOCLIP_MODEL     model folder or Hub id (default imageomics/bioclip)
    BIOCLIP_INDEX     Tree-of-Life index folder from `bioclip-hf build-index` (default: the model's released index)
    BIOCLIP_EXAMPLES  folder of example photos (default spaces/examples/, else a few of ../shared/data/birds525)
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (Gradio's own variables)

Open the page with `?predict=1` to classify the first example as soon as the page loads.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

HERE = Path(__file__).resolve().parent
try:
    import bioclip_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

from bioclip_hf.loading import DEFAULT_MODEL  # noqa: E402
from bioclip_hf.taxonomy import RANKS  # noqa: E402

logger = logging.getLogger("bioclip_space")

MODES = ("Tree of Life", "Custom labels")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
EMPTY_PLOT = None  # clears the bar chart (an empty DataFrame would fix the chart's axis types before any data)


def model_name() -> str:
    return os.environ.get("BIOCLIP_MODEL") or DEFAULT_MODEL


@functools.lru_cache(maxsize=1)
def model_and_processor() -> tuple[Any, Any]:
    from bioclip_hf.loading import load_model_and_processor

    return load_model_and_processor(model_name())


@functools.lru_cache(maxsize=1)
def tree_of_life_classifier() -> Any:
    from bioclip_hf.classify import TreeOfLifeClassifier

    model, processor = model_and_processor()
    return TreeOfLifeClassifier(index=os.environ.get("BIOCLIP_INDEX") or None, model=model, processor=processor,
                                model_name_or_path=model_name(), num_workers=1)  # fmt: skip


@functools.lru_cache(maxsize=16)
def labels_classifier(labels: tuple[str, ...]) -> Any:
    from bioclip_hf.classify import CustomLabelsClassifier

    model, processor = model_and_processor()
    return CustomLabelsClassifier(list(labels), model=model, processor=processor, num_workers=1)


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


def lineage_markdown(record: dict[str, Any], rank: str) -> str:
    """'Animalia › Chordata › … › Corvus corax (common raven)' for a Tree-of-Life record."""
    names = [record.get(r, "") for r in RANKS[: RANKS.index(rank) + 1]]
    path = " › ".join(name or "?" for name in names)
    common = f" ({record['common_name']})" if record.get("common_name") else ""
    return f"**Lineage of the top prediction:** {path}{common}"


def classify(image: str | None, mode: str, rank: str, labels_text: str, k: float) -> tuple[str, pd.DataFrame | None, str]:
    """Classify one photo; returns (message, top-k table for the bar chart, lineage). Never raises on bad input."""
    from bioclip_hf.processing_bioclip import to_pil

    if not image:
        return "Upload a photo or pick an example.", EMPTY_PLOT, ""
    name = Path(str(image)).name
    try:
        to_pil(image).convert("RGB")
    except (OSError, ValueError, TypeError, SyntaxError) as err:
        logger.info("bad upload %s: %s", name, err)
        return f"⚠️ Could not read **{name}** as an image. Please upload a photo (JPEG, PNG or WebP).", EMPTY_PLOT, ""
    k = max(1, int(k))
    try:
        if mode == MODES[1]:
            labels = parse_labels(labels_text)
            if len(labels) < 2:
                return "⚠️ Enter at least two labels, separated by commas or new lines.", EMPTY_PLOT, ""
            records = labels_classifier(tuple(labels)).predict([image], k=k)
            names, lineage = [r["label"] for r in records], "Zero-shot among your labels (no lineage)."
        else:
            records = tree_of_life_classifier().predict([image], rank=rank, k=k)
            names = [r["taxon"] for r in records]
            lineage = lineage_markdown(records[0], rank) if records else ""
    except (ValueError, OSError, RuntimeError) as err:  # e.g. no index for this model, unreadable index
        logger.warning("prediction failed: %s", err)
        return f"⚠️ Prediction failed: {str(err).splitlines()[0]}", EMPTY_PLOT, ""
    if not records:
        return f"⚠️ Could not read **{name}** as an image.", EMPTY_PLOT, ""
    table = pd.DataFrame({"prediction": names, "probability": [round(r["score"], 4) for r in records]})
    where = "your labels" if mode == MODES[1] else f"rank {rank}"
    message = f"### Top prediction ({where}): {names[0]} — {100 * records[0]['score']:.1f}%"
    return message, table, lineage


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


def autorun(image: str | None, mode: str, rank: str, labels_text: str, k: float, request: gr.Request):
    """On page load with `?predict=1`: classify the preselected photo (used for demos and screenshots)."""
    if request is not None and request.query_params.get("predict"):
        return classify(image, mode, rank, labels_text, k)
    return gr.skip(), gr.skip(), gr.skip()


def build_demo() -> gr.Blocks:
    """The Gradio app (not launched)."""
    examples = example_photos()
    with gr.Blocks(title="BioCLIP: Tree of Life classifier") as demo:
        gr.Markdown(f"# BioCLIP — Tree of Life classifier\nModel: `{model_name()}`. Upload a photo of an organism "
                    "or pick an example, then predict a taxon at any rank, or classify among your own labels.")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=1):
                image = tolerate_bad_uploads(gr.Image(type="filepath", label="Photo", value=examples[0] if examples else None,
                                                      height=320))  # fmt: skip
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
        inputs, outputs = [image, mode, rank, labels, k], [message, plot, lineage]
        button.click(classify, inputs, outputs, api_name="classify")
        demo.load(autorun, inputs, outputs, api_name=False)
    return demo


def preload() -> None:
    """Load the model and Tree-of-Life index before serving, so the first request is fast (errors show per request)."""
    try:
        tree_of_life_classifier()
    except (ValueError, OSError, RuntimeError) as err:
        logger.warning("Tree-of-Life classifier unavailable: %s", err)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if os.environ.get("BIOCLIP_PRELOAD", "1") != "0":
        preload()
    build_demo().launch()
