"""`bioclip-hf build-index`: embed a taxa table into a Tree-of-Life index (safetensors + parquet)."""

from __future__ import annotations

import argparse

from ..taxonomy import TEXT_TYPES
from ._records import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("taxa", help="taxa table (CSV/TSV/parquet/JSON) with kingdom..species and common_name columns")
    parser.add_argument("--output", "-o", required=True, help="index folder to write")
    parser.add_argument("--text-type", choices=TEXT_TYPES, default="taxonomic+common",
                        help="text embedded per taxon (default: taxonomic+common, as BioCLIP's released index)")
    parser.add_argument("--templates", choices=("openai", "single"), default="openai",
                        help="average over the 80 OpenAI templates (default) or use 'a photo of {}.' (80x faster)")
    add_model_arguments(parser, batch_size=256)


def run(args: argparse.Namespace) -> int:
    from ..loading import load_model_and_processor
    from ..taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES, read_taxa_table
    from ..tol_index import TreeOfLifeIndex

    taxa = read_taxa_table(args.taxa)
    model, processor = load_model_and_processor(args.model, device=args.device, revision=args.revision)
    templates = OPENAI_TEMPLATES if args.templates == "openai" else (DEFAULT_TEMPLATE,)
    index = TreeOfLifeIndex.build(taxa, model, processor, text_type=args.text_type, templates=templates,
                                  batch_size=args.batch_size, progress=not args.no_progress)  # fmt: skip
    index.metadata["model"] = args.model
    path = index.save(args.output)
    print(f"wrote index of {len(index)} taxa (dim {index.dim}) to {path}")
    return 0
