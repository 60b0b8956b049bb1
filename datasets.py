"""The Multimodal3DIdent (m3di) image/text data set: files, tokenisation, vocabulary.

Folder format (one folder per split, `train`, `val`, `test`):

    <datapath>/<split>/images/<index>.png       any zero-padding of the index
    <datapath>/<split>/text/text_raw.txt        line i describes image i
    <datapath>/<split>/latents_image.csv        row i: the factors of image i
    <datapath>/<split>/latents_text.csv         row i: the factors of sentence i

Tokenisation (no nltk). `tokenize` splits a sentence into words and
punctuation with the rules that nltk's `word_tokenize` (which the published
scripts used) applies to m3di sentences, so that a `vocab.json` written by the
published scripts maps our tokens to the same indices:

- a double quote that opens (at the start, or after a space or bracket)
  becomes the token ``` `` ```, any other double quote the token `''`;
- `:` and `,` are split off unless a digit follows, so the quoted colour name
  "xkcd:robin's egg" gives `` `` xkcd : robin 's egg '' `` everywhere
  (train, val and test alike: the rules never look beyond the sentence);
- `'s`, `'m`, `'d`, `'ll`, `'re`, `'ve`, `n't` and a word-final `'` are split
  off; `;@#$%&?!` and brackets are tokens; a sentence-final `.` is a token;
- hyphens and slashes stay inside words (`top-left`, `blue/green`).

Each sentence becomes token indices, `{eos}` appended, right-padded with
`{pad}` to a fixed `sequence_length` shared by all splits: the longest
training sentence + 1. A longer (val/test) sentence is truncated to
`sequence_length - 1` tokens and still ends in `{eos}`; `num_truncated` counts
them. Words missing from the vocabulary map to `{unk}`.
"""
import math
import os
import re
from collections import Counter

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import transforms

from cli import UserError
from files import atomic_write_json, read_json

SPECIAL_TOKENS = ("{pad}", "{eos}", "{unk}")
PAD, EOS, UNK = 0, 1, 2
IMAGE_MEAN = (0.4327, 0.2689, 0.2839)  # per-channel statistics of 3DIdent
IMAGE_STD = (0.1201, 0.1457, 0.1082)


class DataError(UserError):
    """Bad or inconsistent data files: reported as one line that names the file.

    Raised inside a DataLoader worker, the error comes back to the main process
    with the worker's traceback in its message; the constructor keeps only the
    original one-line message, so the command line still prints one line.
    """

    def __init__(self, message):
        message = str(message)
        if "Original Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


# ---------------------------------------------------------------------------
# Tokenisation and vocabulary

_TOKEN_RULES = [
    (re.compile(r'^"'), " `` "),                               # opening quote at the start
    (re.compile(r'(?<=[\s(\[{<])"'), " `` "),                  # opening quote after space/bracket
    (re.compile(r'"'), " '' "),                                # every other quote closes
    (re.compile(r"[:,](?!\d)"), r" \g<0> "),                   # 'xkcd:aqua' -> xkcd : aqua
    (re.compile(r"[;@#$%&?!()\[\]{}<>]"), r" \g<0> "),
    (re.compile(r"(?<!\.)\.(?=[\s\])}>'\"]*$)"), " . "),       # sentence-final period
    (re.compile(r"(?i)(?<=[^'\s])('s|'m|'d|'ll|'re|'ve|n't|')(?=\s|$)"), r" \1"),
]


def tokenize(sentence):
    """Words and punctuation of one sentence (see the module docstring for the rules)."""
    text = sentence.strip()
    for pattern, replacement in _TOKEN_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


class Vocabulary:
    """Word <-> index maps with `{pad}`, `{eos}`, `{unk}` at 0, 1, 2.

    Stored as `vocab.json` = {"w2i": {word: index}, "i2w": {"index": word}},
    the layout of the published scripts.
    """

    def __init__(self, words):
        words = list(words)
        if tuple(words[:3]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary starts with {SPECIAL_TOKENS}, got {words[:3]}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary lists each word once")
        self.i2w = words
        self.w2i = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, token_lists):
        """Special tokens, then every word in order of first occurrence (as published)."""
        counts = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls(list(SPECIAL_TOKENS) + [w for w in counts if w not in SPECIAL_TOKENS])

    @classmethod
    def load(cls, path):
        data = read_json(path, what="vocabulary")
        try:
            i2w = data["i2w"]
            words = [i2w[str(i)] for i in range(len(i2w))]
            vocab = cls(words)
            if {w: int(i) for w, i in data["w2i"].items()} != vocab.w2i:
                raise ValueError("w2i and i2w disagree")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            what = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
            raise DataError(f"vocabulary {path} is not a valid vocab.json: {what}") from None
        return vocab

    def save(self, path):
        atomic_write_json(path, {"w2i": self.w2i, "i2w": {str(i): w for i, w in enumerate(self.i2w)}})

    def __len__(self):
        return len(self.i2w)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.i2w == other.i2w

    def encode(self, tokens, length):
        """Indices of `tokens` + `{eos}`, padded (or truncated, keeping `{eos}`) to `length`."""
        ids = [self.w2i.get(w, UNK) for w in tokens[:length - 1]] + [EOS]
        return ids + [PAD] * (length - len(ids))

    def decode(self, indices):
        """Tokens up to (not including) `{eos}`."""
        out = []
        for i in (int(i) for i in indices):
            if i == EOS:
                break
            out.append(self.i2w[i])
        return out


def read_sentences(path):
    """One sentence per line (a final newline is optional)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"text file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read text file {path}: {err}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"text file {path} is empty")
    return [line.rstrip("\r") for line in lines]


def split_paths(data_dir, split):
    root = os.path.join(data_dir, split)
    return {"root": root,
            "images": os.path.join(root, "images"),
            "text": os.path.join(root, "text", "text_raw.txt"),
            "latents_image": os.path.join(root, "latents_image.csv"),
            "latents_text": os.path.join(root, "latents_text.csv")}


def tokenized_split(data_dir, split="train"):
    """Token lists of one split's sentences (for building a vocabulary without images)."""
    paths = split_paths(data_dir, split)
    if not os.path.isdir(paths["root"]):
        raise DataError(f"split folder not found: {paths['root']}")
    return [tokenize(s) for s in read_sentences(paths["text"])]


def sequence_length_of(token_lists):
    """The longest sentence + 1 (for `{eos}`)."""
    return max(len(t) for t in token_lists) + 1


def default_transform():
    """ToTensor, then Normalize with the 3DIdent channel statistics."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGE_MEAN, IMAGE_STD)])


def _read_latents(path, columns, n_rows, text_path):
    if not os.path.isfile(path):
        raise DataError(f"latents file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read latents file {path}: {str(err).splitlines()[0]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"latents file {path} lacks factor columns: {', '.join(missing)}")
    if len(df) != n_rows:
        raise DataError(f"latents file {path} has {len(df)} rows but {text_path} has "
                        f"{n_rows} lines")
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"latents file {path}: column {c} has a missing or non-numeric "
                            f"value in data row {row + 1}")
        df[c] = values
    return df


def _index_images(folder, n, text_path):
    """Paths of images 0..n-1, whatever the zero-padding of the file names."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder not found: {folder}")
    found = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() != ".png" or not stem.isdigit():
                continue
            i = int(stem)
            if i in found:
                raise DataError(f"image folder {folder} holds two images for index {i}: "
                                f"{os.path.basename(found[i])} and {entry.name}")
            found[i] = entry.path
    width = max(1, math.ceil(math.log10(n))) if n > 1 else 1
    missing = [i for i in range(n) if i not in found]
    if missing:
        expected = os.path.join(folder, str(missing[0]).zfill(width) + ".png")
        raise DataError(f"image folder {folder} lacks {len(missing)} of the {n} images that "
                        f"{text_path} describes (first missing: {expected})")
    if len(found) != n:
        raise DataError(f"image folder {folder} holds {len(found)} images but {text_path} has "
                        f"{n} lines")
    return [found[i] for i in range(n)]


def _open_image(path):
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises many types for bad files
        raise DataError(f"cannot read image {path}: {err}") from None


class Multimodal3DIdent(torch.utils.data.Dataset):
    """One split of Multimodal3DIdent.

    A sample is a dict: `image` (the transformed image, by default a
    normalised float tensor 3 x H x W), `text` (LongTensor of
    `sequence_length` token indices) and `index`. The ground-truth factors are
    the DataFrames `latents["image"]` and `latents["text"]` (row i = sample i);
    `factor_values(modality, name)` returns one column as an array.

    Args:
        data_dir: the folder that holds `train/`, `val/`, `test/`.
        mode: the split.
        transform: applied to the PIL image; default `default_transform()`.
        has_labels: read the latents CSVs (and check them).
        vocab: a `Vocabulary` or the path of a `vocab.json`. If None:
            `<data_dir>/vocab.json` when present, else built from this split
            (train only). Nothing is ever written into `data_dir`.
        sequence_length: token slots per sentence, `{eos}` included; default
            this split's longest sentence + 1. Pass the training split's value
            to the val and test splits.
        max_sequence_length: the default length is capped at this (longer
            sentences are cut, counted in `num_truncated`).
    """

    FACTORS = {
        "image": {
            0: "object_shape",
            1: "object_ypos",
            2: "object_xpos",
            # 3: "object_zpos" is constant
            4: "object_alpharot",
            5: "object_betarot",
            6: "object_gammarot",
            7: "spotlight_pos",
            8: "object_color",
            9: "spotlight_color",
            10: "background_color",
        },
        "text": {
            0: "object_shape",
            1: "object_ypos",
            2: "object_xpos",
            # 3: "object_zpos" is constant
            4: "object_color_index",
            5: "text_phrasing",
        },
    }

    # The content: what the caption states of the image without change. The object's colour
    # is style: the caption names it from a palette drawn anew per sample, so it changes
    # between the modalities; the rotations, spotlight and background are image-specific,
    # the phrasing text-specific.
    CONTENT_FACTORS = ("object_shape", "object_ypos", "object_xpos")

    DISCRETE_FACTORS = {
        "image": {0: "object_shape", 1: "object_ypos", 2: "object_xpos"},
        "text": {0: "object_shape", 1: "object_ypos", 2: "object_xpos",
                 4: "object_color_index", 5: "text_phrasing"},
    }

    def __init__(self, data_dir, mode="train", transform=None, has_labels=True, vocab=None,
                 sequence_length=None, max_sequence_length=None):
        self.data_dir, self.mode = data_dir, mode
        self.transform = transform if transform is not None else default_transform()
        self.has_labels = has_labels
        paths = split_paths(data_dir, mode)
        self.paths = paths
        if not os.path.isdir(data_dir):
            raise DataError(f"data folder not found: {data_dir}")
        if not os.path.isdir(paths["root"]):
            raise DataError(f"split folder not found: {paths['root']}")

        self.sentences = read_sentences(paths["text"])
        n = len(self.sentences)
        self.image_paths = _index_images(paths["images"], n, paths["text"])
        self.latents = {}
        if has_labels:
            for m in ("image", "text"):
                self.latents[m] = _read_latents(paths[f"latents_{m}"], list(self.FACTORS[m].values()),
                                                n, paths["text"])

        token_lists = [tokenize(s) for s in self.sentences]
        self.vocab = self._resolve_vocab(vocab, token_lists)
        self.vocab_size = len(self.vocab)
        natural = sequence_length_of(token_lists)
        if max_sequence_length is not None:  # one runaway caption must not size every batch
            natural = min(natural, int(max_sequence_length))
        self.sequence_length = int(sequence_length) if sequence_length is not None else natural
        if self.sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length}")
        self.max_sequence_length = self.sequence_length  # the published attribute name
        self.num_truncated = sum(len(t) + 1 > self.sequence_length for t in token_lists)
        self.tokens = torch.tensor([self.vocab.encode(t, self.sequence_length) for t in token_lists],
                                   dtype=torch.long)
        self.num_unknown = int((self.tokens == UNK).sum())
        # All images of a split must have one size (batches stack them); checked per sample.
        self.image_size = _open_image(self.image_paths[0]).size

    def _resolve_vocab(self, vocab, token_lists):
        if isinstance(vocab, Vocabulary):
            return vocab
        if vocab is not None:
            return Vocabulary.load(vocab)
        data_vocab = os.path.join(self.data_dir, "vocab.json")
        if os.path.isfile(data_vocab):
            return Vocabulary.load(data_vocab)
        if self.mode != "train":
            raise DataError(f"the {self.mode} split needs the training vocabulary: pass vocab=, "
                            f"or put a vocab.json into {self.data_dir}")
        return Vocabulary.build(token_lists)

    def factor_values(self, modality, name):
        """One factor of every sample, as a (writable) array."""
        return self.latents[modality][name].to_numpy(copy=True)

    def load_image(self, idx):
        path = self.image_paths[idx]
        image = _open_image(path)
        if image.size != self.image_size:
            raise DataError(f"image {path} is {image.size[0]}x{image.size[1]} pixels but "
                            f"{self.image_paths[0]} is {self.image_size[0]}x{self.image_size[1]}")
        return image

    def __getitem__(self, idx):
        if torch.is_tensor(idx):
            idx = idx.item()
        return {"image": self.transform(self.load_image(idx)), "text": self.tokens[idx], "index": idx}

    def __len__(self):
        return len(self.sentences)
