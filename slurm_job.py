"""The SLURM job of one model: the plan's steps (plans.py) for it (train, then evaluate each run
that needs it), requeued from its last checkpoint when it times out or is preempted.

Imported where submitit is installed only: by `experiments.py --launcher slurm` when it
submits, and by submitit on the compute node when it unpickles the job.
"""
import os

import submitit

import local
import plans

# Survive a clean-up of an interrupted training: the job's record and logs (slurm.json,
# slurm/), and train.log, to which the fresh training appends.
KEEP = ("slurm", "train.log")


class ModelJob(submitit.helpers.Checkpointable):
    """The runs that share one trained model (plans.Job's unit), as a submitit callable.

    Every start, the first and each requeue, plans the steps from what is on disk, as the
    local launcher does: a folder without TRAINED but with checkpoint.pt is continued with
    the entry point's --resume, a finished run is skipped."""

    def __init__(self, runs, cwd, threads=None):
        self.runs = runs        # plans.Run of one train_dir
        self.cwd = cwd          # the submitter's working directory: the runs' paths are relative to it
        self.threads = threads  # CPUs of the job (torch threads of its steps)

    def __call__(self):
        os.chdir(self.cwd)
        job = plans.group_jobs(self.runs)[0]
        job.steps = []
        for step in plans.plan_steps(job):
            if step.kind == "remove":
                local.remove_unfinished(step.folder, keep=KEEP)
            else:
                job.steps.append(step)
        failure = local.run_job(job, self.environment)
        if failure:
            raise RuntimeError(failure)  # the job ends FAILED: a rerun of the command resubmits it
        return [run.run_dir for run in job.runs]

    def environment(self):
        env = local.child_env(1)
        if self.threads and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(self.threads)  # os.cpu_count() is the node's, not the job's
        return env

    def checkpoint(self, *args, **kwargs):
        # submitit calls this on SLURM's warning (SIGUSR2), then requeues the job and exits;
        # that exit stops the running step with SIGTERM (local.run_command), on which a
        # training saves a checkpoint at its current step. The state is then on disk
        # (checkpoint.pt, TRAINED, results.csv): the same callable, planned again when it
        # restarts, continues where this one stopped.
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
