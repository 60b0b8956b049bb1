"""Multimodal3DIdent: tokenisation, vocabulary, padding, images, and clear data errors."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from datasets import (EOS, PAD, SPECIAL_TOKENS, UNK, DataError, Multimodal3DIdent, Vocabulary,
                      IMAGE_MEAN, IMAGE_STD, tokenize)
from m3di_fixture import PHRASES, write_m3di
from cli import UserError

COLOR = "xkcd:robin's egg blue"
COLOR_TOKENS = ["``", "xkcd", ":", "robin", "'s", "egg", "blue", "''"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_m3di(str(tmp_path_factory.mktemp("m3di")), sizes={"train": 12, "val": 5, "test": 5})


@pytest.fixture
def copy(data, tmp_path):
    """A private copy of the data folder, for tests that break it."""
    dst = str(tmp_path / "m3di")
    shutil.copytree(data, dst)
    return dst


# ---------------------------------------------------------------------------
# Tokenisation

def test_tokenize_phrasings():
    fill = dict(SHAPE="teapot", YPOS="top", XPOS="left", COLOR=COLOR)
    expected = [
        ["A", "teapot", "of", *COLOR_TOKENS, "color", "is", "visible", ",", "positioned", "at", "the",
         "top-left", "of", "the", "image", "."],
        ["A", *COLOR_TOKENS, "teapot", "is", "at", "the", "top-left", "of", "the", "image", "."],
        ["The", "top-left", "of", "the", "image", "shows", "a", *COLOR_TOKENS, "colored", "teapot", "."],
        ["At", "the", "top-left", "of", "the", "picture", "is", "a", "teapot", "in", *COLOR_TOKENS,
         "color", "."],
        ["At", "the", "top-left", "of", "the", "image", ",", "there", "is", "a", *COLOR_TOKENS,
         "object", "in", "the", "form", "of", "a", "teapot", "."],
    ]
    for phrase, tokens in zip(PHRASES, expected):
        assert tokenize(phrase.format(**fill)) == tokens


def test_tokenize_colour_names_consistently():
    assert tokenize('A "xkcd:blue/green" cow is here.') == ["A", "``", "xkcd", ":", "blue/green", "''",
                                                            "cow", "is", "here", "."]
    assert tokenize('"tab:blue" first, then 3,5 and: end') == ["``", "tab", ":", "blue", "''", "first",
                                                               ",", "then", "3,5", "and", ":", "end"]
    # a colour name gives the same tokens wherever it stands in the sentence
    for name in ("xkcd:bright aqua", "lawngreen", COLOR):
        inner = tokenize(f'x "{name}" y')[1:-1]
        assert tokenize(f'"{name}" y.')[:len(inner)] == inner
        assert tokenize(f'It is "{name}".')[2:2 + len(inner)] == inner


# ---------------------------------------------------------------------------
# Vocabulary, padding, unknown words

def test_vocabulary_round_trip(tmp_path):
    vocab = Vocabulary.build([["a", "b", "a"], ["c", "{eos}"]])
    assert vocab.i2w == [*SPECIAL_TOKENS, "a", "b", "c"]
    assert (vocab.w2i["{pad}"], vocab.w2i["{eos}"], vocab.w2i["{unk}"]) == (0, 1, 2)
    path = str(tmp_path / "vocab.json")
    vocab.save(path)
    raw = json.load(open(path))
    assert raw["i2w"]["3"] == "a" and raw["w2i"]["c"] == 5  # the published layout
    assert Vocabulary.load(path) == vocab
    ids = vocab.encode(["a", "zzz", "c"], 6)
    assert ids == [3, UNK, 5, EOS, PAD, PAD]
    assert vocab.decode(ids) == ["a", "{unk}", "c"]
    assert vocab.encode(["a", "b", "c", "a"], 3) == [3, 4, EOS]  # truncated, {eos} kept


def test_bad_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"w2i": {"a": 0}, "i2w": {"0": "a"}}))
    with pytest.raises(DataError, match=str(path)):
        Vocabulary.load(str(path))


def test_dataset_tokens_and_shared_length(data):
    train = Multimodal3DIdent(data, "train")
    assert train.tokens.dtype == torch.long
    lengths = [len(tokenize(s)) for s in train.sentences]
    assert train.sequence_length == max(lengths) + 1
    for i, n in enumerate(lengths):
        row = train.tokens[i]
        assert row[n] == EOS and (row[n + 1:] == PAD).all() and (row[:n] > UNK).all()
        assert train.vocab.decode(row) == tokenize(train.sentences[i])
    val = Multimodal3DIdent(data, "val", vocab=train.vocab, sequence_length=train.sequence_length)
    assert val.tokens.shape == (5, train.sequence_length)
    sample = val[3]
    assert torch.equal(sample["text"], val.tokens[3]) and sample["index"] == 3


def test_unknown_words_and_long_sentences(tmp_path):
    long = "A " + " ".join(["very"] * 40) + ' "tab:blue" teapot.'
    root = write_m3di(str(tmp_path / "d"), sizes={"train": 6, "val": 3, "test": 3},
                      sentences={"val": ["A zebra is at the top-left of the image.", long, "A cow."]})
    train = Multimodal3DIdent(root, "train")
    val = Multimodal3DIdent(root, "val", vocab=train.vocab, sequence_length=train.sequence_length)
    assert val.tokens[0, 1] == UNK and val.num_unknown >= 1  # "zebra"
    assert val.num_truncated == 1
    assert val.tokens.shape[1] == train.sequence_length and val.tokens[1, -1] == EOS
    # the val split cannot build a vocabulary of its own
    with pytest.raises(DataError, match="training vocabulary"):
        Multimodal3DIdent(root, "val")


def test_vocab_from_data_folder_and_never_written(copy):
    assert not os.path.exists(os.path.join(copy, "vocab.json"))
    ds = Multimodal3DIdent(copy, "train")
    assert not os.path.exists(os.path.join(copy, "vocab.json"))  # data folder untouched
    custom = Vocabulary([*SPECIAL_TOKENS, "A", "teapot"])
    custom.save(os.path.join(copy, "vocab.json"))
    ds2 = Multimodal3DIdent(copy, "train")
    assert ds2.vocab == custom and ds2.vocab_size == 5 and ds.vocab_size > 5
    assert int((ds2.tokens == UNK).sum()) > 0


# ---------------------------------------------------------------------------
# Images

@pytest.mark.parametrize("size", [24, 64])
def test_images_any_size_normalised(tmp_path, size):
    root = write_m3di(str(tmp_path / "d"), sizes={"train": 3}, image_size=size)
    Image.new("RGB", (size, size), (200, 100, 50)).save(os.path.join(root, "train", "images", "0.png"))
    x = Multimodal3DIdent(root, "train")[0]["image"]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    expected = (torch.tensor([200, 100, 50]) / 255 - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)
    assert torch.allclose(x[:, 0, 0], expected, atol=1e-5)


def test_labels(data):
    ds = Multimodal3DIdent(data, "test", vocab=Multimodal3DIdent(data, "train").vocab)
    assert ds.factor_values("image", "object_color").shape == (5,)
    src = pd.read_csv(os.path.join(data, "test", "latents_text.csv"))
    assert np.array_equal(ds.factor_values("text", "text_phrasing"), src.text_phrasing.to_numpy())
    for m in ("image", "text"):
        assert set(Multimodal3DIdent.DISCRETE_FACTORS[m].items()) <= set(Multimodal3DIdent.FACTORS[m].items())
    assert 3 not in Multimodal3DIdent.FACTORS["image"]


# ---------------------------------------------------------------------------
# Data errors: one clear message that names the file

def _error(root, split="train", **kwargs):
    with pytest.raises(UserError) as err:
        ds = Multimodal3DIdent(root, split, **kwargs)
        [ds[i] for i in range(len(ds))]
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_split_folder(copy):
    shutil.rmtree(os.path.join(copy, "val"))
    assert os.path.join(copy, "val") in _error(copy, "val", vocab=Vocabulary(SPECIAL_TOKENS))


def test_missing_text_file(copy):
    path = os.path.join(copy, "train", "text", "text_raw.txt")
    os.remove(path)
    assert path in _error(copy)


@pytest.mark.parametrize("name", ["latents_image.csv", "latents_text.csv"])
def test_missing_latents(copy, name):
    path = os.path.join(copy, "train", name)
    os.remove(path)
    assert path in _error(copy)


def test_csv_rows_disagree_with_text(copy):
    path = os.path.join(copy, "train", "latents_text.csv")
    pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    msg = _error(copy)
    assert path in msg and "11 rows" in msg and "12 lines" in msg


def test_text_lines_disagree_with_images(copy):
    text = os.path.join(copy, "train", "text", "text_raw.txt")
    with open(text, "a") as f:
        f.write("\nAn extra sentence.")
    msg = _error(copy)
    assert os.path.join(copy, "train", "images") in msg and "12.png" in msg


def test_extra_image(copy):
    folder = os.path.join(copy, "train", "images")
    shutil.copy(os.path.join(folder, "00.png"), os.path.join(folder, "12.png"))
    msg = _error(copy)
    assert folder in msg and "13 images" in msg


def test_missing_factor_columns(copy):
    path = os.path.join(copy, "train", "latents_image.csv")
    pd.read_csv(path).drop(columns=["spotlight_pos", "object_color"]).to_csv(path, index=False)
    msg = _error(copy)
    assert path in msg and "object_color" in msg and "spotlight_pos" in msg


def test_non_numeric_factor(copy):
    path = os.path.join(copy, "train", "latents_text.csv")
    df = pd.read_csv(path)
    df["text_phrasing"] = df["text_phrasing"].astype(object)
    df.loc[4, "text_phrasing"] = "four"
    df.to_csv(path, index=False)
    assert path in _error(copy)


def test_unreadable_image(copy):
    path = os.path.join(copy, "train", "images", "05.png")
    with open(path, "wb") as f:
        f.write(b"not a png")
    assert path in _error(copy)
    # through a DataLoader worker the message stays one line that names the file
    ds = Multimodal3DIdent(copy, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=12, num_workers=1)
    with pytest.raises(UserError) as err:
        next(iter(loader))
    assert path in str(err.value) and "\n" not in str(err.value)


def test_image_of_other_size(copy):
    path = os.path.join(copy, "train", "images", "03.png")
    Image.new("RGB", (20, 20)).save(path)
    assert path in _error(copy)
