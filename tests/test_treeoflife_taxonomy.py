"""Taxon records, the paper's five text types, templates and text-type sampling."""

from __future__ import annotations

import enum
import random

import numpy as np
import pytest

from bioclip_hf.treeoflife.taxonomy import (
    OPENAI_TEMPLATES,
    RANKS,
    TEXT_TYPES,
    Taxon,
    check_rank,
    format_text,
    read_taxa_table,
    sample_text,
    sample_text_type,
)

RAVEN = Taxon("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven")


def test_paper_text_formats():
    assert format_text(RAVEN, "taxonomic") == "a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus corax."
    assert RAVEN.text("scientific") == "Corvus corax"
    assert RAVEN.text("common") == "common raven"
    assert RAVEN.text("taxonomic+common") == "Animalia Chordata Aves Passeriformes Corvidae Corvus corax with common name common raven"
    assert RAVEN.text("scientific+common") == "Corvus corax with common name common raven"
    assert format_text(RAVEN, "common", template="itap of a {}.") == "itap of a common raven."
    assert format_text(RAVEN, "scientific", template=lambda c: f"<{c}>") == "<Corvus corax>"


def test_empty_ranks_and_missing_common_name():
    partial = Taxon("Animalia", "", "Aves", "", "", "Pica", "pica", "")
    assert partial.text("taxonomic") == "Animalia Aves Pica pica"
    # Types needing a common name fall back instead of producing "... with common name ".
    assert partial.text("taxonomic+common") == "Animalia Aves Pica pica"
    assert partial.text("common") == partial.text("scientific+common") == "Pica pica"
    assert partial.name_at("order") == "" and partial.name_at("species") == "Pica pica"
    assert partial.lineage("family") == ("Animalia", "", "Aves", "", "")
    genus_only = Taxon("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa")
    assert genus_only.name_at("species") == "" and genus_only.scientific_name == "Rosa"


def test_name_at_every_rank_and_unknown_rank():
    assert [RAVEN.name_at(rank) for rank in RANKS] == [
        "Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"]  # fmt: skip
    assert check_rank("Family") == "family"
    assert check_rank(enum.Enum("Rank", ["KINGDOM", "GENUS"]).GENUS) == "genus"  # pybioclip's Rank enum
    with pytest.raises(ValueError, match="unknown rank 'tribe'"):
        RAVEN.name_at("tribe")
    with pytest.raises(ValueError, match="unknown text type"):
        RAVEN.text("latin")


def test_dict_and_tol_entry_round_trip():
    data = RAVEN.to_dict()
    assert data["class"] == "Aves" and data["species"] == "corax" and list(data)[:7] == list(RANKS)
    assert Taxon.from_dict(data) == RAVEN
    assert Taxon.from_tol_entry(RAVEN.to_tol_entry()) == RAVEN
    # Binomials in the species column are reduced to the epithet; NaN/None become "".
    assert Taxon.from_dict({"Genus": "Corvus", "species": "Corvus corax", "common_name": float("nan")}).species == "corax"
    with pytest.raises(ValueError, match="expected 7 ranks"):
        Taxon.from_tol_entry([["Animalia", "Chordata"], ""])


def test_openai_templates_match_open_clip():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert len(OPENAI_TEMPLATES) == 80
    assert [t.format("x") for t in OPENAI_TEMPLATES] == [t("x") for t in OPENAI_IMAGENET_TEMPLATES]


@pytest.mark.parametrize("rng", [random.Random(0), np.random.default_rng(0)])
def test_sample_text_type_uniform_with_fallback(rng):
    draws = [sample_text_type(rng) for _ in range(5000)]
    counts = {t: draws.count(t) for t in TEXT_TYPES}
    assert all(800 < c < 1200 for c in counts.values()), counts
    no_common = Taxon("Animalia", genus="Pica", species="pica")
    assert {sample_text_type(rng, no_common) for _ in range(200)} == {"taxonomic", "scientific"}
    assert sample_text(no_common, rng).startswith("a photo of ")


def test_read_taxa_table_variants(tmp_path):
    (tmp_path / "t.csv").write_text("Kingdom,class,genus,species,common_name\nAnimalia,Aves,Corvus,corax,raven\nPlantae,,Rosa,,\n")
    taxa = read_taxa_table(str(tmp_path / "t.csv"))
    assert taxa[0] == Taxon("Animalia", "", "Aves", "", "", "Corvus", "corax", "raven")
    assert taxa[1].name_at("genus") == "Rosa" and taxa[1].class_ == ""
    (tmp_path / "s.csv").write_text("file,common_name,scientific_name\n1.jpg,raven,Corvus corax\n2.jpg,magpie,Pica pica\n"
                                    "3.jpg,raven,Corvus corax\n")  # fmt: skip
    taxa = read_taxa_table(str(tmp_path / "s.csv"))
    assert [(t.name_at("species"), t.common_name) for t in taxa] == [("Corvus corax", "raven"), ("Pica pica", "magpie")]
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="no taxonomic columns"):
        read_taxa_table(str(tmp_path / "bad.csv"))
