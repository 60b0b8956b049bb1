"""Numerics under guard: every path that produced a recorded result gives the recorded values.

A failure here means training or evaluation numerics changed. Either undo the change,
or rerun the results it affects and re-record with `python tests/numerics.py --record`,
saying why in the commit. numerics.py says how the fingerprints and tolerances are made.
"""
import json

import pytest
import torch

import numerics


@pytest.fixture
def one_thread():
    """The fingerprints are recorded at one thread: another count may split sums otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recorded():
    with open(numerics.RECORD) as f:
        return json.load(f)


@pytest.mark.parametrize("case", numerics.CASES)
def test_numerics_equal_the_record(case, recorded, tmp_path, one_thread):
    changed = numerics.differences(numerics.run_case(case, str(tmp_path)), recorded[case])
    assert not changed, f"{case}: numerics changed: " + "; ".join(changed)


def test_a_learning_rate_off_by_a_thousandth_fails(recorded, tmp_path, one_thread):
    changed = numerics.differences(numerics.run_case("sim_fp32", str(tmp_path), lr=1e-3 * 1.001),
                                   recorded["sim_fp32"])
    assert any(line.startswith("weights of g1.pt") for line in changed), changed


def test_the_comparison_names_what_changed(recorded):
    record = recorded["quick_bf16"]
    shifted = {**record, "loss": [x * (1 + 1e-4) for x in record["loss"]],
               "results": [None if x is None else x + 1e-3 for x in record["results"]]}
    changed = numerics.differences(shifted, record)
    assert [line.split(":")[0] for line in changed] == ["training loss per step", "evaluation results (results.csv)"]
