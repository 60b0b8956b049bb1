"""Small helpers shared by the tests: tiny runs of both entry points, one-line failures."""
import json
import os

import pytest

import cli
import main_imgtxt
import main_mlp


def file_contents(folder):
    """{relative path: bytes} of every file under folder: equal trees, equal dicts."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# Tiny runs, and commands that must fail with one line.
TINY_RUN = [  # a tiny simulation training
"--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--log-steps", "2", "--no-cuda"]


IMGTXT_RUN = ["--batch-size", "8", "--log-steps", "1", "--checkpoint-steps", "2", "--workers", "0",
          "--hidden-size", "16", "--lr", "1e-3", "--no-cuda"]


def fails(capsys, main, argv, needle, code=2):
    """Run a command that must fail; return its one-line message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and "it/s" not in line and "step/s" not in line and "%|" not in line]
    assert exit_info.value.code == code, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert needle in lines[0], lines[0]
    return lines[0]


def train_mlp(tmp_path, model_id="m", steps=3, extra=()):
    main_mlp.main(["--model-dir", str(tmp_path), "--model-id", model_id, "--seed", "3",
                   "--train-steps", str(steps), *TINY_RUN, *extra])
    return tmp_path / model_id


def mlp_eval_args(tmp_path, model_id="m"):
    return ["--model-dir", tmp_path, "--model-id", model_id, "--evaluate", "--load-args",
            "--seed", "4", "--num-eval-batches", "1", "--no-cuda"]


def train_imgtxt(data, model_dir, model_id="r", steps=2, extra=()):
    main_imgtxt.main(["--datapath", data, "--model-dir", str(model_dir), "--model-id", model_id,
                      "--seed", "5", "--train-steps", str(steps), *IMGTXT_RUN, *extra])
    return model_dir / model_id


TINY_EVAL = [*TINY_RUN, "--train-steps", "3", "--num-eval-batches", "1"]


def evaluate_args(tmp_path, model_id="m", load=True):
    return ["--model-dir", tmp_path, "--model-id", model_id, "--evaluate", *(["--load-args"] if load else []),
            "--seed", "9", "--num-eval-batches", "1", "--no-cuda"]


def edit_json(path, **changes):
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps(saved))


def edit_args(folder, **changes):
    edit_json(folder / "args.json", **changes)
