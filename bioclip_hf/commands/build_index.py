"""`bioclip-hf build-index`: embed a taxa table into a Tree-of-Life index (safetensors + parquet, or the released
`.npy` + `.json` layout that pybioclip reads)."""

from __future__ import annotations

import argparse

from bioclip_hf.commands._common import add_model_arguments
from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES

RECIPE_CHOICES = ("release",) + TEXT_TYPES  # text_embedding.RECIPES (kept stdlib-only for a fast --help)
LAYOUTS = ("bioclip-hf", "release")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("taxa", help="taxa table (CSV/TSV/parquet/JSON) with kingdom..species and common_name columns, "
                                     "or a released txt_emb_*.json (its order and entries are kept)")  # fmt: skip
    parser.add_argument("--output", "-o", required=True,
                        help="index folder to write (or, with --layout release, a .npy path or a folder)")  # fmt: skip
    parser.add_argument("--recipe", "--text-type", dest="recipe", choices=RECIPE_CHOICES, default="release",
                        help="text embedded per taxon (default: release = how the released TreeOfLife indexes were "
                             "made: ' '.join(ranks) + ' ' + common name; or a BioCLIP text type)")  # fmt: skip
    parser.add_argument("--templates", choices=("openai", "single"), default="openai",
                        help="average over the 80 OpenAI templates (default) or use 'a photo of {}.' (80x faster)")
    parser.add_argument("--layout", choices=LAYOUTS, default="bioclip-hf",
                        help="bioclip-hf: embeddings.safetensors + taxa.parquet + index.json (default); release: "
                             "[D, N] float32 .npy + .json names, a drop-in for pybioclip (DIR/embeddings/"
                             "txt_emb_species.npy when --output is a folder)")  # fmt: skip
    add_model_arguments(parser, batch_size=256, images=False)


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.models.loading import load_model_and_processor
    from bioclip_hf.treeoflife.files import is_release_names_file, read_entries
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex
    from bioclip_hf.treeoflife.taxa import TaxaColumns, TaxonSequence
    from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES, read_taxa_table

    if is_release_names_file(args.taxa):
        taxa = list(TaxonSequence(TaxaColumns.from_entries(read_entries(args.taxa), source=args.taxa)))
    else:
        taxa = read_taxa_table(args.taxa)
    model, processor = load_model_and_processor(args.model, device=args.device, revision=args.revision)
    templates = OPENAI_TEMPLATES if args.templates == "openai" else (DEFAULT_TEMPLATE,)
    index = TreeOfLifeIndex.build(taxa, model, processor, recipe=args.recipe, templates=templates,
                                  batch_size=args.batch_size, progress=not args.no_progress)  # fmt: skip
    index.metadata["model"] = args.model
    if args.layout == "release":
        npy, names = index.save_release(args.output)
        print(f"wrote index of {len(index)} taxa (dim {index.dim}) to {npy} and {names}")
    else:
        path = index.save(args.output)
        print(f"wrote index of {len(index)} taxa (dim {index.dim}) to {path}")
    return 0
