"""The transformers role files in `bioclip_hf/models/bioclip/` import only each other: `save_pretrained` copies them
as remote code (`auto_map`), so `trust_remote_code=True` must find everything they need among themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import bioclip_hf

ROLE_DIR = Path(bioclip_hf.__file__).parent / "models" / "bioclip"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(relative level, module) of every import in `path`, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
    return found


def test_role_files_import_only_each_other():
    files = sorted(ROLE_DIR.glob("*.py"))
    siblings = {f.stem for f in files}
    assert {"configuration_bioclip", "modeling_bioclip", "processing_bioclip"} <= siblings
    for path in files:
        for level, module in _imports(path):
            assert level in (0, 1), f"{path.name}: reaches outside its folder (level {level} import of {module!r})"
            if level == 1:
                assert module.split(".")[0] in siblings, f"{path.name}: imports .{module}, not a sibling role file"
            else:
                assert not module.startswith("bioclip_hf"), f"{path.name}: imports {module} (remote code has no package)"


def test_tokenizer_vocabulary_ships_beside_the_role_files():
    assert (ROLE_DIR / "assets" / "bpe_simple_vocab_16e6.txt.gz").is_file()
