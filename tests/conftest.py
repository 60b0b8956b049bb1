import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main_mlp  # noqa: E402
from m3di_fixture import write_m3di  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def small_eval_batches():
    """Simulation evaluations in tests sample batches of 128 pairs, not 4,096: the same
    code paths at a fraction of the time (subprocesses keep the real size). Session-wide,
    so that the models that module fixtures train and evaluate get it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(main_mlp, "EVAL_BATCH", 128)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny generated Multimodal3DIdent folder (16 / 10 / 10 pairs), one per test module."""
    return write_m3di(str(tmp_path_factory.mktemp("m3di")), sizes={"train": 16, "val": 10, "test": 10})
