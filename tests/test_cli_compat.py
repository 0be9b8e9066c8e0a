"""What users touch stays as it was before the house move (recorded in tests/data/public_surface.json from the
pre-move package): `from bioclip_hf import ...`, every CLI command and flag, the launch targets, `bioclip_hf.pybioclip`
and the run-config fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

SURFACE = json.loads((Path(__file__).parent / "data" / "public_surface.json").read_text())


def _cli_surface() -> dict[str, list[str]]:
    from bioclip_hf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {"": sorted(s for a in parser._actions for s in a.option_strings)}
    for name, command in sub.choices.items():
        out[name] = sorted([s for a in command._actions for s in a.option_strings]
                           + [f"<{a.dest}>" for a in command._actions if not a.option_strings])  # fmt: skip
    return out


@pytest.mark.parametrize("name", SURFACE["bioclip_hf"])
def test_public_names_import_from_the_package_root(name):
    import bioclip_hf

    assert name in bioclip_hf.__all__
    value = getattr(bioclip_hf, name)
    if name[0].isupper() and name != "BIOCLIP_PRESETS":
        assert isinstance(value, type) and value.__name__ == name


def test_every_command_and_flag_is_still_accepted():
    now = _cli_surface()
    for command, flags in SURFACE["cli"].items():
        assert command in now, f"command {command!r} is gone"
        missing = sorted(set(flags) - set(now[command]))
        assert not missing, f"bioclip-hf {command}: flags gone: {missing}"


def test_pybioclip_module_keeps_its_names():
    import bioclip_hf.pybioclip as pybioclip

    missing = [name for name in SURFACE["bioclip_hf.pybioclip"] if not hasattr(pybioclip, name)]
    assert not missing


def test_run_config_keeps_its_fields():
    from bioclip_hf.training.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(SURFACE["train_config_fields"]) <= fields


def test_cli_error_is_still_importable_from_cli():
    """Scripts that caught `bioclip_hf.cli.CLIError` keep working: it is the library's UsageError."""
    from bioclip_hf.cli import CLIError
    from bioclip_hf.utils.errors import UsageError

    assert CLIError is UsageError and issubclass(UsageError, ValueError)


@pytest.mark.parametrize("module", ["bioclip_hf.cli", "bioclip_hf.train"])
def test_module_launch_targets_run(module):
    """`accelerate launch -m bioclip_hf.train` and `-m bioclip_hf.cli` are documented entry points."""
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
    if module == "bioclip_hf.train":
        assert "--train_data" in proc.stdout and "--init_from" in proc.stdout


def test_stream_names_keep_their_published_import_path():
    """Dataset cards pushed before the move say `from bioclip_hf.data import build_dataloader`."""
    from bioclip_hf.data import build_dataloader, build_stream
    from bioclip_hf.data.stream import build_dataloader as loader
    from bioclip_hf.data.stream import build_stream as stream

    assert (build_dataloader, build_stream) == (loader, stream)


@pytest.mark.parametrize("name", sorted(SURFACE["signatures"]))
def test_public_signatures_only_grow(name):
    """Every public callable takes what it took before, in the same order with the same defaults; new parameters
    come after the old ones (or are keyword-only), so existing calls keep their meaning."""
    import inspect

    import bioclip_hf

    owner, _, attribute = name.partition(".")
    target = getattr(bioclip_hf, owner)
    target = getattr(target, attribute) if attribute else target
    now = [[p.name, p.kind.name, None if p.default is inspect.Parameter.empty else repr(p.default)]
           for p in inspect.signature(target).parameters.values()]  # fmt: skip
    before = SURFACE["signatures"][name]
    assert now[: len(before)] == before
    assert all(p[1] == "KEYWORD_ONLY" or p[2] is not None or p[1].startswith("VAR") for p in now[len(before):])
