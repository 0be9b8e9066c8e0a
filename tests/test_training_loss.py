"""ClipLoss: matches open_clip, and 2-process gloo training sees exactly the 1-process full-batch loss/gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bioclip_hf.training.loss import ClipLoss

BATCH, DIM, WORLD = 8, 6, 2


def _features(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(BATCH, DIM, generator=gen), dim=-1).double()
    text = F.normalize(torch.randn(BATCH, DIM, generator=gen), dim=-1).double()
    return image, text, torch.tensor(3.0, dtype=torch.float64)


def _loss_and_grads(loss_fn, image, text, log_scale, rows=slice(None)):
    image = image[rows].clone().requires_grad_(True)
    text = text[rows].clone().requires_grad_(True)
    log_scale = log_scale.clone().requires_grad_(True)
    loss = loss_fn(image, text, log_scale.exp())
    loss.backward()
    return loss.detach(), image.grad, text.grad, log_scale.grad


VARIANTS = {"global_loss": (False, True), "local_loss": (True, True), "no_grad_gather": (False, False)}


def _worker(rank: int, init_file: str, out_dir: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        image, text, log_scale = _features()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = {}
        for name, (local_loss, gather_with_grad) in VARIANTS.items():
            loss_fn = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=WORLD)
            loss, g_image, g_text, g_scale = _loss_and_grads(loss_fn, image, text, log_scale, rows)
            # What DDP does to parameter gradients: average them over ranks. The logit scale is a parameter;
            # feature gradients reach parameters only through this rank's encoder, so DDP divides them by WORLD.
            dist.all_reduce(loss)
            dist.all_reduce(g_scale)
            results[name] = {"loss": loss / WORLD, "image": g_image / WORLD, "text": g_text / WORLD, "scale": g_scale / WORLD}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    """Results of every variant, from one 2-process gloo run (spawned once: process start-up dominates)."""
    import torch.multiprocessing as mp

    tmp_path = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    return {
        name: {
            "loss": per_rank[0][name]["loss"],
            "scale": per_rank[0][name]["scale"],
            "image": torch.cat([r[name]["image"] for r in per_rank]),
            "text": torch.cat([r[name]["text"] for r in per_rank]),
        }
        for name in VARIANTS
    }


@pytest.fixture(scope="module")
def full_batch():
    loss, g_image, g_text, g_scale = _loss_and_grads(ClipLoss(), *_features())
    return {"loss": loss, "image": g_image, "text": g_text, "scale": g_scale}


@pytest.mark.float_sensitive
def test_single_process_matches_open_clip(full_batch):
    from support.models import import_open_clip

    reference = import_open_clip().loss.ClipLoss()
    loss, g_image, g_text, g_scale = _loss_and_grads(reference, *_features())
    # float64 throughout: 8 x 8 logits <= e^3 = 20 summed in another order differ by ~8 x 20 x 2**-53 ~ 2e-14,
    # so 1e-12 holds on any CPU and thread count while any formula difference shows at >= 1e-3.
    torch.testing.assert_close(full_batch["loss"], loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(full_batch["image"], g_image, rtol=0, atol=1e-12)
    torch.testing.assert_close(full_batch["text"], g_text, rtol=0, atol=1e-12)
    torch.testing.assert_close(full_batch["scale"], g_scale, rtol=0, atol=1e-12)
    # A perfectly aligned batch scores lower than a random one: the loss has the right sign/shape.
    image, _, log_scale = _features()
    assert ClipLoss()(image, image, log_scale.exp()) < full_batch["loss"]


@pytest.mark.float_sensitive
@pytest.mark.parametrize("variant", ["global_loss", "local_loss"])
def test_two_process_gather_with_grad_equals_full_batch(two_process, full_batch, variant):
    got = two_process[variant]
    # float64, as above: the gather and the all-reduce reorder sums of <= 16 terms <= 20 (~1e-14); 1e-9 is ample.
    for key in ("loss", "image", "text", "scale"):
        torch.testing.assert_close(got[key], full_batch[key], rtol=0, atol=1e-9, msg=f"{key} differs")


def test_two_process_without_grad_gather_drops_gradients(two_process, full_batch):
    # Same loss value, but gradients through the other rank's rows are lost: the check above can fail.
    got = two_process["no_grad_gather"]
    torch.testing.assert_close(got["loss"], full_batch["loss"], rtol=0, atol=1e-9)
    assert (got["image"] - full_batch["image"]).abs().max() > 1e-3


def test_bad_inputs():
    with pytest.raises(ValueError, match="invalid rank 2"):
        ClipLoss(rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        ClipLoss()(torch.zeros(4, 8), torch.zeros(3, 8), torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="process group"):
        ClipLoss(rank=0, world_size=2)(torch.zeros(4, 8), torch.zeros(4, 8), torch.tensor(1.0))
