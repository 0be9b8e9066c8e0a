"""`bioclip-hf push`: upload a model + processor + model card (+ an open_clip copy) to a Hub repo."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder (transformers or open_clip layout) or Hub repo id to upload")
    parser.add_argument("repo_id", help="target Hub repo, e.g. my-org/bioclip-finetune (created if missing)")
    parser.add_argument("--eval-results", metavar="JSON", help="results of bioclip-hf evaluate for the card (a --suite bioclip-2 run also writes .eval_results/*.yaml)")
    parser.add_argument("--base-model", default="imageomics/bioclip", help="base_model in the card (default: imageomics/bioclip)")
    parser.add_argument("--dataset", action="append", dest="datasets", metavar="ID",
                        help="training dataset Hub id (repeatable; default imageomics/TreeOfLife-10M)")  # fmt: skip
    parser.add_argument("--license", default="mit", help="license id for the card (default: mit)")
    parser.add_argument("--template", help="model card template (default: the bundled model_card.md)")
    parser.add_argument("--no-open-clip", action="store_true", help="do not add the open_clip copy of the weights")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit-message", default="Upload BioCLIP model with bioclip-hf", help="commit message")
    parser.add_argument("--allow-pickle", action="store_true", help="allow reading pickle weights of the source")
    parser.add_argument("--revision", help="branch, tag or commit when the model is a Hub repo id (default: the "
                        "registry's pinned commit for released models, else main)")  # fmt: skip
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the token saved by `hf auth login`)")
    parser.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR and stop")


def stage_repo_folder(args: argparse.Namespace, folder) -> None:
    """Write everything to upload into `folder`: weights, processor, card, open_clip copy."""
    from bioclip_hf.hub.cards import CardInfo, build_model_card
    from bioclip_hf.models.convert import export_to_open_clip
    from bioclip_hf.models.loading import load_model_and_processor

    # The one loading path: pinned revisions, offline fast failure and pickle policy as in predict.
    model, processor = load_model_and_processor(args.model, device="cpu", allow_pickle=args.allow_pickle,
                                                revision=args.revision)  # fmt: skip
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if not args.no_open_clip:
        export_to_open_clip(model, folder, processor=processor)
    info = CardInfo(repo_id=args.repo_id, base_model=args.base_model, datasets=args.datasets or ["imageomics/TreeOfLife-10M"],
                    license=args.license, has_open_clip=not args.no_open_clip)  # fmt: skip
    build_model_card(info, args.eval_results, args.template).save(str(folder / "README.md"))
    from bioclip_hf.hub.cards import load_eval_results
    from bioclip_hf.hub.eval_results import is_suite_results, write_eval_results

    results = load_eval_results(args.eval_results)
    if is_suite_results(results):  # a suite run also goes into the Hub's per-repo .eval_results/*.yaml files
        write_eval_results(folder, results)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from bioclip_hf.hub.upload import upload

    if "/" not in args.repo_id.strip("/"):
        raise ValueError(f"repo id {args.repo_id!r} must look like owner/name")
    from bioclip_hf.hub.access import is_repo_id
    from bioclip_hf.hub.registry import normalize_model_id

    model_id = normalize_model_id(args.model)
    if not Path(model_id).is_dir() and not (is_repo_id(model_id) and model_id.count("/") == 1):
        raise FileNotFoundError(f"model folder not found: {args.model} (nor is it a Hub repo id owner/name)")
    if args.dry_run:
        folder = Path(args.dry_run)
        folder.mkdir(parents=True, exist_ok=True)
        stage_repo_folder(args, folder)
        print(folder)
        return 0
    with tempfile.TemporaryDirectory(prefix="bioclip-push-") as tmp:
        stage_repo_folder(args, Path(tmp))
        commit = upload(args.repo_id, folder=tmp, private=args.private, token=args.token,
                        commit_message=args.commit_message)  # fmt: skip
    print(commit.commit_url)
    return 0
