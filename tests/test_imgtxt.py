"""Image/text experiment: encoders, loss, training and evaluation end to end (CPU, tiny data)."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main_imgtxt
from datasets import EOS, PAD, Multimodal3DIdent, Vocabulary
from encoders import TextEncoder2D, TextEncoderGRU, image_encoder, text_encoder
from losses import infonce_loss
from m3di_fixture import write_m3di
from cli import UserError
from run import evaluation_seed
from utils import load_state_dict
from helpers import IMGTXT_RUN, edit_args, edit_json, fails, train_imgtxt
from helpers import file_contents as digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULT_COLUMNS = ["ix", "modality", "factor_name", "factor_type",
                "r2_linreg", "r2_krreg", "acc_logreg", "acc_mlp"]


def run_main(*argv):
    return main_imgtxt.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A conv model trained for 3 steps, checkpoints at every step; returns (model_dir, stdout)."""
    model_dir = str(tmp_path_factory.mktemp("models"))
    run_main("--datapath", data, "--model-dir", model_dir, "--model-id", "conv", "--batch-size", 8,
             "--train-steps", 3, "--log-steps", 1, "--checkpoint-steps", 2, "--save-all-checkpoints",
             "--workers", 0, "--hidden-size", 16, "--lr", 1e-3, "--seed", 5)
    return model_dir


# ---------------------------------------------------------------------------
# Encoders

@pytest.mark.parametrize("length", [1, 5, 24, 40, 77])
@pytest.mark.parametrize("kind", ["conv", "gru"])
def test_text_encoders_any_length(kind, length):
    torch.manual_seed(0)
    enc = text_encoder(kind, 30, 4, length)
    x = torch.randint(3, 30, (3, length))
    x[:, -1] = EOS
    out = enc(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert enc.embedding.weight.grad is not None
    if kind == "conv":  # shorter inputs are {pad}-padded to the encoder's length
        enc.eval()
        padded = torch.cat((x, torch.full((3, 4), PAD)), 1)
        longer = text_encoder(kind, 30, 4, length + 4).eval()
        if longer.ldim == enc.ldim:
            longer.load_state_dict(enc.state_dict())
            assert torch.allclose(longer(x), longer(padded), atol=1e-6)


def test_gru_ignores_padding():
    enc = TextEncoderGRU(20, 3)
    x = torch.tensor([[5, 6, 7, EOS, PAD, PAD], [8, EOS, PAD, PAD, PAD, PAD]])
    assert torch.allclose(enc(x), enc(x[:, :4]), atol=1e-6)
    assert torch.allclose(enc(x)[1], enc(x[1:, :2])[0], atol=1e-6)


def published_conv_forward(enc, onehot):
    """The published TextEncoder2D's computation: Linear on one-hot vectors, fixed view to 4800."""
    e = F.linear(onehot, enc.embedding.weight, enc.embedding.bias).unsqueeze(1)
    h = enc.convnet(e)
    return enc.linear(h.view(-1, 100 * 3 * 16))


@pytest.mark.parametrize("length", [24, 27, 31])
def test_published_layout_and_checkpoint(length, tmp_path):
    """Published one-hot Linear weights (DataParallel-saved) load and give the same outputs."""
    torch.manual_seed(1)
    vocab_size = 40
    published = TextEncoder2D(vocab_size, 4, length)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in published.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    state = nn.DataParallel(published).state_dict()
    assert all(k.startswith("module.") for k in state)
    assert state["module.embedding.weight"].shape == (128, vocab_size)
    assert state["module.embedding.bias"].shape == (128,)
    assert state["module.linear.weight"].shape == (4, 4800)
    path = str(tmp_path / "encoder_txt.pt")
    torch.save(state, path)

    ours = TextEncoder2D(vocab_size, 4, length)
    ours.load_state_dict(load_state_dict(path))
    ours.eval()
    published.eval()
    tokens = torch.randint(0, vocab_size, (5, length))
    onehot = F.one_hot(tokens, vocab_size).float()
    with torch.no_grad():
        expected = published_conv_forward(published, onehot)
        assert torch.allclose(ours(tokens), expected, atol=1e-5)
        assert torch.allclose(ours(onehot), expected, atol=1e-5)


def test_image_encoder_layout():
    enc = image_encoder(16, 3)
    keys = list(enc.state_dict())
    assert keys[0] == "0.conv1.weight" and keys[-2:] == ["2.weight", "2.bias"]
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ---------------------------------------------------------------------------
# Loss

def direct_infonce(a, b, tau):
    """2n-way cross-entropy over cosine/tau, self excluded, in float64 loops."""
    z = np.concatenate([a, b]).astype(np.float64)
    n, total = len(a), 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])) / tau
                for j in range(2 * n) if j != i]
        others = [j for j in range(2 * n) if j != i]
        total += -sims[others.index(pos)] + math.log(sum(math.exp(s) for s in sims))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_infonce_matches_formula(tau):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    sim, ce = nn.CosineSimilarity(dim=-1), nn.CrossEntropyLoss()
    expected = direct_infonce(a.numpy(), b.numpy(), tau)
    assert infonce_loss(a, b, sim, ce, tau).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------
# Training and evaluation

def test_training_output(trained, data, capsys):
    folder = os.path.join(trained, "conv")
    files = set(os.listdir(folder))
    assert {"args.json", "vocab.json", "encoder_img.pt", "encoder_txt.pt"} <= files
    # the published schedule: checkpoints where step % 2 == 1 and at the last step, with
    # the published file names; --save-all-checkpoints keeps them
    assert {f for f in files if re.fullmatch(r"encoder_(img|txt)_\d+\.pt", f)} == \
        {f"encoder_{m}_{s}.pt" for m in ("img", "txt") for s in (1, 3)}
    args = json.load(open(os.path.join(folder, "args.json")))
    assert args["seed"] == 5 and args["model_id"] == "conv" and args["text_encoder"] == "conv"
    metadata = json.load(open(os.path.join(folder, "metadata.json")))  # derived from the data, not flags
    assert metadata["sequence_length"] >= 10 and metadata["vocab_size"] > 3 and metadata["image_size"] == [32, 32]
    assert not set(metadata) & set(args)
    state = torch.load(os.path.join(folder, "encoder_txt.pt"), weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    assert torch.equal(torch.load(os.path.join(folder, "encoder_img_3.pt"), weights_only=True)["2.weight"],
                       torch.load(os.path.join(folder, "encoder_img.pt"), weights_only=True)["2.weight"])
    assert not os.path.exists(os.path.join(data, "vocab.json"))  # data folder stays untouched
    assert len(Vocabulary.load(os.path.join(folder, "vocab.json"))) == metadata["vocab_size"]


def test_log_every_step(data, tmp_path, capsys):
    run_main("--datapath", data, "--model-dir", tmp_path, "--batch-size", 4, "--train-steps", 2,
             "--log-steps", 1, "--checkpoint-steps", 1, "--workers", 0, "--hidden-size", 8,
             "--text-encoder", "gru")
    out = capsys.readouterr().out
    assert "Step: 1 " in out and "Step: 2 " in out
    (model_id,) = os.listdir(tmp_path)  # a string UUID was drawn for the folder name
    args = json.load(open(tmp_path / model_id / "args.json"))
    assert args["model_id"] == model_id and isinstance(args["seed"], int)


def test_evaluate(trained, data):
    results = run_main("--datapath", data, "--model-dir", trained, "--model-id", "conv", "--evaluate",
                       "--load-args", "--workers", 0, "--batch-size", 4, "--seed", 6)
    saved = pd.read_csv(os.path.join(trained, "conv", "results.csv"), index_col=0)
    assert list(saved.columns) == RESULT_COLUMNS
    expected = [(m, ix, name) for m in ("image", "text") for ix, name in Multimodal3DIdent.FACTORS[m].items()]
    assert list(zip(saved.modality, saved.ix, saved.factor_name)) == expected
    for row in saved.itertuples():
        discrete = row.ix in Multimodal3DIdent.DISCRETE_FACTORS[row.modality]
        assert row.factor_type == ("discrete" if discrete else "continuous")
        scored = [row.acc_logreg, row.acc_mlp] if discrete else [row.r2_linreg, row.r2_krreg]
        blank = [row.r2_linreg, row.r2_krreg] if discrete else [row.acc_logreg, row.acc_mlp]
        assert all(np.isfinite(scored)) and all(np.isnan(blank))
    assert np.allclose(results[RESULT_COLUMNS[4:]].to_numpy(float), saved[RESULT_COLUMNS[4:]].to_numpy(float),
                       equal_nan=True)
    # evaluation.json records what the evaluation used, not training flags at their defaults
    record = json.load(open(os.path.join(trained, "conv", "evaluation.json")))
    assert record["seed"] == 6 and record["batch_size"] == 4 and record["datapath"] == str(data)
    assert record["training_seed"] == json.load(open(os.path.join(trained, "conv", "args.json")))["seed"]
    assert {"val_loss", "test_loss", "tau", "encoding_size"} <= set(record)
    assert not {"lr", "train_steps", "lr_schedule", "warmup_steps", "precision", "checkpoint_steps"} & set(record)


def test_evaluate_gru_module_prefix_and_load_args(data, tmp_path):
    """--load-args restores the shape and loss settings; DataParallel's `module.` prefix loads."""
    run_main("--datapath", data, "--model-dir", tmp_path, "--model-id", "g", "--batch-size", 4,
             "--train-steps", 1, "--workers", 0, "--text-encoder", "gru", "--encoding-size", 3,
             "--hidden-size", 8, "--tau", 0.5, "--seed", 1)
    folder = tmp_path / "g"
    for name in ("encoder_img.pt", "encoder_txt.pt"):
        state = torch.load(folder / name, weights_only=True)
        torch.save({"module." + k: v for k, v in state.items()}, folder / name)
    common = ["--datapath", data, "--model-dir", tmp_path, "--model-id", "g", "--evaluate",
              "--workers", 0, "--batch-size", 5]
    with pytest.raises(UserError, match="--load-args"):
        run_main(*common)  # default conv encoder, size 4: does not fit
    with pytest.raises(UserError, match="training seed"):
        run_main(*common, "--load-args", "--seed", 1)
    results = run_main(*common, "--load-args")
    assert len(results) == 15


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


def test_every_sample_once_in_eval_mode(data):
    train = Multimodal3DIdent(data, "train")
    val = Multimodal3DIdent(data, "val", vocab=train.vocab, sequence_length=train.sequence_length)
    torch.manual_seed(0)
    img = Counting(image_encoder(8, 3))
    txt = Counting(text_encoder("conv", train.vocab_size, 3, train.sequence_length))
    img.train()
    txt.train()
    args = main_imgtxt.build_parser().parse_args(["--datapath", data, "--batch-size", "4", "--workers", "0"])
    encoders = main_imgtxt.ModalityEncoders({"image": img, "text": txt})
    hz, seen, loss = main_imgtxt.encode(val, encoders, args, torch.device("cpu"))
    assert img.sizes == [4, 4, 2] and txt.sizes == [4, 4, 2]  # each encoder once per batch
    assert hz["image"].shape == (10, 3) and hz["text"].shape == (10, 3)
    assert not img.training and not txt.training
    # eval-mode BatchNorm: an encoding does not depend on the other samples of its batch
    args.batch_size = 10
    hz10, _, _ = main_imgtxt.encode(val, encoders, args, torch.device("cpu"))
    args.batch_size = 3
    hz3, _, _ = main_imgtxt.encode(val, encoders, args, torch.device("cpu"))
    for m in ("image", "text"):
        assert np.allclose(hz[m], hz10[m], atol=1e-5) and np.allclose(hz[m], hz3[m], atol=1e-5)
    assert list(seen) == list(range(10))


def test_published_protocol_encodes_in_train_mode_with_repeats(data):
    """--eval-protocol published: shuffled drop-last batches in BatchNorm's training mode,
    ceil(n / batch) of them: 10 samples at batch 4 give 12 rows, some samples twice."""
    train = Multimodal3DIdent(data, "train")
    val = Multimodal3DIdent(data, "val", vocab=train.vocab, sequence_length=train.sequence_length)
    torch.manual_seed(0)
    img, txt = image_encoder(8, 3), text_encoder("conv", train.vocab_size, 3, train.sequence_length)
    encoders = main_imgtxt.ModalityEncoders({"image": img, "text": txt})
    args = main_imgtxt.build_parser().parse_args(["--datapath", data, "--batch-size", "4", "--workers", "0",
                                                  "--seed", "7"])
    hz, seen, loss = main_imgtxt.encode(val, encoders, args, torch.device("cpu"), protocol="published")
    assert img.training and len(seen) == 12 and hz["image"].shape == (12, 3)
    assert len(set(seen)) < 12 and set(seen) <= set(range(10)) and seen.tolist() != sorted(seen.tolist())
    again, seen_again, _ = main_imgtxt.encode(val, encoders, args, torch.device("cpu"), protocol="published")
    assert np.array_equal(seen, seen_again) and np.allclose(hz["image"], again["image"])  # seeded
    # batch statistics: the same sample encodes differently beside other samples
    exact, _, _ = main_imgtxt.encode(val, encoders, args, torch.device("cpu"))
    assert not np.allclose(exact["image"][seen[:4]], hz["image"][:4], atol=1e-3)


def test_eval_seed_differs_from_training_seed():
    args = main_imgtxt.build_parser().parse_args(["--datapath", "x"])
    for _ in range(20):
        assert evaluation_seed(args.seed, 7) != 7
    args.seed = 7
    with pytest.raises(UserError):
        evaluation_seed(args.seed, 7)
    assert evaluation_seed(args.seed, None) == 7


# ---------------------------------------------------------------------------
# Bad input

def test_bad_input(data, trained, tmp_path):
    cases = [
        (["--datapath", tmp_path / "nope"], "data folder not found"),
        (["--datapath", data, "--batch-size", 0], "--batch-size must be at least 1"),
        (["--datapath", data, "--encoding-size", -1], "--encoding-size"),
        (["--datapath", data, "--train-steps", 0], "--train-steps"),
        (["--datapath", data, "--checkpoint-steps", 0], "--checkpoint-steps"),
        (["--datapath", data, "--tau", 0], "--tau"),
        (["--datapath", data, "--batch-size", 17], "exceeds the 16 training samples"),
        (["--datapath", data, "--evaluate"], "--model-id"),
        (["--datapath", data, "--evaluate", "--model-dir", tmp_path, "--model-id", "x"],
         "model folder not found"),
    ]
    os.makedirs(tmp_path / "empty")
    cases.append((["--datapath", data, "--evaluate", "--model-dir", tmp_path, "--model-id", "empty"],
                  "args.json not found"))
    shutil.copytree(os.path.join(trained, "conv"), tmp_path / "nockpt")
    os.remove(tmp_path / "nockpt" / "encoder_txt.pt")
    cases.append((["--datapath", data, "--evaluate", "--model-dir", tmp_path, "--model-id", "nockpt",
                   "--load-args", "--workers", 0], "encoder_txt.pt"))
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            run_main(*argv)


def test_training_into_an_existing_model_is_refused(data, trained, tmp_path):
    folder = tmp_path / "conv"
    shutil.copytree(os.path.join(trained, "conv"), folder)
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    with pytest.raises(UserError, match="already holds a model"):
        run_main("--datapath", data, "--model-dir", tmp_path, "--model-id", "conv", "--batch-size", 8,
                 "--train-steps", 1, "--workers", 0, "--hidden-size", 16)
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before


def test_cli_data_error_is_one_line(data, tmp_path):
    """A broken image met in a DataLoader worker: exit code 2, one line naming the file, and the
    process ends (its workers ignore the stop signals, so they must be shut down, not terminated)."""
    broken = str(tmp_path / "m3di")
    shutil.copytree(data, broken)
    bad = os.path.join(broken, "train", "images", "07.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG broken")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "main_imgtxt.py"), "--datapath", broken,
                        "--model-dir", str(tmp_path / "models"), "--batch-size", "16", "--train-steps", "1",
                        "--workers", "1", "--hidden-size", "8", "--no-cuda"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].split("error: ", 1)[1].startswith(f"cannot read image {bad}: ")
    assert "Traceback" not in p.stderr


def test_evaluate_with_the_published_protocol(data, tmp_path):
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "p", "--seed", "5",
                      "--train-steps", "2", "--batch-size", "8", "--hidden-size", "16", "--workers", "0",
                      "--no-cuda"])
    results = main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "p",
                                "--evaluate", "--load-args", "--seed", "6", "--workers", "0", "--no-cuda",
                                "--batch-size", "4", "--eval-protocol", "published"])
    assert list(results.columns) == main_imgtxt.RESULT_COLUMNS and len(results) == 15
    record = json.load(open(tmp_path / "p" / "evaluation.json"))
    assert record["eval_protocol"] == "published" and record["batch_size"] == 4
    # batch 1 would fail inside BatchNorm ("Expected more than 1 value per channel"): one line instead
    with pytest.raises(UserError, match="--eval-protocol published needs --batch-size at least 2"):
        main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "p", "--evaluate",
                          "--load-args", "--seed", "6", "--workers", "0", "--no-cuda", "--batch-size", "1",
                          "--eval-protocol", "published"])
    # an evaluation flag is no training setting: a resumed training takes it as a new one would
    main_imgtxt.main(["--datapath", data, "--model-dir", str(tmp_path), "--model-id", "p", "--resume",
                      "--train-steps", "3", "--eval-protocol", "published", "--workers", "0", "--no-cuda"])
    assert json.load(open(tmp_path / "p" / "args.json"))["train_steps"] == 3


def test_learn_tau_trains_resumes_and_evaluates(data, tmp_path):
    flags = ["--datapath", data, "--model-dir", str(tmp_path), "--batch-size", 8, "--workers", 0, "--hidden-size",
             16, "--lr", 1e-2, "--log-steps", 1, "--checkpoint-steps", 1, "--learn-tau", "--tau", 0.2]
    run_main(*flags, "--model-id", "full", "--seed", 0, "--train-steps", 4)
    run_main(*flags, "--model-id", "cut", "--seed", 0, "--train-steps", 2)
    run_main("--datapath", data, "--model-dir", tmp_path, "--model-id", "cut", "--resume", "--train-steps", 4,
             "--workers", 0)
    full, cut = (torch.load(tmp_path / m / "temperature.pt", weights_only=True) for m in ("full", "cut"))
    assert torch.equal(full["log_tau"], cut["log_tau"]) and float(full["log_tau"].exp()) != pytest.approx(0.2)
    taus = pd.read_csv(tmp_path / "full" / "metrics.csv")["tau"]
    assert float(full["log_tau"].exp()) == pytest.approx(taus.iloc[-1], rel=1e-6)
    run_main("--datapath", data, "--model-dir", tmp_path, "--model-id", "full", "--evaluate", "--load-args",
             "--seed", 1, "--workers", 0)
    assert json.loads((tmp_path / "full" / "evaluation.json").read_text())["learn_tau"] is True


# ------------------------------------------- bad input and hostile conditions ---

def test_runaway_caption_is_cut(tmp_path, capsys):
    data = write_m3di(str(tmp_path / "d"), sizes={"train": 16, "val": 10, "test": 10})
    path = os.path.join(data, "train", "text", "text_raw.txt")
    lines = open(path).read().splitlines()
    lines[3] = " ".join(["word"] * 50_000)
    open(path, "w").write("\n".join(lines) + "\n")
    folder = train_imgtxt(data, tmp_path, steps=1)
    out = capsys.readouterr().out
    assert "1 training captions are longer than --max-sequence-length 128 and were cut" in out
    assert json.loads((folder / "metadata.json").read_text())["sequence_length"] == 128


def test_half_written_data_folder_is_refused(data, tmp_path, capsys):
    half = tmp_path / "half"
    shutil.copytree(os.path.join(data, "train"), half / "train")
    fails(capsys, main_imgtxt.main, ["--datapath", half, "--model-dir", tmp_path / "models",
                                     "--model-id", "x", *IMGTXT_RUN], "has no val/, test/")
    assert not (tmp_path / "models" / "x").exists()


def test_model_evaluated_on_data_of_another_image_size(data, tmp_path, capsys):
    train_imgtxt(data, tmp_path)
    bigger = write_m3di(str(tmp_path / "big"), sizes={"train": 16, "val": 10, "test": 10}, image_size=48)
    fails(capsys, main_imgtxt.main, ["--datapath", bigger, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
          "evaluate on data of the training size")


def test_zero_byte_text_encoder(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    (folder / "encoder_txt.pt").write_bytes(b"")
    fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
          "encoder_txt.pt")


@pytest.mark.parametrize("key", ["encoding_size", "hidden_size"])
def test_imgtxt_load_args_refuses_an_args_json_without_a_published_key(data, tmp_path, capsys, key):
    folder = train_imgtxt(data, tmp_path)
    saved = json.loads((folder / "args.json").read_text())
    del saved[key]
    (folder / "args.json").write_text(json.dumps(saved))
    before = digest(folder)
    line = fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                            "--evaluate", "--load-args", "--workers", "0", "--no-cuda"],
                 f"has no key {key}: --load-args cannot restore")
    assert "args.json" in line and digest(folder) == before


@pytest.mark.parametrize("key, value, needle", [
    ("sequence_length", 0, "sequence_length = 0 is not a sequence length"),
    ("sequence_length", "12", "sequence_length = '12'"),
    ("image_size", [8], "image_size = [8] is not [height, width]"),
    ("hidden_size", None, "hidden_size = None"),
    ("tau", -1.0, "(key tau): --tau must be a finite number >= 0.0001"),
])
def test_imgtxt_restored_values_are_checked(data, tmp_path, capsys, key, value, needle):
    folder = train_imgtxt(data, tmp_path)
    derived = key in main_imgtxt.METADATA_KEYS
    edit_args(folder, **{key: value}) if not derived else edit_json(folder / "metadata.json", **{key: value})
    before = digest(folder)
    line = fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                            "--evaluate", "--load-args", "--seed", "9", "--workers", "0",
                                            "--no-cuda"], needle)
    assert ("metadata.json" if derived else "args.json") in line
    assert digest(folder) == before
    if derived:  # a folder of an older version: the same values in args.json are checked too
        os.remove(folder / "metadata.json")
        edit_args(folder, **{key: value})
        assert "args.json" in fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path,
                                                               "--model-id", "r", "--evaluate", "--load-args",
                                                               "--workers", "0", "--no-cuda"], needle)


def test_imgtxt_evaluation_refuses_another_tau(data, tmp_path, capsys):
    train_imgtxt(data, tmp_path, extra=["--tau", "0.5"])
    fails(capsys, main_imgtxt.main, ["--datapath", data, "--model-dir", tmp_path, "--model-id", "r",
                                     "--evaluate", "--seed", "9", "--workers", "0", "--no-cuda",
                                     "--hidden-size", "16"], "--tau 0.5, not --tau 1.0; add --load-args")


def test_imgtxt_resume_on_data_of_another_image_size(data, tmp_path, capsys):
    folder = train_imgtxt(data, tmp_path)
    other = write_m3di(str(tmp_path / "other"), sizes={"train": 16, "val": 10, "test": 10}, image_size=24)
    before = digest(folder)
    fails(capsys, main_imgtxt.main, ["--datapath", other, "--model-dir", tmp_path, "--model-id", "r",
                                     "--resume", "--train-steps", "4", "--workers", "0", "--no-cuda"],
          "resume on data of the training size")
    assert digest(folder) == before
