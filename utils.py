"""Helpers of the entry points that need torch: seeding, devices, batches, checkpoint files."""
import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from cli import UserError, first_line
from files import atomic_write


def set_seed(seed):
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(no_cuda=False, index=0):
    if not no_cuda and torch.cuda.is_available():
        return torch.device("cuda", index)
    return torch.device("cpu")


def infinite_iterator(loader, start_batch=0):
    """Batches of a DataLoader forever, reshuffling on every pass; `start_batch`
    batches are skipped without loading them (to resume a run where it stopped).
    Close it (contextlib.closing) to end the loader's workers."""
    epoch, skip = divmod(start_batch, len(loader))
    try:
        while True:
            if hasattr(loader.sampler, "set_epoch"):  # a DistributedSampler reshuffles only when told
                loader.sampler.set_epoch(epoch)
            if skip:
                rest = list(loader.sampler)[skip * loader.batch_size:]
                yield from DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=rest,
                                      drop_last=loader.drop_last, num_workers=loader.num_workers,
                                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)
                skip = 0
            else:
                yield from loader
            epoch += 1
    finally:
        # persistent workers outlive the generator, and workers that ignore SIGTERM
        # (run.ignore_stop_signals) cannot be terminated at exit: tell them to end
        if getattr(loader, "_iterator", None) is not None:
            loader._iterator._shutdown_workers()


def should_log(step, every, last_step):
    """The published schedule: steps 1, 1 + every, 1 + 2 every, ... and the last step;
    every step when every == 1 (where the published `step % 1 == 1` never fires)."""
    return every == 1 or step % every == 1 or step == last_step


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))



def load_state_dict(path):
    """Load a saved state dict onto the CPU, accepting DataParallel's `module.` prefix."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise UserError(f"cannot read checkpoint {path}: {first_line(err)}") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def state_dict_mismatch(err, limit=300):
    """torch's multi-line load_state_dict error as one line: which keys, which shapes."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = "; ".join(lines[1:] if len(lines) > 1 else lines)
    return detail if len(detail) <= limit else detail[:limit - 3] + "..."


def load_into(module, path):
    """Load a checkpoint into `module`, with a clear error when the layouts differ."""
    try:
        module.load_state_dict(load_state_dict(path))
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit the model: {state_dict_mismatch(err)}") from None
    return module


def all_finite(modules):
    """True when every parameter is finite: a diverged step must not be saved."""
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())
