"""provenance.json: every training segment and the evaluation behind results.csv name their code,
software, machine and times."""
import json
import os
import subprocess

import numpy as np
import torch

import main_mlp
import provenance

TINY = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
        "--batch-size", "32", "--num-eval-batches", "1", "--no-cuda"]


def read(folder):
    with open(os.path.join(folder, provenance.FILE)) as f:
        return json.load(f)


def test_training_segments_and_evaluation_are_recorded(tmp_path):
    common = ["--model-dir", str(tmp_path), "--model-id", "m", *TINY]
    main_mlp.main(common + ["--seed", "0", "--train-steps", "3", "--log-steps", "2"])
    main_mlp.main(common + ["--resume", "--train-steps", "5"])
    main_mlp.main(common + ["--seed", "1", "--evaluate"])
    record = read(tmp_path / "m")
    first, second = record["training"]
    assert (first["train_steps"], first["resumed"], second["train_steps"], second["resumed"]) == (3, False, 5, True)
    commit = subprocess.run(["git", "-C", provenance.REPO, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    for entry in (first, second, record["evaluation"]):
        assert entry["commit"] == commit and isinstance(entry["modified"], bool)
        assert (entry["torch"], entry["numpy"]) == (torch.__version__, np.__version__)
        assert entry["threads"] == torch.get_num_threads() and entry["device"].startswith("cpu: ")
        assert entry["wall_s"] > 0 and entry["started"].endswith("+00:00")
    assert record["evaluation"]["command"][1:] == common + ["--seed", "1", "--evaluate"]


def test_a_stopped_segment_is_recorded_with_its_time(tmp_path, monkeypatch):
    import contextlib
    import signal

    import pytest

    import run
    common = ["--model-dir", str(tmp_path), "--model-id", "m", *TINY]
    with monkeypatch.context() as m:  # a stop signal that arrived before the first step
        m.setattr(run, "stop_signals", lambda: contextlib.nullcontext([signal.SIGTERM]))
        with pytest.raises(KeyboardInterrupt):
            main_mlp.main(common + ["--seed", "0", "--train-steps", "4", "--log-steps", "2"])
    main_mlp.main(common + ["--resume"])
    stopped, finished = read(tmp_path / "m")["training"]
    assert stopped["stopped"] is True and stopped["wall_s"] > 0 and stopped["resumed"] is False
    assert "stopped" not in finished and finished["resumed"] is True


def test_no_git_gives_no_commit(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "REPO", str(tmp_path))  # not a repository
    assert provenance.code_version() == {"commit": None, "modified": None}


def test_a_damaged_record_is_replaced_not_fatal(tmp_path):
    (tmp_path / provenance.FILE).write_text("{not json")
    provenance.start("evaluation")
    provenance.record_evaluation(str(tmp_path), "cpu")
    assert set(read(tmp_path)) == {"evaluation"}
