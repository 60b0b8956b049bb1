"""Image/text throughput: our pipeline next to the published one, in the same run.

Reference ("published"): the loader looks every word up and builds a one-hot
(sequence_length x vocab_size) float tensor per sample, and gathers a dict of
all latent values per sample; the encoders are wrapped in DataParallel and the
text encoder's first layer multiplies the one-hot tensors.
Ours: sentences are tokenised once into a LongTensor, the first text layer
is an embedding lookup, no DataParallel.

Prints samples/s of data loading alone and of training steps (forward,
symmetric InfoNCE, backward, clipping, Adam) on preloaded batches, and the
ratio ours / reference. Synthetic data (tests/m3di_fixture.py) with the full
colour-name lists, so the vocabulary has the size of the published one.

    python benchmarks/bench_imgtxt.py --quick     # 64 px, batch 32: about a minute on 2 CPU cores
    python benchmarks/bench_imgtxt.py             # 64 and 224 px, batch 32 and 256: a few minutes
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from datasets import Multimodal3DIdent, Vocabulary, sequence_length_of, tokenize  # noqa: E402
from encoders import image_encoder, text_encoder  # noqa: E402
from losses import infonce_loss  # noqa: E402
from m3di_fixture import _all_color_names, make_split, write_m3di  # noqa: E402
from utils import get_device  # noqa: E402


class PublishedStyle(torch.utils.data.Dataset):
    """The published per-sample work: word lookups, one-hot tensor, label dicts."""

    def __init__(self, ds):
        self.ds = ds
        self.words = [ds.vocab.decode(t) for t in ds.tokens]  # the tokenised sentences
        self.labels = {m: ds.latents[m] for m in ("image", "text")}

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, idx):
        image = self.ds.transform(self.ds.load_image(idx))
        words = self.words[idx] + ["{eos}"]
        words = words + ["{pad}"] * (self.ds.sequence_length - len(words))
        indices = [self.ds.vocab.w2i.get(w, 2) for w in words]
        onehot = F.one_hot(torch.Tensor(indices).long(), self.ds.vocab_size).float()
        z_image = {k: v[idx] for k, v in self.labels["image"].items()}
        z_text = {k: v[idx] for k, v in self.labels["text"].items()}
        return {"image": image, "text": onehot, "z_image": z_image, "z_text": z_text}


def loading_rate(dataset, batch_size, workers, pin_memory, max_batches):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=pin_memory)
    n, start = 0, time.perf_counter()
    for i, _ in enumerate(loader):
        n += batch_size
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - start)


def best_of_interleaved(fns, rounds):
    """Run the functions alternately `rounds` times; the best (largest) rate of each.

    Other jobs share this machine's cores; alternating (in reversed order every
    other round) and keeping the best run compares both pipelines under the
    same conditions.
    """
    best = [0.0] * len(fns)
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            best[i] = max(best[i], fns[i]())
    return best


def make_step(enc_img, enc_txt, device):
    params = list(enc_img.parameters()) + list(enc_txt.parameters())
    opt = torch.optim.Adam(params, lr=1e-5)
    sim, ce = nn.CosineSimilarity(dim=-1), nn.CrossEntropyLoss()

    def step(images, texts):
        loss = infonce_loss(enc_img(images), enc_txt(texts), sim, ce, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        return loss.item()
    return step


def step_rate(step, images, texts, device):
    """Samples/s of one training step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(images, texts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64 px and batch 32 only, few steps")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the loading test")
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args()
    device = get_device(args.no_cuda)
    sizes = [64] if args.quick else [64, 224]
    batches = [32] if args.quick else [32, 256]
    n_train = max(batches)
    print(f"device {device}, torch threads {torch.get_num_threads()}, loader workers {args.workers}")

    # A vocabulary and sequence length of published size, from 20,000 sentences.
    _, _, sentences = make_split(20000, np.random.default_rng(0), _all_color_names())
    tokens = [tokenize(x) for x in sentences]
    vocab, seq_len = Vocabulary.build(tokens), sequence_length_of(tokens)

    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            root = write_m3di(os.path.join(tmp, f"m3di{size}"), sizes={"train": n_train}, image_size=size,
                              color_names=_all_color_names())
            ds = Multimodal3DIdent(root, "train", vocab=vocab, sequence_length=seq_len)
            print(f"\n{size}x{size} images, vocabulary {ds.vocab_size} tokens, "
                  f"sequence length {ds.sequence_length}")

            # data loading alone
            n_batches = n_train // 32
            pin = device.type == "cuda"
            ours, ref = best_of_interleaved(
                [lambda: loading_rate(ds, 32, args.workers, pin, n_batches),
                 lambda: loading_rate(PublishedStyle(ds), 32, args.workers, pin, n_batches)], 2)
            print(f"  loading, batch 32:   ours {ours:8.1f} samples/s   published-style {ref:8.1f}"
                  f"   ratio {ours / ref:5.2f}")

            # training steps on preloaded batches
            torch.manual_seed(0)
            enc_img = image_encoder(100, 4).to(device)
            enc_txt = text_encoder("conv", ds.vocab_size, 4, ds.sequence_length).to(device)
            ref_img = nn.DataParallel(image_encoder(100, 4)).to(device)
            ref_txt = nn.DataParallel(text_encoder("conv", ds.vocab_size, 4, ds.sequence_length)).to(device)
            ref_img.module.load_state_dict(enc_img.state_dict())
            ref_txt.module.load_state_dict(enc_txt.state_dict())
            ours_step = make_step(enc_img, enc_txt, device)
            ref_step = make_step(ref_img, ref_txt, device)
            all_images = torch.stack([ds[i]["image"] for i in range(n_train)]).to(device)
            all_tokens = ds.tokens[:n_train].to(device)
            warm = slice(0, 8)
            ours_step(all_images[warm], all_tokens[warm])
            ref_step(all_images[warm], F.one_hot(all_tokens[warm], ds.vocab_size).float())
            for bs in batches:
                steps = 2 if size >= 224 else 3
                images, tokens = all_images[:bs], all_tokens[:bs]
                onehot = F.one_hot(tokens, ds.vocab_size).float()
                r_ours, r_ref = best_of_interleaved(
                    [lambda: step_rate(ours_step, images, tokens, device),
                     lambda: step_rate(ref_step, images, onehot, device)], steps)
                print(f"  training, batch {bs:3d}: ours {r_ours:8.1f} samples/s   published-style "
                      f"{r_ref:8.1f}   ratio {r_ours / r_ref:5.2f}   (best of {steps} step(s) each)")
            one_hot_mb = bs * ds.sequence_length * ds.vocab_size * 4 / 2**20
            print(f"  text batch of {bs}: {one_hot_mb:.1f} MB as one-hot floats, "
                  f"{bs * ds.sequence_length * 8 / 2**20:.3f} MB as token indices")


if __name__ == "__main__":
    main()
