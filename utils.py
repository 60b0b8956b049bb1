"""Small helpers shared by both entry points: errors, seeding, devices, safe file I/O."""
import json
import os
import sys
import tempfile
import uuid

import numpy as np
import torch
from torch.utils.data import DataLoader


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2, no traceback."""


def run_cli(main, argv=None):
    """Run `main(argv)`, turning a UserError into a one-line message and exit code 2."""
    prog = os.path.basename(sys.argv[0]) or "main"
    try:
        return main(argv)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)


def new_model_id():
    return str(uuid.uuid4())


def draw_seed(exclude=None):
    """A fresh seed from the OS entropy pool, different from `exclude`."""
    while True:
        seed = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)
        if seed != exclude:
            return seed


def evaluation_seed(seed, train_seed):
    """The seed of an evaluation: the given one unless it repeats the training seed
    (the samples would not be fresh), or a drawn one that differs from it."""
    if seed is None:
        return draw_seed(exclude=train_seed)
    if train_seed is not None and seed == train_seed:
        raise UserError(f"--seed {seed} equals the training seed; evaluate with another seed "
                        f"(or leave --seed out to draw one)")
    return seed


def refuse_existing_model(save_dir):
    """Training never overwrites a model: its args.json marks the folder as taken."""
    if os.path.exists(os.path.join(save_dir, "args.json")):
        raise UserError(f"model folder {save_dir} already holds a model; choose another "
                        "--model-id, add --resume to continue it, or --evaluate")


def set_seed(seed):
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(no_cuda=False, index=0):
    if not no_cuda and torch.cuda.is_available():
        return torch.device("cuda", index)
    return torch.device("cpu")


def infinite_iterator(loader, start_batch=0):
    """Batches of a DataLoader forever, reshuffling on every pass; `start_batch`
    batches are skipped without loading them (to resume a run where it stopped)."""
    epoch, skip = divmod(start_batch, len(loader))
    while True:
        if hasattr(loader.sampler, "set_epoch"):  # a DistributedSampler reshuffles only when told
            loader.sampler.set_epoch(epoch)
        if skip:
            rest = list(loader.sampler)[skip * loader.batch_size:]
            yield from DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=rest,
                                  drop_last=loader.drop_last, num_workers=loader.num_workers,
                                  pin_memory=loader.pin_memory)
            skip = 0
        else:
            yield from loader
        epoch += 1


def should_log(step, every, last_step):
    """True at step 1, every `every` steps and at the last step (works for every == 1)."""
    return step == 1 or step % every == 0 or step == last_step


# ---------------------------------------------------------------------------
# Crash-safe file output: write to a temporary file in the same folder, then
# rename, so a kill at any moment leaves the previous version intact.

def atomic_write(path, write):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(df, path):
    atomic_write_text(path, df.to_csv(index=False))


def read_json(path, what="file"):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {what} {path}: {err}") from None


def load_state_dict(path):
    """Load a saved state dict onto the CPU, accepting DataParallel's `module.` prefix."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise UserError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_into(module, path):
    """Load a checkpoint into `module`, with a clear error when the layouts differ."""
    try:
        module.load_state_dict(load_state_dict(path))
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"checkpoint {path} does not fit the model: {first}") from None
    return module
