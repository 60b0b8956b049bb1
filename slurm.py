"""experiments.py --launcher slurm: submit the grid's jobs to SLURM through submitit.

One SLURM job per experiments.Job (a trained model and the runs that evaluate it),
all of one command in one job array (--max-running of them at once). Each job runs
slurm_job.ModelJob, which does what the local launcher does for that job, and is
requeued from its last checkpoint when it times out or is preempted. The submission
is recorded in the job's model folder:
    slurm.json   {"job_id": "1234_5", "logs": <submitit folder>, "submitted": <time>, "runs": [...]}
    slurm/       a link to submitit's folder of the job (<out>/slurm/<job id>/): its
                 sbatch script, pickles and the SLURM logs (<job id>_0_log.out/.err)
A rerun of the command skips finished runs, and jobs that SLURM (sacct) reports as
still pending or running; it resubmits the rest, which continue from their checkpoints.
No torch and no submitit at import: experiments.py imports this module for its flags.
"""
import json
import os
import sys
import time

from cli import UserError
from files import atomic_write_json

RECORD = "slurm.json"
LINK = "slurm"
# sacct states of a job that will still run: never submit its runs a second time.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
CLUSTER = "slurm"  # submitit's executor; the tests run jobs for real with "local"
MAX_TIMEOUTS = 100  # requeues after the time limit: a training may span many time limits


def add_arguments(p):
    """The launcher's flags of experiments.py."""
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: run the jobs here (--jobs at a time); slurm: submit them (local)")
    g = p.add_argument_group("--launcher slurm")
    g.add_argument("--partition", help="SLURM partition (the cluster's default)")
    g.add_argument("--gpus-per-run", type=int, default=0, metavar="N", help="GPUs of each job (0)")
    g.add_argument("--cpus-per-run", type=int, default=4, metavar="N", help="CPUs of each job (4)")
    g.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="memory of each job (the cluster's default)")
    g.add_argument("--time", default="24:00:00", metavar="[D-]H:MM:SS|MIN",
                   help="time limit of each job; a job that reaches it is requeued from its checkpoint (24:00:00)")
    g.add_argument("--max-running", type=int, default=64, metavar="N",
                   help="jobs of the array running at once (64)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="another sbatch option, e.g. account=proj or qos=long (repeatable)")


def parse_time(text):
    """Minutes of a time limit: 90, 1:30:00, 2-00:00:00 (SLURM's formats)."""
    try:
        days, _, rest = text.rpartition("-")
        parts = [int(x) for x in rest.split(":")]
        if len(parts) == 1 and not days:
            minutes = parts[0]
        else:
            hours, mins, secs = ([0] * (3 - len(parts)) + parts)[-3:]
            minutes = (int(days or 0) * 24 + hours) * 60 + mins + (secs > 0)
    except ValueError:
        raise UserError(f"--time {text!r} is not MIN, H:MM:SS or D-H:MM:SS") from None
    if minutes < 1:
        raise UserError(f"--time {text!r} must be at least one minute")
    return minutes


def extra_options(items):
    """--slurm-extra account=proj qos=long -> {"account": "proj", "qos": "long"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-extra {item!r} is not KEY=VALUE")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def parameters(args):
    """submitit's (AutoExecutor) parameters of every job."""
    for flag, value, low in (("--gpus-per-run", args.gpus_per_run, 0), ("--cpus-per-run", args.cpus_per_run, 1),
                             ("--max-running", args.max_running, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.mem_gb is not None and not args.mem_gb > 0:
        raise UserError(f"--mem-gb must be positive, got {args.mem_gb}")
    params = {"name": "experiments", "timeout_min": parse_time(args.time), "cpus_per_task": args.cpus_per_run,
              "gpus_per_node": args.gpus_per_run, "nodes": 1, "tasks_per_node": 1,
              "slurm_array_parallelism": args.max_running}
    if args.mem_gb is not None:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    extra = extra_options(args.slurm_extra)
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def load_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs the submitit package (pip install submitit)") from None
    return submitit


# ------------------------------------------------------------- records ---

def read_record(folder):
    try:
        with open(os.path.join(folder, RECORD)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and record.get("job_id") else None
    except (OSError, ValueError):
        return None


def job_states(job_ids):
    """{job id: SLURM state} from sacct, through submitit's watcher ("UNKNOWN": sacct does
    not know the job). A failing sacct is an error: resubmitting blindly could run a job twice."""
    if not job_ids:
        return {}
    import subprocess

    load_submitit()
    from submitit.slurm.slurm import SlurmInfoWatcher
    watcher = SlurmInfoWatcher(delay_s=0)
    for job_id in job_ids:
        watcher.register_job(job_id)
    command = watcher._make_command()
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise UserError(f"cannot ask SLURM whether the submitted jobs still run ({command[0]}: "
                        f"{getattr(err, 'stderr', '') or err}); rerun when sacct answers") from None
    info = watcher.read_info(output)
    return {job_id: (info.get(job_id, {}).get("State") or "UNKNOWN").split()[0] for job_id in job_ids}


def still_queued(jobs):
    """{train_dir: (job id, state)} of the jobs whose recorded submission is pending or running."""
    records = {job.train_dir: read_record(job.train_dir) for job in jobs}
    states = job_states(sorted({r["job_id"] for r in records.values() if r}))
    return {folder: (r["job_id"], states[r["job_id"]]) for folder, r in records.items()
            if r and states[r["job_id"]] in ACTIVE}


def record_submission(job, submitted):
    """slurm.json (atomic) and the slurm/ link to submitit's folder of the job."""
    logs = str(submitted.paths.folder)
    atomic_write_json(os.path.join(job.train_dir, RECORD),
                      {"job_id": submitted.job_id, "logs": logs, "submitted": time.ctime(),
                       "runs": [run.run_dir for run in job.runs]})
    link = os.path.join(job.train_dir, LINK)
    tmp = f"{link}.{os.getpid()}.tmp"
    os.symlink(os.path.relpath(logs, job.train_dir), tmp)
    os.replace(tmp, link)  # atomic: a rerun's link replaces the old one


# ---------------------------------------------------------- submission ---

def executor(out, params, cluster):
    """submitit's executor: one folder per job, <out>/slurm/<job id>/."""
    submitit = load_submitit()
    folder = os.path.join(os.path.abspath(out), "slurm", "%j")
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError as err:  # no srun on PATH: not a SLURM machine
        raise UserError(f"--launcher slurm: {err}") from None
    here = os.path.dirname(os.path.abspath(__file__))
    # The job unpickles slurm_job.ModelJob: this repository must be importable on the node.
    setup = {"slurm_setup": [f"export PYTHONPATH={here}${{PYTHONPATH:+:$PYTHONPATH}}"]} if cluster == "slurm" else {}
    ex.update_parameters(**params, **setup)
    return ex


def submit(ex, jobs, threads):
    """Submit `jobs` as one array; return submitit's job objects, in order."""
    import slurm_job
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = here + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    with ex.batch():
        handles = [ex.submit(slurm_job.ModelJob(job.runs, os.getcwd(), threads)) for job in jobs]
    return handles


def describe(params):
    keys = ("slurm_partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
            "slurm_array_parallelism", "slurm_additional_parameters")
    return " ".join(f"{k.replace('slurm_', '')}={params[k]}" for k in keys if k in params)


def launch(args, runs, jobs, generate, out_lock):
    """Submit the jobs with steps left that are not queued or running already; return the exit code."""
    if generate is not None:
        raise UserError("figure3 on SLURM needs its data first: pass --datapath, or run the generator "
                        "command that `experiments.py figure3 --dry-run` prints, then submit again")
    params = parameters(args)
    pending = [job for job in jobs if job.steps]
    if not args.dry_run:  # a dry run needs submitit only to ask about jobs already submitted
        load_submitit()
    queued = still_queued(pending)
    todo = [job for job in pending if job.train_dir not in queued]
    n_done = sum(os.path.isfile(os.path.join(run.run_dir, "results.csv")) for run in runs)
    print(f"# {len(runs)} runs: {n_done} done, {len(runs) - n_done} to do; {len(queued)} jobs queued or "
          f"running, {len(todo)} to submit", flush=True)
    for folder, (job_id, state) in queued.items():
        print(f"# {state.lower()}: job {job_id} ({folder})")
    if args.dry_run:
        print(f"# resources of each job: {describe(params)}")
        for job in todo:
            print(f"# job {job.train_dir}")
            for step in job.steps:
                print(step.describe())
        return 0
    if not todo:
        return 0
    with out_lock(args.out):
        ex = executor(args.out, params, CLUSTER)
        handles = submit(ex, todo, args.cpus_per_run)
        for job, handle in zip(todo, handles):
            record_submission(job, handle)
    first = handles[0].job_id.split("_")[0]
    print(f"submitted {len(handles)} jobs (array {first}, at most {args.max_running} at once); "
          f"logs in {os.path.join(args.out, 'slurm')}/; rerun this command to continue or resubmit", flush=True)
    sys.stdout.flush()
    return 0
