"""Distributed helpers: torchrun set-up, rank checks, gathering embeddings with gradients.

Both entry points run unchanged as `python main_X.py ...` (one process) and under
`torchrun --nproc_per_node N main_X.py ...` (NCCL on CUDA, gloo on CPU).
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from utils import get_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(no_cuda=False):
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not no_cuda
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def device_for(info, no_cuda=False):
    return get_device(no_cuda, info.local_rank)


def local_slice(n, info):
    """This rank's rows of a global batch of n (which must divide evenly)."""
    per_rank = n // info.world_size
    return slice(info.rank * per_rank, (info.rank + 1) * per_rank)


def gather_with_grad(x, info):
    """Concatenate x from every rank in rank order; gradients flow back to each rank's part."""
    if not info.enabled:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def mean_over_ranks(value, info):
    """Average a scalar tensor over ranks (for logging)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def wrap_ddp(module, info, device):
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def cleanup(info):
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, info):
    """Rank 0's value of obj on every rank (e.g. a drawn seed or model id)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks.

    nn.SyncBatchNorm does this on GPUs only; this version works with gloo on
    CPU. The statistics are summed with a differentiable all-reduce, so the
    gradients equal those of one process on the global batch. Same parameters
    and buffers as BatchNorm2d, so state dicts are interchangeable.
    """

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = dist_fn.all_reduce(torch.cat((x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count)))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


def sync_batchnorm(module, info, device):
    """Make every BatchNorm2d use global-batch statistics under DDP (no-op otherwise)."""
    if not info.enabled:
        return module
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            sync_batchnorm(child, info, device)
    return module


def barrier(info):
    if info.enabled:
        dist.barrier()
