"""CLIP's symmetric contrastive loss, distributed the way open_clip does it.

With several processes, each one encodes its own slice of the global batch. The loss needs every
image/text pair of the *global* batch as negatives, so features are all-gathered first:

- `gather_with_grad=True` gathers with `torch.distributed.nn.all_gather`, whose backward sends each
  rank the gradient its features received on every rank (summed). Each rank then back-propagates the
  exact gradient of the global loss (times `world_size`, which DDP's gradient averaging removes).
- `gather_with_grad=False` gathers without autograd and re-inserts the local features so they keep
  their gradient; cheaper, but gradients flowing through other ranks' copies are dropped.
- `local_loss=True` scores only the local rows against all gathered columns (O(B_local x B_global)
  logits instead of O(B_global^2)); averaged over ranks it is the same loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllGatherWithGrad(torch.autograd.Function):
    """Differentiable all-gather along dim 0: backward sums each row's gradient over ranks.

    Same semantics as `torch.distributed.nn.all_gather`, implemented with all_reduce so that it works
    on every backend (gloo included) without the all-to-all that backend lacks on CPU.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size, rank = dist.get_world_size(), dist.get_rank()
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        ctx.rows = (rank * tensor.shape[0], (rank + 1) * tensor.shape[0])
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, stop = ctx.rows
        return grad[start:stop]


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather image and text features from every process (open_clip's `gather_features`).

    Args:
        image_features: `(B_local, D)` features of this process.
        text_features: `(B_local, D)` features of this process.
        local_loss: the caller only scores local rows, so gathered copies need no local gradient.
        gather_with_grad: differentiable gather (gradients flow back to the rank that owns the rows).
        rank: this process's index in the default process group.
        world_size: number of processes.

    Returns:
        `(B_global, D)` image and text features, rank-major order.

    Example:
        >>> # inside an initialised process group of 2 ranks, each holding 4 rows:
        >>> # all_img, all_txt = gather_features(img, txt, gather_with_grad=True, rank=r, world_size=2)  # (8, D)
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"gather_features needs an initialised torch.distributed process group (world_size={world_size})")
    if gather_with_grad:
        return _AllGatherWithGrad.apply(image_features), _AllGatherWithGrad.apply(text_features)
    gathered_image = [torch.zeros_like(image_features) for _ in range(world_size)]
    gathered_text = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(gathered_image, image_features.contiguous())
    dist.all_gather(gathered_text, text_features.contiguous())
    if not local_loss:
        # Put the local tensors back so at least the local rows carry gradients.
        gathered_image[rank] = image_features
        gathered_text[rank] = text_features
    return torch.cat(gathered_image, dim=0), torch.cat(gathered_text, dim=0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over image/text pairs, optionally across processes (open_clip's `ClipLoss`).

    Args:
        local_loss: score local rows against the gathered batch instead of the full global matrix.
        gather_with_grad: all-gather features with gradients (exact global-batch gradients).
        cache_labels: reuse the target index tensor while the batch size does not change.
        rank: process index (`accelerator.process_index`).
        world_size: number of processes (`accelerator.num_processes`).

    Example:
        >>> import torch
        >>> loss_fn = ClipLoss()
        >>> img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = loss_fn(img, txt, logit_scale=torch.tensor(10.0))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world_size {world_size}")
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self._labels: dict[tuple[torch.device, int], torch.Tensor] = {}

    def get_ground_truth(self, device: torch.device, num_logits: int) -> torch.Tensor:
        """Index of the matching column for each row of this process's logits."""
        key = (device, num_logits)
        if key in self._labels:
            return self._labels[key]
        labels = torch.arange(num_logits, device=device, dtype=torch.long)
        if self.world_size > 1 and self.local_loss:
            labels = labels + num_logits * self.rank
        if self.cache_labels:
            self._labels[key] = labels
        return labels

    def get_logits(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(logits_per_image, logits_per_text)` for this process (see class docstring)."""
        if self.world_size == 1:
            logits_per_image = logit_scale * image_features @ text_features.T
            return logits_per_image, logits_per_image.T
        all_image, all_text = gather_features(
            image_features, text_features, self.local_loss, self.gather_with_grad, self.rank, self.world_size
        )
        if self.local_loss:
            return logit_scale * image_features @ all_text.T, logit_scale * text_features @ all_image.T
        logits_per_image = logit_scale * all_image @ all_text.T
        return logits_per_image, logits_per_image.T

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """Mean of the image->text and text->image cross-entropies.

        Args:
            image_features: `(B_local, D)` L2-normalised image embeddings.
            text_features: `(B_local, D)` L2-normalised text embeddings, row i paired with image i.
            logit_scale: the *exponentiated* temperature (`model.logit_scale.exp()`).
        """
        if image_features.shape != text_features.shape or image_features.ndim != 2:
            raise ValueError(
                f"image and text features must both be (batch, dim); got {tuple(image_features.shape)} "
                f"and {tuple(text_features.shape)}"
            )
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        labels = self.get_ground_truth(image_features.device, logits_per_image.shape[0])
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


__all__ = ["ClipLoss", "gather_features"]
