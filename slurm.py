"""experiments.py --launcher slurm: submit the grid's jobs to SLURM through submitit.

One SLURM job per plans.Job (a trained model and the runs that evaluate it),
all of one command in one job array (--max-running of them at once). Each job runs
slurm_job.ModelJob, which does what the local launcher does for that job, and is
requeued from its last checkpoint when it times out or is preempted. The submission
is recorded in the job's model folder:
    slurm.json   {"job_id": "1234_5", "logs": <submitit folder>, "submitted": <time>, "runs": [...]}
    slurm/       a link to submitit's folder of the job (<out>/slurm/<job id>/): its
                 sbatch script, pickles and the SLURM logs (<job id>_0_log.out/.err)
A rerun of the command skips finished runs, and jobs that SLURM reports as still pending
or running (squeue; sacct too where the cluster keeps accounting); it resubmits the rest,
which continue from their checkpoints. Every training's and evaluation's flags pass the
entry point's own checks before anything is submitted.
No torch and no submitit at import: experiments.py imports this module for its flags.
"""
import importlib
import json
import os
import re
import subprocess
import time

import local
import plans
from cli import UserError
from files import FolderLock, atomic_write_json

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


# SLURM's time formats: MIN, MIN:SEC, H:MIN:SEC, D-H, D-H:MIN, D-H:MIN:SEC.
TIME = re.compile(r"(?P<days>\d+)-(?P<hours>\d+)(?::(?P<mins>\d+)(?::(?P<secs>\d+))?)?"
                  r"|(?P<first>\d+)(?::(?P<second>\d+)(?::(?P<third>\d+))?)?")


def parse_time(text):
    """Minutes of a time limit in one of SLURM's formats; seconds round up, as SLURM rounds them."""
    m = TIME.fullmatch(text.strip())
    if not m:
        raise UserError(f"--time {text!r} is not one of SLURM's formats: MIN, MIN:SEC, H:MIN:SEC, "
                        "D-H, D-H:MIN or D-H:MIN:SEC")
    if m["days"] is not None:
        days, hours, mins, secs = (int(m[k] or 0) for k in ("days", "hours", "mins", "secs"))
    else:
        parts = [int(x) for x in (m["first"], m["second"], m["third"]) if x is not None]
        days, (hours, mins, secs) = 0, parts if len(parts) == 3 else ([0, *parts, 0])[:3]
    minutes = (days * 24 + hours) * 60 + mins + (secs + 59) // 60
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
        if "\n" in item or "\r" in item:  # it would end the #SBATCH line and start another
            raise UserError(f"--slurm-extra {item!r} spans lines; each option is one line")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def warning_seconds(minutes):
    """How long before the time limit SLURM warns the job (SIGUSR2), which then checkpoints
    and is requeued: submitit's 90 s, less for limits under 4 minutes. SLURM sends the warning
    at its first time-limit check (every 30 s) once the time left is below the warning + 30 s,
    so this leaves a job at least a third of its limit: with more, every start of a job under a
    1-minute limit could be stopped at once."""
    return min(90, max(10, minutes * 30 - 30))


def parameters(args):
    """submitit's (AutoExecutor) parameters of every job."""
    for flag, value, low in (("--gpus-per-run", args.gpus_per_run, 0), ("--cpus-per-run", args.cpus_per_run, 1),
                             ("--max-running", args.max_running, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.mem_gb is not None and not args.mem_gb > 0:
        raise UserError(f"--mem-gb must be positive, got {args.mem_gb}")
    minutes = parse_time(args.time)
    params = {"name": "experiments", "timeout_min": minutes, "cpus_per_task": args.cpus_per_run,
              "gpus_per_node": args.gpus_per_run, "nodes": 1, "tasks_per_node": 1,
              "slurm_array_parallelism": args.max_running, "slurm_signal_delay_s": warning_seconds(minutes)}
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

JOB_ID = re.compile(r"\d+(_\d+)?")  # 1234, or 1234_5 in an array


def read_record(folder):
    """The folder's slurm.json, or None where there is none. A record that cannot be read or
    names no job is an error: it stands for a submitted job that may still run."""
    path = os.path.join(folder, RECORD)
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if not (isinstance(record, dict) and isinstance(record.get("job_id"), str) and JOB_ID.fullmatch(record["job_id"])):
        raise UserError(f"{path} does not record a SLURM job (no \"job_id\": \"<id>\" in a JSON object)")
    return record


def training_live(folder):
    """A process holds the model folder's lock: a training or evaluation runs there now."""
    try:
        with FolderLock(folder):
            return False
    except UserError:
        return True


def ask(command, what):
    """The stdout of a SLURM command; a failure is one line that says what could not be asked."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        detail = (getattr(err, "stderr", "") or str(err)).strip().splitlines() or [str(err)]
        raise UserError(f"cannot ask SLURM {what} ({command[0]}: {detail[-1]}); rerun when it answers") from None


def parsed_lines(output, command, n_fields, header=None):
    """`output`'s lines split at "|", after checking that each has `n_fields` fields and a job
    id first (and that the first line is `header`): garbage is an error, not "no jobs"."""
    lines = [line for line in output.splitlines() if line.strip()]
    if header is not None:
        if not lines or lines[0] != header:
            raise UserError(f"{command} printed {lines[0][:80]!r} where {header!r} was expected" if lines
                            else f"{command} printed nothing, not even its header")
        lines = lines[1:]
    rows = [line.split("|") for line in lines]
    for line, row in zip(lines, rows):
        if len(row) != n_fields or not re.match(r"\d+", row[0]):
            raise UserError(f"{command} printed {line[:80]!r}, not {n_fields} fields starting with a job id")
    return rows


def squeue_states(job_ids):
    """{job id: state} of the jobs that slurmctld still holds (pending, running, just ended)."""
    rows = parsed_lines(ask(["squeue", "--noheader", "--array", "--format=%i|%T"], "which jobs are queued"),
                        "squeue", 2)
    return {job_id: state for job_id, state in rows if job_id in job_ids}


def sacct_states(job_ids):
    """{job id: state} from the accounting storage, through submitit's watcher (it expands an
    array's pending range); None where the cluster keeps no accounting."""
    load_submitit()
    from submitit.slurm.slurm import SlurmInfoWatcher
    watcher = SlurmInfoWatcher(delay_s=0)
    for job_id in job_ids:
        watcher.register_job(job_id)
    command = watcher._make_command()
    try:
        output = ask(command, "whether the submitted jobs still run")
    except UserError as err:
        if "accounting storage is disabled" in str(err):
            return None
        raise
    parsed_lines(output, "sacct", 3, header="JobID|State|NodeList")
    info = watcher.read_info(output)
    return {job_id: info[job_id]["State"].split()[0] for job_id in job_ids if info.get(job_id, {}).get("State")}


def job_states(job_ids):
    """{job id: state}: squeue's for the jobs slurmctld holds, else sacct's where the cluster
    keeps accounting, else "UNKNOWN" (ended: what it did is in its run folder). A state that
    either calls queued or running counts, so that no job runs twice."""
    if not job_ids:
        return {}
    live = squeue_states(set(job_ids))
    accounted = sacct_states(job_ids) or {}
    states = {}
    for job_id in job_ids:
        known = [s for s in (live.get(job_id), accounted.get(job_id)) if s]
        states[job_id] = next((s for s in known if s in ACTIVE), known[0] if known else "UNKNOWN")
    return states


def still_queued(jobs):
    """{train_dir: (job id, state)} of the jobs whose submission is pending or running. An
    unreadable record counts as running where its folder shows a live training."""
    job_ids, queued = {}, {}
    for job in jobs:
        try:
            record = read_record(job.train_dir)
        except UserError as err:
            if not training_live(job.train_dir):
                raise UserError(f"{err}; delete it if its job no longer runs") from None
            queued[job.train_dir] = ("unknown (unreadable slurm.json)", "TRAINING")
            continue
        if record:
            job_ids[job.train_dir] = record["job_id"]
    states = job_states(sorted(set(job_ids.values())))
    queued.update({folder: (job_id, states[job_id]) for folder, job_id in job_ids.items()
                   if states[job_id] in ACTIVE})
    return queued


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


def dry_parse(script, argv):
    """The entry point's own flag checks on `argv`, without a model: a UserError if it would refuse them."""
    entry = importlib.import_module(os.path.splitext(os.path.basename(script))[0])
    parser = entry.build_parser()

    def refuse(message):
        raise UserError(message)
    parser.error = refuse  # argparse would print its usage and exit
    entry.check_args(parser.parse_args(argv))


CHECKED = {"train": "training", "evaluate": "evaluation"}  # the steps that run an entry point


def check_commands(jobs):
    """Every training and evaluation passes its entry point's checks here, before anything is
    submitted: an impossible combination of flags is one line now, not a failure of every job
    on the nodes. (An evaluation's --load-args settings come from args.json when it runs.)"""
    for job in jobs:
        for step in job.steps:
            if step.kind in CHECKED:
                try:
                    dry_parse(step.cmd[1], step.cmd[2:])
                except UserError as err:
                    raise UserError(f"{os.path.basename(step.cmd[1])} would refuse the {CHECKED[step.kind]} of "
                                    f"{step.folder}: {err}") from None


def unsubmitted(jobs, queued):
    """The jobs neither queued nor running (`queued`, from SLURM) nor finished since they were
    planned (a job that ends between the plan and the question to SLURM is in neither)."""
    return [job for job in jobs if job.train_dir not in queued
            and not all(plans.has_results(run.run_dir) for run in job.runs)]


def launch(args, runs, jobs, generate):
    """Submit the jobs with steps left that are not queued or running already; return the exit code."""
    if generate is not None:
        raise UserError("figure3 on SLURM needs its data first: pass --datapath, or run the generator "
                        "command that `experiments.py figure3 --dry-run` prints, then submit again")
    params = parameters(args)
    pending = [job for job in jobs if job.steps]
    check_commands(pending)
    if not args.dry_run:  # a dry run needs submitit only to ask about jobs already submitted
        load_submitit()
    queued = still_queued(pending)
    todo = unsubmitted(pending, queued)
    print(f"# {plans.progress(runs)}; {len(queued)} jobs queued or "
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
    with local.out_lock(args.out):
        # Asked again under the lock: another launch of this command may have submitted these
        # jobs (or they may have finished) since they were planned.
        todo = unsubmitted(todo, still_queued(todo))
        if not todo:
            print("# another launch submitted these jobs, or they finished, meanwhile: nothing to submit",
                  flush=True)
            return 0
        ex = executor(args.out, params, CLUSTER)
        handles = submit(ex, todo, args.cpus_per_run)
        for job, handle in zip(todo, handles):
            record_submission(job, handle)
    first = handles[0].job_id.split("_")[0]
    print(f"submitted {len(handles)} jobs (array {first}, at most {args.max_running} at once); "
          f"logs in {os.path.join(args.out, 'slurm')}/; rerun this command to continue or resubmit", flush=True)
    return 0
