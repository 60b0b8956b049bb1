"""experiments.py --launcher slurm on a real one-node SLURM cluster (tests/slurm_cluster.sh),
with accounting (slurmdbd: sacct answers) and without (squeue only).

Run by `make test-cluster`, which starts both clusters; skipped where one is not up (failed
under make test-cluster). The grids
are tiny (tests/cluster_grid.py): trainings of seconds with the real main_mlp.py.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFS = {mode: f"/var/lib/slurm-test/{mode}/slurm.conf" for mode in ("accounting", "plain")}
LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED"}
ROW = "p1.0_multi_nm0"
# The long run trains at least this long (the speed it is sized by is an underestimate):
# longer than its first segment under --time 1 (SLURM's warning comes after 20 to 50 s, of
# which the start takes some), so that the limit interrupts it.
TRAINING_S = 60

pytestmark = pytest.mark.cluster


def cluster_up(conf):
    env = {**os.environ, "SLURM_CONF": conf}
    return os.path.isfile(conf) and subprocess.run(["scontrol", "ping"], env=env, capture_output=True).returncode == 0


@pytest.fixture(params=sorted(CONFS))
def cluster(request, monkeypatch):
    conf = CONFS[request.param]
    try:
        up = cluster_up(conf)
    except FileNotFoundError:
        up = False
    if not up:
        why = f"no SLURM cluster answers at {conf} (start one with tests/slurm_cluster.sh {request.param})"
        pytest.fail(why) if os.environ.get("CLUSTER_REQUIRED") else pytest.skip(why)  # make test-cluster
    monkeypatch.setenv("SLURM_CONF", conf)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return request.param


def launch(out, *argv, launcher="slurm", background=False):
    """tests/cluster_grid.py (experiments.py on the tiny grid) for table4, one seed."""
    cmd = [sys.executable, os.path.join(HERE, "cluster_grid.py"), "table4", "--seeds", "1", "--out", str(out),
           *(["--launcher", "slurm", "--cpus-per-run", "1"] if launcher == "slurm" else []), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if background:
        return proc
    out_text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out_text
    return out_text


def queue():
    """{job id: state} of the cluster's queued and running jobs."""
    lines = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T"], capture_output=True,
                           text=True, check=True).stdout.split()
    return dict(line.split("|") for line in lines)


def records(out):
    folder = out / "table4"
    return {name: json.loads((folder / name / "slurm.json").read_text())["job_id"]
            for name in sorted(os.listdir(folder)) if (folder / name / "slurm.json").exists()}


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)


def ours_live(out):
    ids = set(records(out).values())
    return {job: state for job, state in queue().items() if job in ids and state in LIVE}


def log_of(out):
    """What the jobs of `out` wrote, for a failed assertion."""
    logs = sorted((out / "slurm").glob("*/*_log.*"))
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs[-4:])


def test_array_runs_at_most_max_running_and_resubmits_the_failed_job_alone(cluster, tmp_path):
    out = tmp_path / "runs"
    # One job fails on the node: a checkpoint.pt without the run's args.json cannot be resumed.
    # The array's last: with --max-running 1 it starts after the other four, so the launches
    # and the rerun below meet it pending, however fast the node trains (a failed job is
    # rightly resubmitted by a rerun).
    broken = out / "table4" / "p0.75_stat_cau_multi_nm0_s0"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_text("not a checkpoint")
    # Two launches of one command at once: each model is submitted once.
    first, second = (launch(out, "--max-running", "1", background=True) for _ in range(2))
    texts = [p.communicate(timeout=300)[0] for p in (first, second)]
    submitted = records(out)
    assert len(submitted) == 5 and len(set(submitted.values())) == 5, texts
    assert len({job.split("_")[0] for job in submitted.values()}) == 1, texts  # one array
    assert sum("submitted 5 jobs" in text for text in texts) == 1, texts
    # A rerun while the jobs are pending or running submits nothing.
    again = launch(out, "--max-running", "1")
    assert "0 to submit" in again and records(out) == submitted
    running = []

    def sample():
        live = ours_live(out)
        running.append(sum(state == "RUNNING" for state in live.values()))
        return not live
    wait_for(sample, 400, "the array to end")
    assert max(running) == 1, running  # the node has 2 CPUs: --max-running 1 holds the rest back
    done = [name for name in submitted if (out / "table4" / name / "results.csv").exists()]
    assert sorted(done) == sorted(set(submitted) - {broken.name}), log_of(out)
    # The rerun resubmits the failed job, and only it.
    (broken / "checkpoint.pt").unlink()
    rerun = launch(out, "--max-running", "1")
    assert "4 done, 1 to do; 0 jobs queued or running, 1 to submit" in rerun, rerun
    resubmitted = records(out)
    assert {name for name in submitted if resubmitted[name] != submitted[name]} == {broken.name}
    wait_for(lambda: not ours_live(out), 200, "the resubmitted job to end")
    assert (broken / "results.csv").exists(), log_of(out)
    import report
    assert report.write_report(str(out / "table4"), "table4") and (out / "table4" / "report.md").exists()
    assert "0 to submit" in launch(out, "--max-running", "1")


def steps_per_second():
    """How fast the tiny grid's models train here now (an underestimate: with the probes)."""
    return float(subprocess.run([sys.executable, os.path.join(HERE, "cluster_grid.py"), "--steps-per-second"],
                                capture_output=True, text=True, check=True).stdout)


def requeued_at_time_limit(out, flags):
    """Submit the long run with --time 1: True once it resumed after the limit's warning,
    False if it finished first (a machine faster than measured)."""
    launch(out, *flags, "--time", "1")
    folder = out / "table4" / f"{ROW}_s0"
    resumed = lambda: (folder / "train.log").exists() and "resumed from" in (folder / "train.log").read_text(
        errors="replace")
    wait_for(lambda: resumed() or (folder / "results.csv").exists(), 240,
             "the job to be requeued at its time limit and resume")
    return resumed()


def test_time_limit_and_scancel_continue_from_checkpoints(cluster, tmp_path):
    """--time 1, and one checkpoint interval for the whole training: SLURM's warning requeues
    the job, which continues from the checkpoint written at the signal; then scancel, and a
    rerun continues from the checkpoint written at its SIGTERM. It ends as an uninterrupted
    run of the same flags, which trains beside it."""
    steps = max(1000, int(steps_per_second() * TRAINING_S))
    for attempt in range(3):  # longer each time the training outran the time limit
        flags = ["--rows", ROW, "--train-steps", str(steps)]
        whole = launch(tmp_path / f"whole{attempt}", *flags, launcher="local", background=True)
        out = tmp_path / f"runs{attempt}"
        if requeued_at_time_limit(out, flags):
            break
        whole.kill()
        whole.wait()
        steps *= 3
    else:
        pytest.fail(f"no training of up to {steps // 3} steps outlasted its first time limit")
    (job,) = records(out).values()
    log = out / "table4" / f"{ROW}_s0" / "train.log"
    time.sleep(5)  # let the second segment train a little
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: not ours_live(out), 120, "the cancelled job to end")
    folder = out / "table4" / f"{ROW}_s0"
    if (folder / "results.csv").exists():
        pytest.fail("the training ended before it could be cancelled; make it longer (TRAINING_S)")
    rerun = launch(out, *flags, "--time", "5")  # a limit it will not reach
    assert "0 jobs queued or running, 1 to submit" in rerun, rerun
    wait_for(lambda: not ours_live(out), 300, "the resubmitted job to end")
    assert (folder / "results.csv").exists(), log_of(out)
    text = log.read_text(errors="replace")
    assert text.count("checkpoint saved at step") >= 2, text[-3000:]  # the warning's and the cancel's
    resumes = [int(step) for step in re.findall(r"resumed from \S+ at step (\d+)", text)]
    assert len(resumes) >= 2 and all(1 < step < steps for step in resumes), resumes  # past step 1's checkpoint
    printed = whole.communicate(timeout=600)[0]
    assert whole.returncode == 0, printed
    reference = tmp_path / f"whole{attempt}" / "table4" / f"{ROW}_s0"
    for name in ("g1.pt", "g2.pt"):
        a, b = (torch.load(f / name, weights_only=True) for f in (reference, folder))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert (reference / "results.csv").read_text() == (folder / "results.csv").read_text()
