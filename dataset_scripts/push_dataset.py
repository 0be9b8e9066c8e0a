"""Push a folder of shards built by build_shards.py (tars + README.md card + build_report.json) to the Hub.

Creates the dataset repo if needed and uploads everything in one commit with `bioclip_hf.hub.upload`
(huggingface_hub; `HF_ENDPOINT` and `HF_TOKEN` are honoured). The card's usage snippet is rewritten with the
repo id first.

Example:
    python dataset_scripts/push_dataset.py shards/ my-org/my-tree-of-life --private
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("push_dataset")


def check_shard_folder(folder: str | Path) -> dict:
    """Validate a build_shards.py output folder; returns its build report."""
    folder = Path(folder)
    report_path = folder / "build_report.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"shard folder not found: {folder}")
    if not report_path.is_file() or not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no build_report.json / README.md: build it with build_shards.py first")
    report = json.loads(report_path.read_text())
    missing = [shard["path"] for shard in report["shards"] if not (folder / shard["path"]).is_file()]
    if missing:
        raise FileNotFoundError(f"shards listed in {report_path} are missing: {', '.join(missing[:5])}")
    return report


def push_dataset(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                 commit_message: str | None = None) -> str:  # fmt: skip
    """Create `repo_id` (dataset) if needed and upload the shard folder; returns the commit URL.

    Args:
        folder: output of build_shards.py.
        repo_id: "namespace/name" of the dataset repo.
        private: create the repo as private.
        token: Hub token (defaults to the logged-in one / `HF_TOKEN`).
        commit_message: defaults to "Upload N samples in M shards".

    Example:
        >>> push_dataset("shards", "me/tol-mini")  # doctest: +SKIP
    """
    from bioclip_hf.hub.upload import upload

    report = check_shard_folder(folder)
    if repo_id.count("/") != 1:
        raise ValueError(f"repo id must look like 'namespace/name', got {repo_id!r}")
    from dataset_card import write_dataset_card

    _refresh_card(Path(folder), report, repo_id, write_dataset_card)
    message = commit_message or f"Upload {report['num_samples']} samples in {len(report['shards'])} shards"
    info = upload(repo_id, folder=folder, repo_type="dataset", private=private, token=token, commit_message=message,
                  allow_patterns=["README.md", "build_report.json", "*/*.tar"])  # fmt: skip
    logger.info("pushed %s: %s", repo_id, info.commit_url)
    return info.commit_url


def _refresh_card(folder: Path, report: dict, repo_id: str, write_dataset_card) -> None:
    """Re-render README.md so its usage snippet names `repo_id` (keeps the card's name and license)."""
    import types

    import yaml

    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
    summary = types.SimpleNamespace(num_samples=report["num_samples"], splits=report["splits"],
                                    shards=report["shards"], skipped=report["skipped"],
                                    num_skipped=report["num_skipped"])  # fmt: skip
    write_dataset_card(folder, summary, name=header.get("pretty_name", repo_id.split("/")[1]),
                       license=header.get("license", "cc0-1.0"), repo_id=repo_id)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="output folder of build_shards.py")
    parser.add_argument("repo_id", help="dataset repo id, e.g. my-org/my-tree-of-life")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--message", default=None, help="commit message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        url = push_dataset(args.folder, args.repo_id, private=args.private, commit_message=args.message)
    except (ValueError, OSError) as err:  # bad folder / repo id, or the Hub refused (one line naming the repo)
        print(f"push_dataset: error: {err}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
