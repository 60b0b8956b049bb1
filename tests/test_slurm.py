"""experiments.py --launcher slurm without a cluster: fake sbatch/sacct/squeue/scancel/srun
record what is submitted; a tiny grid runs for real through submitit's local executor."""
import contextlib
import dataclasses
import json
import os
import pickle
import stat
import sys
import time

import pandas as pd
import pytest

import experiments
import facts
import grids
import local
import plans
import report
import slurm
from cli import UserError
from files import FolderLock

FAKE = r'''#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(sys.argv[0])
record = {{"cmd": name, "argv": sys.argv[1:]}}
if name == "sbatch":
    record["script"] = open(sys.argv[-1]).read()
    counter = os.path.join(here, "next_id")
    job = int(open(counter).read()) if os.path.exists(counter) else 1234
    open(counter, "w").write(str(job + 1))
    print(f"Submitted batch job {{job}}")
elif name == "sacct" and os.path.exists(os.path.join(here, "no_accounting")):
    sys.exit("Slurm accounting storage is disabled")
elif name == "sacct":
    states = json.load(open(os.path.join(here, "states.json"))) if os.path.exists(os.path.join(here, "states.json")) else {{}}
    print("JobID|State|NodeList")
    for job_id, state in states.items():
        print(f"{{job_id}}|{{state}}|node1")
        print(f"{{job_id}}.batch|{{state}}|node1")
elif name == "squeue":
    queue = os.path.join(here, "queue.json")
    for job_id, state in (json.load(open(queue)) if os.path.exists(queue) else {{}}).items():
        print(f"{{job_id}}|{{state}}")
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
'''


class FakeSlurm:
    def __init__(self, folder):
        self.folder = folder
        folder.mkdir()
        for name in ("sbatch", "sacct", "squeue", "scancel", "srun"):
            path = folder / name
            path.write_text(FAKE.format(python=sys.executable))
            path.chmod(path.stat().st_mode | stat.S_IEXEC)

    def calls(self, cmd=None):
        path = self.folder / "calls.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c for c in calls if cmd is None or c["cmd"] == cmd]

    def set_states(self, states):
        (self.folder / "states.json").write_text(json.dumps(states))

    def set_queue(self, states):
        """squeue's jobs; sacct answers as on a cluster without accounting storage."""
        (self.folder / "queue.json").write_text(json.dumps(states))
        (self.folder / "no_accounting").touch()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    fake = FakeSlurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # slurm.submit extends it
    return fake


RESOURCES = ["--launcher", "slurm", "--partition", "gpu", "--gpus-per-run", "1", "--cpus-per-run", "6",
             "--mem-gb", "32", "--time", "2:00:00", "--max-running", "3", "--slurm-extra", "account=proj",
             "--slurm-extra", "qos=long"]


def submit(tmp_path, *argv):
    return experiments.main([*RESOURCES, *argv, "--out", str(tmp_path / "runs")])  # argv overrides


def sbatch_lines(call):
    return [line for line in call["script"].splitlines() if line.startswith("#SBATCH")]


def records(out, experiment="table1"):
    folder = out / experiment
    return {name: json.loads((folder / name / slurm.RECORD).read_text())
            for name in sorted(os.listdir(folder)) if (folder / name / slurm.RECORD).exists()}


def test_submits_one_array_with_the_resources(tmp_path, fake_slurm, capsys):
    assert submit(tmp_path, "table1", "--seeds", "1") == 0
    (call,) = fake_slurm.calls("sbatch")
    lines = sbatch_lines(call)
    for expected in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=6", "--mem=32GB",
                     "--time=120", "--array=0-9%3", "--account=proj", "--qos=long", "--nodes=1",
                     "--signal=USR2@90"):
        assert f"#SBATCH {expected}" in lines, expected
    assert "submitit.core._submit" in call["script"]
    out = tmp_path / "runs"
    recs = records(out)
    assert len(recs) == 10 and sorted(r["job_id"] for r in recs.values()) == [f"1234_{i}" for i in range(10)]
    # each job's pickled callable trains and evaluates exactly its run, with the runner's commands
    folder = out / "table1" / "p0.75_stat_multi_s0"
    rec = recs["p0.75_stat_multi_s0"]
    assert os.path.realpath(folder / slurm.LINK) == os.path.realpath(rec["logs"])
    with open(os.path.join(rec["logs"], f"{rec['job_id']}_submitted.pkl"), "rb") as f:
        job = pickle.load(f).function
    assert type(job).__name__ == "ModelJob" and job.threads == 6 and job.cwd == os.getcwd()
    assert [r.run_dir for r in job.runs] == [str(folder)]
    planned = plans.Job(str(folder), job.runs[0].script, job.runs)
    steps = plans.plan_steps(planned)
    assert [s.kind for s in steps] == ["remove", "train", "evaluate"]  # remove: the record alone is there
    assert "--statistical-dependence" in steps[1].cmd and "--evaluate" in steps[2].cmd
    assert "submitted 10 jobs (array 1234, at most 3 at once)" in capsys.readouterr().out


def test_rerun_submits_nothing_while_jobs_run_and_resubmits_the_ended(tmp_path, fake_slurm, capsys):
    submit(tmp_path, "table4", "--seeds", "1")
    ids = [f"1234_{i}" for i in range(5)]
    fake_slurm.set_states({i: "RUNNING" if n % 2 else "PENDING" for n, i in enumerate(ids)})
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert len(fake_slurm.calls("sbatch")) == 1  # no double submission
    sacct = fake_slurm.calls("sacct")[-1]["argv"]
    assert sacct[:3] == ["-o", "JobID,State,NodeList", "--parsable2"] and sacct[3:] == ["-j", "1234"]
    assert "5 jobs queued or running, 0 to submit" in capsys.readouterr().out
    # 1234_0 failed, 1234_1 was cancelled, 1234_2 is unknown to sacct: those three are resubmitted
    fake_slurm.set_states({"1234_0": "FAILED", "1234_1": "CANCELLED by 0", "1234_3": "RUNNING",
                           "1234_4": "REQUEUED"})
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    second = fake_slurm.calls("sbatch")[1]
    assert "#SBATCH --array=0-2%3" in sbatch_lines(second)
    recs = records(tmp_path / "runs", "table4")
    assert sorted(r["job_id"] for r in recs.values()) == ["1234_3", "1234_4", "1235_0", "1235_1", "1235_2"]
    # a finished run is never submitted again, whatever sacct says
    for name, rec in recs.items():
        if rec["job_id"].startswith("1235"):
            (tmp_path / "runs" / "table4" / name / "args.json").write_text("{}")
            (tmp_path / "runs" / "table4" / name / "results.csv").write_text("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
    fake_slurm.set_states({"1235_0": "COMPLETED", "1234_3": "RUNNING", "1234_4": "RUNNING"})
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert len(fake_slurm.calls("sbatch")) == 2


def test_dry_run_shows_resources_and_commands(tmp_path, fake_slurm, capsys):
    assert submit(tmp_path, "table1", "figure8", "--seeds", "1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert fake_slurm.calls("sbatch") == [] and not (tmp_path / "runs").exists()
    assert ("# resources of each job: partition=gpu gpus_per_node=1 cpus_per_task=6 mem_gb=32.0 "
            "timeout_min=120 array_parallelism=3 additional_parameters={'account': 'proj', 'qos': 'long'}") in out
    jobs = [line for line in out.splitlines() if line.startswith("# job ")]
    assert len(jobs) == 10  # figure8's evaluations ride with the table1 model they copy
    assert sum("--permuted-content" in line for line in out.splitlines()) == 5
    assert sum(line.startswith("cp -r ") for line in out.splitlines()) == 5


def test_dry_run_of_an_unsubmitted_grid_needs_no_submitit(tmp_path, fake_slurm, monkeypatch, capsys):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # not installed
        assert submit(tmp_path, "table4", "--seeds", "1", "--dry-run") == 0
    assert sum(line.startswith("# job ") for line in capsys.readouterr().out.splitlines()) == 5
    submit(tmp_path, "table4", "--seeds", "1")  # now jobs are recorded: sacct is asked through submitit
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UserError, match="needs the submitit package"):
        submit(tmp_path, "table4", "--seeds", "1", "--dry-run")


def test_errors_are_one_line(tmp_path, fake_slurm, monkeypatch):
    with pytest.raises(UserError, match="--time 'soon'"):
        submit(tmp_path, "table1", "--seeds", "1", "--time", "soon")
    with pytest.raises(UserError, match="--slurm-extra 'qos' is not KEY=VALUE"):
        submit(tmp_path, "table1", "--seeds", "1", "--slurm-extra", "qos")
    with pytest.raises(UserError, match="figure3 on SLURM needs its data first"):
        submit(tmp_path, "figure3", "--seeds", "1")
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    with pytest.raises(UserError, match="needs the submitit package"):
        submit(tmp_path, "table1", "--seeds", "1")
    assert fake_slurm.calls("sbatch") == []


def test_sacct_failure_is_an_error_not_a_resubmission(tmp_path, fake_slurm):
    submit(tmp_path, "table4", "--seeds", "1")
    (fake_slurm.folder / "sacct").write_text("#!/bin/sh\necho 'slurm_load_jobs error' >&2\nexit 1\n")
    with pytest.raises(UserError, match="cannot ask SLURM"):
        submit(tmp_path, "table4", "--seeds", "1")
    assert len(fake_slurm.calls("sbatch")) == 1


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880), ("0:30", 1),
                                           ("5:01", 6), ("1-2", 1560), ("1-2:30", 1590), ("1-0:0:1", 1441)])
def test_parse_time_reads_slurms_formats(text, minutes):
    assert slurm.parse_time(text) == minutes


@pytest.mark.parametrize("text", ["-5", "1:2:3:4", "1-", "-1-2", "1-2-3", "1.5", "", "0", "0:0", "1-2:3:4:5"])
def test_parse_time_refuses_other_text(text):
    with pytest.raises(UserError, match="--time"):
        slurm.parse_time(text)


@pytest.mark.parametrize("time_limit, warning", [("1", 10), ("2", 30), ("3", 60), ("4", 90), ("2:00:00", 90)])
def test_a_short_limit_is_warned_late_enough_to_train(tmp_path, fake_slurm, time_limit, warning):
    """SLURM's warning 90 s before a 1-minute limit would stop each start at once."""
    submit(tmp_path, "table4", "--seeds", "1", "--time", time_limit)
    assert f"#SBATCH --signal=USR2@{warning}" in sbatch_lines(fake_slurm.calls("sbatch")[0])


def test_slurm_extra_is_one_line(tmp_path, fake_slurm):
    with pytest.raises(UserError, match="spans lines"):
        submit(tmp_path, "table4", "--seeds", "1", "--slurm-extra", "comment=a\n#SBATCH --qos=high")
    assert fake_slurm.calls("sbatch") == []


def test_impossible_flags_are_refused_before_submission(tmp_path, fake_slurm):
    """101 steps leave the cosine schedule 1 step after the quick scale's 100 warm-up steps."""
    with pytest.raises(UserError, match=r"main_mlp.py would refuse the training of .*table4/p1.0_multi_nm0_s0: "
                                        r"--lr-schedule cosine needs at least 2 steps after --warmup-steps"):
        submit(tmp_path, "table4", "--seeds", "1", "--train-steps", "101")
    assert fake_slurm.calls("sbatch") == []


def test_an_evaluation_the_entry_point_would_refuse_is_refused_before_submission(tmp_path, fake_slurm, monkeypatch):
    record = grids.EXPERIMENTS["table4"]
    monkeypatch.setitem(grids.EXPERIMENTS, "table4", dataclasses.replace(record, eval_flags={"--num-eval-batches": 0}))
    with pytest.raises(UserError, match=r"main_mlp.py would refuse the evaluation of .*table4/p1.0_multi_nm0_s0: "
                                        r"--num-eval-batches must be at least 1, got 0"):
        submit(tmp_path, "table4", "--seeds", "1")
    assert fake_slurm.calls("sbatch") == []


@pytest.mark.parametrize("output", ["garbage\n", "JobID|State|NodeList\n1234_0|RUNNING\n", ""])
def test_sacct_garbage_is_an_error(tmp_path, fake_slurm, output):
    submit(tmp_path, "table4", "--seeds", "1")
    (fake_slurm.folder / "sacct").write_text(f"#!/bin/sh\nprintf '{output}'\n")
    with pytest.raises(UserError, match="sacct printed"):
        submit(tmp_path, "table4", "--seeds", "1")
    assert len(fake_slurm.calls("sbatch")) == 1


@pytest.mark.parametrize("text", ['{"job_id": 123}', "[]", '{"id": "1234_0"}', '{"job_id": "x"}', '{"job_'])
def test_bad_record_is_one_line(tmp_path, fake_slurm, text):
    submit(tmp_path, "table4", "--seeds", "1")
    (tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0" / slurm.RECORD).write_text(text)
    with pytest.raises(UserError, match=r"p1.0_multi_nm0_s0/slurm.json.*delete it if its job no longer runs"):
        submit(tmp_path, "table4", "--seeds", "1")
    assert len(fake_slurm.calls("sbatch")) == 1


def test_unreadable_record_of_a_live_training_counts_as_running(tmp_path, fake_slurm, capsys):
    submit(tmp_path, "table4", "--seeds", "1")
    folder = tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0"
    (folder / slurm.RECORD).write_text('{"job_id": "12')  # truncated
    fake_slurm.set_states({f"1234_{i}": "RUNNING" for i in range(1, 5)})
    with FolderLock(str(folder)):  # the entry point holds its model folder while it trains
        assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert len(fake_slurm.calls("sbatch")) == 1
    assert "5 jobs queued or running, 0 to submit" in capsys.readouterr().out


def test_without_accounting_squeue_tells_what_still_runs(tmp_path, fake_slurm, capsys):
    submit(tmp_path, "table4", "--seeds", "1")
    fake_slurm.set_queue({"1234_0": "RUNNING", "1234_1": "PENDING", "1234_4": "COMPLETING", "99_0": "RUNNING"})
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert "3 jobs queued or running, 2 to submit" in capsys.readouterr().out
    second = fake_slurm.calls("sbatch")[1]
    assert "#SBATCH --array=0-1%2" in sbatch_lines(second)
    assert sorted(r["job_id"] for r in records(tmp_path / "runs", "table4").values()) == [
        "1234_0", "1234_1", "1234_4", "1235_0", "1235_1"]
    (fake_slurm.folder / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact' >&2\nexit 1\n")
    with pytest.raises(UserError, match="cannot ask SLURM which jobs are queued"):
        submit(tmp_path, "table4", "--seeds", "1")


def test_a_launch_that_waited_for_the_lock_asks_again(tmp_path, fake_slurm, monkeypatch, capsys):
    """Two launches of one command: the second planned before the first submitted (a slow
    sacct), and reaches the out lock after it; it submits nothing."""
    real_lock = local.out_lock

    @contextlib.contextmanager
    def lock_after_another_launch(out):
        monkeypatch.setattr(local, "out_lock", real_lock)
        assert submit(tmp_path, "table4", "--seeds", "1") == 0  # the other launch, all of it
        fake_slurm.set_states({f"1234_{i}": "PENDING" for i in range(5)})
        with real_lock(out):
            yield
    monkeypatch.setattr(local, "out_lock", lock_after_another_launch)
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert len(fake_slurm.calls("sbatch")) == 1
    assert "another launch submitted these jobs, or they finished, meanwhile" in capsys.readouterr().out


def test_a_job_that_ends_between_plan_and_sacct_is_not_submitted_again(tmp_path, fake_slurm, monkeypatch,
                                                                       capsys):
    """A rerun plans from disk, then asks SLURM: a job that finished in between is in neither
    answer (planned unfinished, no longer queued), and must not be counted or submitted."""
    submit(tmp_path, "table4", "--seeds", "1")
    fake_slurm.set_states({f"1234_{i}": "RUNNING" for i in range(5)})
    real_plan = plans.plan

    def plan_then_one_ends(runs):
        jobs = real_plan(runs)
        folder = tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0"
        (folder / "args.json").write_text("{}")
        (folder / "results.csv").write_text("encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
        fake_slurm.set_states({"1234_0": "COMPLETED", **{f"1234_{i}": "RUNNING" for i in range(1, 5)}})
        return jobs
    monkeypatch.setattr(plans, "plan", plan_then_one_ends)
    capsys.readouterr()
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert "4 jobs queued or running, 0 to submit" in capsys.readouterr().out
    assert len(fake_slurm.calls("sbatch")) == 1


def test_empty_results_are_not_finished(tmp_path, fake_slurm, capsys):
    submit(tmp_path, "table4", "--seeds", "1")
    (tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0" / "args.json").write_text("{}")
    (tmp_path / "runs" / "table4" / "p1.0_multi_nm0_s0" / "results.csv").write_text("")
    fake_slurm.set_states({"1234_0": "FAILED", **{f"1234_{i}": "RUNNING" for i in range(1, 5)}})
    capsys.readouterr()
    assert submit(tmp_path, "table4", "--seeds", "1") == 0
    assert "5 runs: 0 done, 5 to do; 4 jobs queued or running, 1 to submit" in capsys.readouterr().out


def test_local_launcher_leaves_submitted_models(tmp_path, fake_slurm):
    submit(tmp_path, "table4", "--seeds", "1")
    with pytest.raises(UserError, match=r"table4/p1.0_multi_nm0_s0 was submitted to SLURM \(job 1234_0, "
                                        r"slurm.json\): rerun with --launcher slurm"):
        experiments.main(["table4", "--seeds", "1", "--out", str(tmp_path / "runs")])
    assert fake_slurm.calls("srun") == []


def test_local_launcher_is_unchanged(tmp_path, fake_slurm, capsys):
    assert experiments.main(["table1", "--seeds", "1", "--dry-run", "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "# 10 runs: 0 done, 10 to do"
    assert fake_slurm.calls() == []


TINY = {"--content-n": 2, "--style-n": 2, "--modality-n": 2, "--encoding-size": 2, "--batch-size": 32,
        "--train-steps": 3, "--log-steps": 2, "--no-cuda": True}


@pytest.mark.slow
def test_tiny_grid_runs_through_submitit_local_executor(tmp_path, fake_slurm, monkeypatch):
    """The job function for real: training, evaluation, then report.py on the results."""
    monkeypatch.setitem(grids.SCALES, "tiny", {**grids.SCALES["quick"], "sim_train": TINY,
                                                     "sim_eval": {"--num-eval-batches": 1, "--no-cuda": True}})
    monkeypatch.setattr(slurm, "CLUSTER", "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["table1", "--rows", "p1.0_multi", "--seeds", "1", "--scale", "tiny", "--launcher", "slurm",
            "--out", str(tmp_path / "runs")]
    assert experiments.main(argv) == 0
    folder = tmp_path / "runs" / "table1" / "p1.0_multi_s0"
    deadline = time.time() + 400
    while time.time() < deadline and not (folder / "results.csv").exists():
        time.sleep(1)
    logs = folder / slurm.LINK
    assert (folder / "results.csv").exists(), [p.read_text()[-2000:] for p in logs.glob("*_log.*")]
    assert (folder / plans.TRAINED).exists() and (folder / "metrics.csv").exists()
    assert {"train.log", "evaluate.log"} <= set(os.listdir(folder))
    assert any(p.name.endswith("_log.out") for p in logs.iterdir())  # submitit's logs, linked from the run
    results = pd.read_csv(folder / "results.csv", index_col=0)
    assert list(results["encoding"][:6]) == ["hz1"] * 6 and results["r2_linear"].notna().sum() >= 8
    written = report.write_report(str(tmp_path / "runs" / "table1"), "table1")
    assert str(tmp_path / "runs" / "table1" / "table1_curves.png") in written
    assert "p1.0" in (tmp_path / "runs" / "table1" / "report.md").read_text()
    # a rerun: the job is done (COMPLETED), nothing is submitted
    fake_slurm.set_states({records(tmp_path / "runs")["p1.0_multi_s0"]["job_id"]: "COMPLETED"})
    assert experiments.main(argv) == 0
    assert fake_slurm.calls("sbatch") == []


def test_job_resumes_from_checkpoint_and_keeps_its_record(tmp_path, monkeypatch):
    """What a requeued job does: plan from disk, --resume a checkpointed training; an
    interrupted one without checkpoint is cleared (its slurm.json and slurm/ kept) and retrained."""
    import submitit

    import slurm_job
    from test_experiments import FakeEntryPoints
    fake = FakeEntryPoints()
    monkeypatch.setattr(local, "run_command", fake)
    monkeypatch.chdir(tmp_path)
    runs = plans.experiment_runs("table4", "runs", "quick", [0], None)[:2]
    resumable, fresh = (tmp_path / r.train_dir for r in runs)
    for folder in (resumable, fresh):
        folder.mkdir(parents=True)
        (folder / slurm.RECORD).write_text('{"job_id": "1234_0"}')
        (folder / "args.json").write_text("{}")
        (folder / "stale.pt").write_text("x")
        (folder / "train.log").write_text("$ the first segment\n")
    (resumable / facts.CHECKPOINT).write_text("step 3000")
    job = slurm_job.ModelJob([runs[0]], str(tmp_path), threads=2)
    requeued = job.checkpoint()
    assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function is job
    assert requeued.function() == [runs[0].run_dir]
    assert fake.resumed() == [runs[0].name] and (resumable / "results.csv").exists()
    assert slurm_job.ModelJob([runs[1]], str(tmp_path))() == [runs[1].run_dir]
    assert fake.trainings()[-1] == runs[1].name and runs[1].name not in fake.resumed()
    assert (fresh / slurm.RECORD).exists() and not (fresh / "stale.pt").exists()
    assert (fresh / "train.log").read_text().startswith("$ the first segment")  # appended to, never lost
    assert (fresh / "results.csv").exists() and (fresh / plans.TRAINED).exists()
