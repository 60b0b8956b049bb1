"""Hardening round 3 (issue 44): a hostile sweep over the issue's classes, run in one process.

    .venv/bin/python tests/sweeps/hardening3.py [NAME-SUBSTRING ...]

Not a pytest module (no test_ prefix): it prints one line per case,
    CASE <name>: clean|broken: <detail>
and a final count line. A case is clean where the command either exits non-zero with one
line on stderr that names the file or flag (and no traceback, and no saved file changed),
or behaves correctly with nothing lost or silently wrong. Cases named issue-* are the
issue's own; the others use other keys, files and flags of the same classes.
Commands run in-process through cli.run_cli (as the tests do), with the simulation's
evaluation batches at 128 pairs; the trainings are a few steps of the tiny sizes.
"""
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
os.chdir(ROOT)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import cli  # noqa: E402
import directions  # noqa: E402
import experiments  # noqa: E402
import local  # noqa: E402
import main_imgtxt  # noqa: E402
import main_mlp  # noqa: E402
import plans  # noqa: E402
import report  # noqa: E402
import stamps  # noqa: E402
from helpers import file_contents  # noqa: E402
from m3di_fixture import write_m3di  # noqa: E402

main_mlp.EVAL_BATCH = 128  # the tests' size: the same code paths in a fraction of the time

T = ["--content-n", "2", "--style-n", "2", "--modality-n", "2", "--encoding-size", "2",
     "--batch-size", "64", "--train-steps", "5", "--num-eval-batches", "1", "--no-cuda"]
TP = T[6:]  # the view list gives the latents: no block sizes
IMGTXT = ["--batch-size", "8", "--log-steps", "1", "--checkpoint-steps", "2", "--workers", "0",
          "--hidden-size", "16", "--lr", "1e-3", "--no-cuda"]
WORK = tempfile.mkdtemp(prefix="hardening3_")
CASES = []
RESULTS = []


class Broken(Exception):
    pass


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


def run(main, argv):
    """(exit code, stderr lines without progress bars, stdout, traceback text or None)."""
    out, err = io.StringIO(), io.StringIO()
    code, tb = 0, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = cli.run_cli(main, [str(a) for a in argv])
            code = result if isinstance(result, int) else 0  # experiments.py exits with main's value
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: B902 - anything else is a traceback for the user
            tb = traceback.format_exc()
            code = 1
    text = err.getvalue()
    lines = [line for line in text.replace("\r", "\n").splitlines()
             if line.strip() and "it/s" not in line and "step/s" not in line and "%|" not in line
             and "s/it" not in line and "fit/s" not in line]
    return code, lines, out.getvalue(), tb


def fails(main, argv, needle, folder=None):
    """The command must exit non-zero with one line holding `needle`, folder unchanged."""
    before = file_contents(folder) if folder else None
    code, lines, _, tb = run(main, argv)
    if tb:
        raise Broken("traceback: " + tb.strip().splitlines()[-1])
    if code == 0:
        raise Broken(f"exit 0, expected an error with {needle!r}")
    if len(lines) != 1:
        raise Broken(f"exit {code} with {len(lines)} lines: {' | '.join(lines)[:300]}")
    if needle not in lines[0]:
        raise Broken(f"message lacks {needle!r}: {lines[0]}")
    if folder and file_contents(folder) != before:
        raise Broken(f"exit {code} but {folder} changed")
    return lines[0]


def succeeds(main, argv):
    code, lines, out, tb = run(main, argv)
    if tb:
        raise Broken("traceback: " + tb.strip().splitlines()[-1])
    if code:
        raise Broken(f"exit {code}: {' | '.join(lines)[:300]}")
    return lines, out


def check(cond, detail):
    if not cond:
        raise Broken(detail)


# ------------------------------------------------------------- models ---

BASES = {}


def base(name):
    """A trained and evaluated model, made once: mlp, part (0-2;1,2), part3 (0-2;1;1,2), img."""
    if name in BASES:
        return BASES[name]
    d = os.path.join(WORK, "bases")
    common = ["--model-dir", d, "--model-id", name]
    if name == "img":
        data = data_dir()
        quiet = contextlib.ExitStack()
        quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        with quiet:
            main_imgtxt.main(["--datapath", data, *common, "--seed", "5", "--train-steps", "2", *IMGTXT])
            main_imgtxt.main(["--datapath", data, *common, "--evaluate", "--load-args", "--seed", "6",
                          "--workers", "0", "--no-cuda"])
    else:
        spec = {"mlp": [], "part": ["--view-latents", "0-2;1,2"], "part3": ["--view-latents", "0-2;1;1,2"],
                "mlp3": ["--encoding-size", "3"]}[name]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            main_mlp.main([*common, "--seed", "3", *(TP if name.startswith("part") else T), *spec])
            main_mlp.main([*common, "--evaluate", "--load-args", "--seed", "4", "--num-eval-batches", "1",
                           "--no-cuda"])
    BASES[name] = os.path.join(d, name)
    return BASES[name]


_DATA = []


def data_dir():
    if not _DATA:
        _DATA.append(write_m3di(os.path.join(WORK, "m3di"), sizes={"train": 16, "val": 10, "test": 10}))
    return _DATA[0]


_N = [0]


def copy(name, into=None, as_name=None):
    """A fresh copy of a base model: (model dir, model id, folder)."""
    _N[0] += 1
    model_dir = into or os.path.join(WORK, f"c{_N[0]}")
    model_id = as_name or name
    folder = os.path.join(model_dir, model_id)
    shutil.copytree(base(name), folder)
    return model_dir, model_id, folder


def edit_args(folder, **changes):
    path = os.path.join(folder, "args.json")
    with open(path) as f:
        args = json.load(f)
    for key, value in changes.items():
        if value is DELETE:
            args.pop(key, None)
        else:
            args[key] = value
    with open(path, "w") as f:
        json.dump(args, f)


DELETE = object()


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def evaluate_argv(model_dir, model_id, *extra):
    return ["--model-dir", model_dir, "--model-id", model_id, "--evaluate", "--load-args", "--seed", "8",
            "--num-eval-batches", "1", "--no-cuda", *extra]


def report_md(folder, experiment, *extra):
    lines, _ = succeeds(report.main, [folder, "--experiment", experiment, *extra])
    return read(os.path.join(folder, "report.md")), lines


def sweep_folder(*runs):
    """An experiment folder holding copies of base models: runs = [(base name, run name)]."""
    _N[0] += 1
    folder = os.path.join(WORK, f"exp{_N[0]}")
    for name, as_name in runs:
        copy(name, folder, as_name)
    return folder


# ===================================================== the cases ===

@case("issue-1 stale results after --resume --train-steps 9")
def _():
    d, i, f = copy("mlp", as_name="ev")
    check(stamps.stale(f) is None, "fresh copy counted stale")
    succeeds(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "9"])
    why = stamps.stale(f)
    check(why and "weights changed" in why, f"stale() after resume: {why}")
    check(not plans.has_results(f), "runner counts the stale results as done")
    exp = sweep_folder(("mlp", "p1.0_multi_s0"))
    shutil.copytree(f, os.path.join(exp, "p1.0_multi_s1"))
    md, _ = report_md(exp, "table1")
    check("p1.0_multi_s1: left out, its results are stale" in md, "report does not leave out the stale run")
    succeeds(main_mlp.main, evaluate_argv(d, i))
    check(stamps.stale(f) is None and plans.has_results(f), "evaluating again did not make them current")
    return "stale after resume; runner and report treat them as absent; --evaluate makes them current"


@case("issue-2 reordered view list in args.json")
def _():
    d, i, f = copy("part")
    edit_args(f, view_latents="0,2,1;1,2")
    fails(main_mlp.main, evaluate_argv(d, i), "--view-latents 0-2;1,2 (latent_space.pt)", f)
    fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"],
          "args.json gives --view-latents 0,2,1;1,2", f)
    edit_args(f, view_latents=" 0 - 2 ; 1 , 2 ")
    succeeds(main_mlp.main, evaluate_argv(d, i))
    return "reordered list refused (evaluate, resume); another spelling of the same list evaluates"


@case("issue-3 report: runs of other view lists are not seeds of one row")
def _():
    exp = sweep_folder(("part", "yao_s3"), ("part3", "yao_s4"))
    md, _ = report_md(exp, "partial")
    check("Model `view_latents 0-2;1,2`" in md and "Model `view_latents 0-2;1;1,2`" in md,
          "the two view lists are not reported apart")
    return "two model sections"


def metrics_run_folder(text_edit):
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp", "p1.0_multi_s1"))
    path = os.path.join(exp, "p1.0_multi_s1", "metrics.csv")
    write(path, text_edit(read(path)))
    return exp


@case("issue-4 text in metrics.csv train_loss")
def _():
    def spoil(text):
        lines = text.splitlines()
        cols = lines[0].split(",")
        row = lines[1].split(",")
        row[cols.index("train_loss")] = "abc"
        return "\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n"
    exp = metrics_run_folder(spoil)
    md, lines = report_md(exp, "table1")
    check("p1.0_multi_s1" in md and "metrics.csv" in md and "train_loss" in md,
          f"report.md does not name the bad metrics.csv: {lines}")
    return "run left out of the curves with its reason"


@case("issue-5 metrics.csv header with an extra column, random bytes")
def _():
    d, i, f = copy("mlp")
    path = os.path.join(f, "metrics.csv")
    text = read(path)
    write(path, text.replace("\n", ",extra\n", 1))
    fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"], "metrics.csv", f)
    for garbage in (b"\x8f\xe2zq\x00\x13", b"\x8f\xe2\nzq\x00\x13\n"):  # after the last newline, or lines
        write(path, text)
        open(path, "ab").write(garbage)
        fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"], "metrics.csv", f)
    return "both refused, file kept"


@case("issue-6 runner plans under the out lock")
def _():
    out = os.path.join(WORK, "race")
    folder = os.path.join(out, "table1", "p1.0_multi_s0")
    os.makedirs(folder)
    write(os.path.join(folder, "args.json"), json.dumps({"seed": 0}))
    calls = []
    real_lock, real_run = local.out_lock, local.run_command

    @contextlib.contextmanager
    def lock_after_a_finishes(where):
        write(os.path.join(folder, "g1.pt"), "A's weights")
        write(os.path.join(folder, plans.TRAINED), "{}")
        write(os.path.join(folder, "results.csv"), "encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
        with real_lock(where):
            yield

    local.out_lock = lock_after_a_finishes
    local.run_command = lambda *a, **k: calls.append(a) or 0
    try:
        succeeds(experiments.main, ["table1", "--seeds", "0-0", "--rows", "p1.0_multi", "--out", out])
    finally:
        local.out_lock, local.run_command = real_lock, real_run
    check(not calls and read(os.path.join(folder, "g1.pt")) == "A's weights", f"runner acted: {calls}")
    return "nothing deleted or redone"


@case("issue-7 whitened encoders with one-latent views")
def _():
    succeeds(main_mlp.main, ["--model-dir", os.path.join(WORK, "i7"), "--model-id", "w", "--seed", "1",
                             "--view-latents", "0-2;1,2;0;2", "--encoder-init", "whitened", *TP])
    return "trains"


@case("issue-8 split coordinates, encoding size 1e12")
def _():
    fails(main_mlp.main, ["--model-dir", os.path.join(WORK, "i8"), "--model-id", "w", "--view-latents", "0,1;1",
                          "--content-coords", "split", "--encoding-size", "1000000000000", *TP[2:]],
          "--encoding-size")
    check(not os.path.exists(os.path.join(WORK, "i8", "w", "args.json")), "a folder was left behind")
    return "one line"


@case("issue-9 image/text published protocol at batch 1")
def _():
    d, i, f = copy("img")
    fails(main_imgtxt.main, ["--datapath", data_dir(), "--model-dir", d, "--model-id", i, "--evaluate",
                             "--load-args", "--seed", "6", "--workers", "0", "--no-cuda", "--eval-protocol",
                             "published", "--batch-size", "1"], "--batch-size", f)
    return "one line"


def damaged_partial(damage):
    exp = sweep_folder(("part", "good_s3"), ("part", "bad_s4"))
    bad = os.path.join(exp, "bad_s4")
    rows = pd.read_csv(os.path.join(bad, "partial.csv"), dtype=str)
    damage(rows).to_csv(os.path.join(bad, "partial.csv"), index=False)
    os.remove(os.path.join(bad, "evaluation.json"))  # an older version's folder: nothing stamps it
    md, _ = report_md(exp, "partial")
    return md


for _name, _damage, _reason in (
        ("content rows removed", lambda r: r[r["target"] != "content"], "no content row"),
        ("latent written as zero", lambda r: r.assign(latents=r["latents"].where(r["target"] != "latent", "zero")),
         "'zero'"),
        ("text in r2_nonlinear", lambda r: r.assign(r2_nonlinear="abc"), "r2_nonlinear holds text"),
        ("R2 columns cut off", lambda r: r.drop(columns=["r2_linear", "r2_nonlinear"]), "no column r2_linear")):
    def _make(damage=_damage, reason=_reason):
        def fn():
            md = damaged_partial(damage)
            check("bad_s4: left out" in md and reason in md, "bad run not left out with its reason")
            return "left out with its reason"
        return fn
    case(f"issue-10 partial.csv {_name}")(_make())


@case("issue-unclear non-ASCII digits in --view-latents")
def _():
    fails(main_mlp.main, ["--model-dir", os.path.join(WORK, "u1"), "--model-id", "w", "--view-latents", "٣;1", *TP],
          "--view-latents")
    return "one line"


@case("issue-unclear split mode with too small an encoding warns")
def _():
    lines, _ = succeeds(main_mlp.main, ["--model-dir", os.path.join(WORK, "u2"), "--model-id", "w",
                                        "--view-latents", "0-2;1,2", "--content-coords", "split", *TP[:1], "1", *TP[2:]])
    check(any("warning" in line and "--encoding-size" in line for line in lines), f"no warning: {lines}")
    return "trains with a one-line warning"


@case("issue-unclear --tau 1e-30")
def _():
    fails(main_mlp.main, ["--model-dir", os.path.join(WORK, "u3"), "--model-id", "w", "--tau", "1e-30", *T], "--tau")
    return "refused"


@case("issue-unclear --permuted-content on a partial model blames the flag")
def _():
    d, i, f = copy("part")
    fails(main_mlp.main, evaluate_argv(d, i, "--permuted-content"), "--permuted-content", f)
    return "blames the flag"


@case("issue-unclear edited 3-view view_latents blames the view list")
def _():
    d, i, f = copy("part")
    edit_args(f, view_latents="0-2;1,2;1")
    fails(main_mlp.main, evaluate_argv(d, i), "latent_space.pt", f)
    return "blames the view list"


@case("issue-unclear null view_latents blames the view list")
def _():
    d, i, f = copy("part")
    edit_args(f, view_latents=None)
    fails(main_mlp.main, evaluate_argv(d, i), "no --view-latents", f)
    return "blames the view list"


@case("issue-unclear --resume --content-coords split on a partial run")
def _():
    d, i, f = copy("part")
    fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7", "--content-coords",
                          "split"], "--content-coords", f)
    return "refused as a changed training setting"


@case("issue-unclear image/text --resume --eval-protocol published")
def _():
    d, i, f = copy("img")
    succeeds(main_imgtxt.main, ["--datapath", data_dir(), "--model-dir", d, "--model-id", i, "--resume",
                                "--train-steps", "3", "--eval-protocol", "published", "--workers", "0", "--no-cuda"])
    check(json.loads(read(os.path.join(f, "args.json")))["train_steps"] == 3, "not resumed")
    return "resumes"


@case("issue-unclear report table1 on a partial folder")
def _():
    exp = sweep_folder(("part", "yao_s3"), ("mlp", "p1.0_multi_s0"))
    md, _ = report_md(exp, "table1")
    check("yao_s3: left out, a partial-observability run" in md and "1 runs with results" in md, "partial run counted")
    return "partial run left out"


def fake_runner():
    calls = []

    def fake(cmd, log_path, env=None):
        calls.append(cmd)
        flags = cmd[2:]
        folder = os.path.join(flags[flags.index("--model-dir") + 1], flags[flags.index("--model-id") + 1])
        if "--evaluate" in flags:
            write(os.path.join(folder, "results.csv"),
                  "encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
            return 0
        args = {}
        for k, flag in enumerate(flags):
            if flag.startswith("--"):
                nxt = flags[k + 1] if k + 1 < len(flags) else "--"
                args[flag[2:].replace("-", "_")] = True if nxt.startswith("--") else nxt
        write(os.path.join(folder, "args.json"), json.dumps(args))
        for name in local.MODEL_FILES[os.path.basename(cmd[1])][1:]:
            write(os.path.join(folder, name), "w")
        return 0
    return calls, fake


@contextlib.contextmanager
def faked_runner():
    calls, fake = fake_runner()
    real = local.run_command
    local.run_command = fake
    try:
        yield calls
    finally:
        local.run_command = real


@case("issue-unclear runner rerun with another --train-steps")
def _():
    out = os.path.join(WORK, "r1")
    with faked_runner():
        succeeds(experiments.main, ["table1", "--seeds", "1", "--rows", "p1.0_multi", "--train-steps", "40",
                                    "--out", out])
        fails(experiments.main, ["table1", "--seeds", "1", "--rows", "p1.0_multi", "--out", out],
              "rerun with --train-steps 40")
    return "names the flag to rerun with"


@case("issue-unclear runner --out FILE --dry-run")
def _():
    path = os.path.join(WORK, "FILE")
    write(path, "")
    fails(experiments.main, ["table1", "--out", path, "--dry-run"], "is not a folder")
    return "one line"


@case("issue-unclear runner stray results.csv without args.json")
def _():
    out = os.path.join(WORK, "r2")
    folder = os.path.join(out, "table1", "p1.0_multi_s0")
    os.makedirs(folder)
    write(os.path.join(folder, "results.csv"), "encoding,predicted_factors,r2_linear,r2_nonlinear\nhz1,c,0.5,0.9\n")
    with faked_runner() as calls:
        fails(experiments.main, ["table1", "--seeds", "0-0", "--out", out], "no args.json")
    check(not calls and os.path.exists(os.path.join(folder, "results.csv")), "runner acted")
    return "refused, file kept"


@case("issue-unclear runner --seeds 2-1")
def _():
    fails(experiments.main, ["table1", "--seeds", "2-1", "--dry-run", "--out", os.path.join(WORK, "r3")],
          "runs backwards")
    return "one line"


@case("issue-unclear runner partial --datapath X")
def _():
    fails(experiments.main, ["partial", "--datapath", "X", "--dry-run", "--out", os.path.join(WORK, "r4")],
          "--datapath")
    return "one line"


# ============================================ sweep: other keys, files, flags ===

# -- args.json: other keys, types, nulls, spellings (evaluate --load-args must refuse) --
for _key, _value, _needle in (
        ("content_n", "two", "content_n"),
        ("encoding_size", None, "encoding_size"),
        ("tau", -1, "tau"),
        ("n_views", 2.5, "n_views"),
        ("style_change_prob", 2.0, "style_change_prob"),
        ("c_param", "NaN", "c_param"),
        ("learn_tau", "yes", "learn_tau"),
        ("n_mixing_layer", 0, "n_mixing_layer"),
        ("modality_n", -1, "modality_n"),
        ("shared_encoder", True, "g"),
        ("statistical_dependence", True, "latent_space.pt"),
        ("discrete_content", 1, "discrete"),
        ("seed", None, "seed"),
        ("content_n", DELETE, "args.json"),
        ("encoding_size", 3, "g1.pt")):
    def _make(key=_key, value=_value, needle=_needle):
        def fn():
            d, i, f = copy("mlp")
            edit_args(f, **{key: value})
            return fails(main_mlp.main, evaluate_argv(d, i), needle, f)
        return fn
    case(f"args.json {_key}={'deleted' if _value is DELETE else repr(_value)} (--evaluate --load-args)")(_make())

for _key, _value, _needle in (
        ("view_latents", 5, "view_latents"),
        ("view_latents", "", "view_latents"),
        ("view_latents", "0-2;1,2;", "view_latents"),
        ("content_coords", "bogus", "content_coords"),
        ("content_coords", "split", "content_coords")):
    def _make(key=_key, value=_value, needle=_needle):
        def fn():
            d, i, f = copy("part")
            edit_args(f, **{key: value})
            return fails(main_mlp.main, evaluate_argv(d, i), needle, f)
        return fn
    case(f"partial args.json {_key}={_value!r} (--evaluate --load-args)")(_make())


@case("args.json a JSON list (--resume)")
def _():
    d, i, f = copy("mlp")
    write(os.path.join(f, "args.json"), "[1, 2]")
    return fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"], "args.json", f)


@case("args.json truncated (--resume)")
def _():
    d, i, f = copy("mlp")
    p = os.path.join(f, "args.json")
    write(p, read(p)[:40])
    return fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"], "args.json", f)


@case("imgtxt args.json encoding_size 'x' (--evaluate --load-args)")
def _():
    d, i, f = copy("img")
    edit_args(f, encoding_size="x")
    return fails(main_imgtxt.main, ["--datapath", data_dir(), "--model-dir", d, "--model-id", i, "--evaluate",
                                    "--load-args", "--seed", "6", "--workers", "0", "--no-cuda"], "encoding_size", f)


# -- latent_space.pt / weights: the saved model names what it is --
@case("latent_space.pt garbled (--evaluate)")
def _():
    d, i, f = copy("part")
    write(os.path.join(f, "latent_space.pt"), "garbage")
    return fails(main_mlp.main, evaluate_argv(d, i), "latent_space.pt", f)


@case("g2.pt of another model copied over (--evaluate)")
def _():
    d, i, f = copy("mlp")
    shutil.copy(os.path.join(base("mlp3"), "g2.pt"), os.path.join(f, "g2.pt"))
    return fails(main_mlp.main, evaluate_argv(d, i), "g2.pt", f)


@case("same-shaped g1.pt copied over makes results stale")
def _():
    d, i, f = copy("mlp")
    shutil.copy(os.path.join(f, "g2.pt"), os.path.join(f, "g1.pt"))
    why = stamps.stale(f)
    check(why and "weights changed" in why, f"stale: {why}")
    check(not plans.has_results(f), "runner counts it done")
    return why


@case("partial model resumed with another view list spelling trains on")
def _():
    d, i, f = copy("part")
    succeeds(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7",
                             "--view-latents", "0,1,2;1,2"])
    check(torch.load(os.path.join(f, "checkpoint.pt"))["step"] == 7, "not resumed")
    check(stamps.stale(f), "old results still current")
    return "resumed; old results stale"


# -- result files: evaluation.json, results.csv, partial.csv, metrics.csv, directions.csv --
def _stale_case(name, damage, expect_stale=True):
    @case(name)
    def fn():
        d, i, f = copy("mlp")
        damage(f)
        why = stamps.stale(f)
        check(bool(why) == expect_stale, f"stale() gives {why!r}")
        check(plans.has_results(f) != expect_stale, "runner disagrees")
        exp = os.path.join(WORK, f"ex_{_N[0]}")
        shutil.copytree(f, os.path.join(exp, "p1.0_multi_s0"))
        md, _ = report_md(exp, "table1") if not expect_stale else (None, None)
        if expect_stale:
            code, lines, _, tb = run(report.main, [exp, "--experiment", "table1"])
            check(tb is None and code != 0 and len(lines) == 1, f"report on the only (stale) run: {code} {lines}")
        return why or "current"
    return fn


_stale_case("evaluation.json truncated", lambda f: write(os.path.join(f, "evaluation.json"),
                                                          read(os.path.join(f, "evaluation.json"))[:30]))
_stale_case("evaluation.json a JSON list", lambda f: write(os.path.join(f, "evaluation.json"), "[]"))
_stale_case("evaluation.json stamp.files names a missing file",
            lambda f: (lambda p: write(p, json.dumps({**json.loads(read(p)), "stamp": {
                **json.loads(read(p))["stamp"], "files": {"gone.csv": "0"}}})))(os.path.join(f, "evaluation.json")))
_stale_case("evaluation.json stamp null (pre-stamp folder)",
            lambda f: (lambda p: write(p, json.dumps({**json.loads(read(p)), "stamp": None})))(
                os.path.join(f, "evaluation.json")), expect_stale=False)
_stale_case("results.csv one row edited after the evaluation",
            lambda f: write(os.path.join(f, "results.csv"), read(os.path.join(f, "results.csv")).replace("hz1", "hz2", 1)))


def _report_bad_results(name, damage, reason):
    @case(name)
    def fn():
        exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp", "p1.0_multi_s1"))
        bad = os.path.join(exp, "p1.0_multi_s1")
        damage(bad)
        os.remove(os.path.join(bad, "evaluation.json"))  # unstamped: the reader must judge the file itself
        md, _ = report_md(exp, "table1")
        check("p1.0_multi_s1: left out" in md and reason in md, "bad run not left out with its reason: "
              + "; ".join(l for l in md.splitlines() if "s1" in l)[:300])
        check(plans.has_results(bad) is False or reason == "", "runner counts the bad run done")
        return "left out: " + next(l for l in md.splitlines() if "p1.0_multi_s1: left out" in l)
    return fn


_report_bad_results("results.csv header only", lambda f: write(os.path.join(f, "results.csv"),
                                                              read(os.path.join(f, "results.csv")).splitlines()[0] + "\n"),
                    "results.csv")
_report_bad_results("results.csv random bytes", lambda f: open(os.path.join(f, "results.csv"), "wb").write(os.urandom(200)),
                    "results.csv")
_report_bad_results("results.csv without r2_nonlinear",
                    lambda f: pd.read_csv(os.path.join(f, "results.csv")).drop(columns=["r2_nonlinear"]).to_csv(
                        os.path.join(f, "results.csv"), index=False), "r2_nonlinear")
_report_bad_results("results.csv text in r2_linear",
                    lambda f: pd.read_csv(os.path.join(f, "results.csv")).assign(r2_linear="x").to_csv(
                        os.path.join(f, "results.csv"), index=False), "r2_linear")


@case("results.csv with an extra column is read")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp", "p1.0_multi_s1"))
    bad = os.path.join(exp, "p1.0_multi_s1")
    pd.read_csv(os.path.join(bad, "results.csv")).assign(note="x").to_csv(os.path.join(bad, "results.csv"), index=False)
    os.remove(os.path.join(bad, "evaluation.json"))
    md, _ = report_md(exp, "table1")
    check("2 runs with results" in md, "run with an extra column not counted")
    return "counted"


for _name, _damage, _reason in (
        ("empty file", lambda f: write(os.path.join(f, "partial.csv"), ""), "partial.csv"),
        ("header only", lambda f: write(os.path.join(f, "partial.csv"),
                                        read(os.path.join(f, "partial.csv")).splitlines()[0] + "\n"), "partial.csv"),
        ("views column missing", lambda f: pd.read_csv(os.path.join(f, "partial.csv")).drop(columns=["views"]).to_csv(
            os.path.join(f, "partial.csv"), index=False), "views"),
        ("random bytes", lambda f: open(os.path.join(f, "partial.csv"), "wb").write(os.urandom(300)), "partial.csv"),
        ("latent index out of range", lambda f: pd.read_csv(os.path.join(f, "partial.csv"), dtype=str).assign(
            latents=lambda r: r["latents"].where(r["target"] != "latent", "99")).to_csv(
            os.path.join(f, "partial.csv"), index=False), "99")):
    def _make(damage=_damage, reason=_reason):
        def fn():
            exp = sweep_folder(("part", "good_s3"), ("part", "bad_s4"))
            bad = os.path.join(exp, "bad_s4")
            damage(bad)
            os.remove(os.path.join(bad, "evaluation.json"))
            md, _ = report_md(exp, "partial")
            check("bad_s4: left out" in md and reason in md.split("bad_s4: left out")[1].splitlines()[0],
                  "not left out with a reason naming " + reason + ": "
                  + "; ".join(l for l in md.splitlines() if "bad_s4" in l)[:300])
            return next(l for l in md.splitlines() if "bad_s4: left out" in l)
        return fn
    case(f"partial.csv {_name}")(_make())


def _resume_bad_metrics(name, damage, needle="metrics.csv"):
    @case(name)
    def fn():
        d, i, f = copy("mlp")
        damage(os.path.join(f, "metrics.csv"))
        return fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"], needle, f)
    return fn


_resume_bad_metrics("metrics.csv a column missing from the header (--resume)",
                    lambda p: write(p, read(p).replace(",train_loss", "", 1)))
_resume_bad_metrics("metrics.csv columns renamed (--resume)", lambda p: write(p, read(p).replace("step", "stpe", 1)))
_resume_bad_metrics("metrics.csv a row with text in step (--resume)",
                    lambda p: write(p, read(p) + "abc" + read(p).splitlines()[-1][1:] + "\n"))


@case("metrics.csv empty file (--resume)")
def _():
    d, i, f = copy("mlp")
    write(os.path.join(f, "metrics.csv"), "")
    code, lines, _, tb = run(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"])
    check(tb is None, "traceback")
    if code:
        check(len(lines) == 1 and "metrics.csv" in lines[0], f"{lines}")
        return "refused: " + lines[0]
    rows = pd.read_csv(os.path.join(f, "metrics.csv"))
    check(list(rows["step"]) == [7], f"rows {list(rows['step'])}")
    return "resumed; the curve starts again at the resumed step"


@case("metrics.csv missing (--resume)")
def _():
    d, i, f = copy("mlp")
    os.remove(os.path.join(f, "metrics.csv"))
    code, lines, _, tb = run(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7"])
    check(tb is None and (code == 0 or (len(lines) == 1 and "metrics.csv" in lines[0])), f"{code} {lines}")
    return "resumed" if code == 0 else lines[0]


def _curves_bad(name, edit, needle):
    @case(name)
    def fn():
        exp = metrics_run_folder(edit)
        md, lines = report_md(exp, "table1")
        check("p1.0_multi_s1" in md and needle in md and "metrics.csv" in md, f"curves: bad metrics.csv not named: {lines}")
        return "left out of the curves with its reason"
    return fn


@case("metrics.csv inf in train_loss (report curves draw it as a gap)")
def _():
    # A number, not text: matplotlib leaves the point out; the axis stays numeric. (Our writers
    # never write one: a non-finite loss ends the training, run.check_finite_training.)
    exp = metrics_run_folder(lambda t: t.replace("\n", "\n", 1)[: t.index("\n") + 1] + ",".join(
        "inf" if c == "train_loss" else v for c, v in zip(t.splitlines()[0].split(","), t.splitlines()[1].split(",")))
        + "\n")
    md, _ = report_md(exp, "table1")
    check(os.path.exists(os.path.join(exp, "table1_curves.png")) and "2 runs with results" in md, "no curves")
    return "drawn, both runs reported"
_curves_bad("metrics.csv text in step (report curves)",
            lambda t: t.splitlines()[0] + "\nfive" + t.splitlines()[1][t.splitlines()[1].index(","):] + "\n", "step")
_curves_bad("metrics.csv header only (report curves)", lambda t: t.splitlines()[0] + "\n", "metrics.csv")


@case("directions.py on a model whose g1.pt is garbled")
def _():
    d, i, f = copy("mlp")
    write(os.path.join(f, "g1.pt"), "garbage")
    return fails(directions.main, [f, "--no-cuda"], "g1.pt", f)


@case("directions.py on a partial model")
def _():
    d, i, f = copy("part")
    code, lines, out, tb = run(directions.main, [f, "--no-cuda"])
    check(tb is None and (code == 0 or len(lines) == 1), f"{code} {lines}")
    return "runs" if code == 0 else lines[0]


@case("directions.py with a view list edited in args.json")
def _():
    d, i, f = copy("part")
    edit_args(f, view_latents="0,2,1;1,2")
    return fails(directions.main, [f, "--no-cuda"], "view-latents", f)


@case("directions.csv written whole and replaced on a second run")
def _():
    d, i, f = copy("mlp")
    succeeds(directions.main, [f, "--no-cuda"])
    first = pd.read_csv(os.path.join(f, "directions.csv"))
    write(os.path.join(f, "directions.csv"), "garbage,\n")
    succeeds(directions.main, [f, "--no-cuda"])
    second = pd.read_csv(os.path.join(f, "directions.csv"))
    check(first.equals(second), "second run differs")
    return f"{len(first)} rows, the same on a second run"


# -- resume after changed flags --
for _flags, _needle in ((["--encoding-size", "3"], "--encoding-size"),
                        (["--view-latents", "0-2;1,2"], "--view-latents"),
                        (["--tau", "0.5"], "--tau"),
                        (["--learn-tau"], "--learn-tau"),
                        (["--n-views", "3"], "--n-views"),
                        (["--encoder-init", "orthogonal"], "--encoder-init")):
    def _make(flags=_flags, needle=_needle):
        def fn():
            d, i, f = copy("mlp")
            return fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "7", *flags],
                         needle, f)
        return fn
    case(f"--resume {' '.join(_flags)}")(_make())


@case("--resume --train-steps 3 below the trained step")
def _():
    d, i, f = copy("mlp")
    return fails(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "3"],
                 "--train-steps", f)


@case("--resume --num-eval-batches 2 is honoured (an evaluation setting)")
def _():
    d, i, f = copy("mlp")
    succeeds(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "6",
                             "--num-eval-batches", "2"])
    return "resumed"


@case("--evaluate --load-args on a resumed model gives current results")
def _():
    d, i, f = copy("mlp")
    succeeds(main_mlp.main, ["--model-dir", d, "--model-id", i, "--resume", "--train-steps", "6"])
    succeeds(main_mlp.main, evaluate_argv(d, i))
    ev = json.loads(read(os.path.join(f, "evaluation.json")))
    check(stamps.stale(f) is None, "still stale")
    return "current; evaluation.json's train_steps " + str(ev.get("args", ev).get("train_steps", "?"))


# -- report.py on mixed folders --
@case("report table1 with an image/text run in the folder")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("img", "imgtxt_s0"))
    md, _ = report_md(exp, "table1")
    check("imgtxt_s0: left out" in md and "1 runs with results" in md, "image/text run counted")
    return next(l for l in md.splitlines() if "imgtxt_s0" in l)


@case("report table1: runs of another encoding size are not seeds of one row")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp3", "p1.0_multi_s1"))
    md, _ = report_md(exp, "table1")
    check("p1.0_multi_s1" in md and "encoding_size" in md, "two encoding sizes averaged as seeds")
    return "kept apart"


@case("report on an empty folder")
def _():
    os.makedirs(os.path.join(WORK, "empty"))
    return fails(report.main, [os.path.join(WORK, "empty"), "--experiment", "table1"], "empty")


@case("report on a missing folder")
def _():
    return fails(report.main, [os.path.join(WORK, "nope"), "--experiment", "table1"], "nope")


@case("report --experiment partial on simulation runs only")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"))
    return fails(report.main, [exp, "--experiment", "partial"], "p1.0_multi_s0")


@case("report with a run whose args.json seed is null")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp", "p1.0_multi_s1"))
    edit_args(os.path.join(exp, "p1.0_multi_s1"), seed=None)
    code, lines, _, tb = run(report.main, [exp, "--experiment", "table1"])
    check(tb is None and code == 0, f"{code} {lines}")
    md = read(os.path.join(exp, "report.md"))
    check("p1.0_multi_s1: left out" in md or "2 runs with results" in md, "neither counted nor left out")
    return "ok"


@case("report with a run whose args.json is garbled")
def _():
    exp = sweep_folder(("mlp", "p1.0_multi_s0"), ("mlp", "p1.0_multi_s1"))
    write(os.path.join(exp, "p1.0_multi_s1", "args.json"), "{garbled")
    md, _ = report_md(exp, "table1")
    check("p1.0_multi_s1: left out" in md and "args.json" in md, "not left out with reason")
    return "left out"


# -- runner flags --
for _argv, _needle in ((["--seeds", "0-100000"], "--seeds"),
                       (["--seeds", "-1"], "--seeds"),
                       (["--seeds", "4294967295"], "--seeds"),
                       (["--seeds", "1,,2"], "--seeds"),
                       (["--rows", "nosuchrow"], "nosuchrow"),
                       (["--jobs", "0"], "--jobs"),
                       (["--train-steps", "0"], "--train-steps"),
                       (["--out", ""], "--out"),
                       (["nosuchexperiment"], "nosuchexperiment")):
    def _make(argv=_argv, needle=_needle):
        def fn():
            extra = [] if "--out" in argv else ["--out", os.path.join(WORK, f"rr{_N[0]}")]
            return fails(experiments.main, [*([] if argv[0] == "nosuchexperiment" else ["table1"]), *argv,
                                            "--dry-run", *extra], needle)
        return fn
    case(f"runner {' '.join(_argv) or repr('')}")(_make())


@case("runner --seeds 1,1 runs seed 1 once")
def _():
    code, lines, out, tb = run(experiments.main, ["table1", "--rows", "p1.0_multi", "--seeds", "1,1", "--dry-run",
                                                  "--out", os.path.join(WORK, "rs")])
    check(tb is None, "traceback")
    if code:
        check(len(lines) == 1 and "--seeds" in lines[0], f"{lines}")
        return lines[0]
    trainings = [l for l in out.splitlines() if "main_mlp.py" in l and "--evaluate" not in l]
    check(len(trainings) == 1, f"{len(trainings)} trainings planned")
    return "one training"


@case("runner --dry-run plans to evaluate again a run whose results are stale")
def _():
    out = os.path.join(WORK, "rstale")
    folder = os.path.join(out, "table1", "p1.0_multi_s0")
    shutil.copytree(base("mlp"), folder)
    write(os.path.join(folder, plans.TRAINED), "{}")
    shutil.copy(os.path.join(folder, "g2.pt"), os.path.join(folder, "g1.pt"))  # changed weights
    code, lines, out_text, tb = run(experiments.main, ["table1", "--rows", "p1.0_multi", "--seeds", "0-0",
                                                       "--dry-run", "--out", out])
    check(tb is None, "traceback")
    if code:
        check(len(lines) == 1, f"{lines}")
        return "refused: " + lines[0]
    check("--evaluate" in out_text or "results" not in out_text, f"no evaluation planned: {out_text[-300:]}")
    check(os.path.exists(os.path.join(folder, "results.csv")), "dry run deleted results.csv")
    return "plans an evaluation (or a new run), touches nothing"


@case("runner --dry-run prints and writes nothing")
def _():
    out = os.path.join(WORK, "rdry")
    succeeds(experiments.main, ["table1", "--rows", "p1.0_multi", "--seeds", "0-0", "--dry-run", "--out", out])
    check(not os.path.exists(out) or not any(files for _, _, files in os.walk(out)), "dry run wrote files")
    return "nothing written"


@case("runner --jobs 2 with one run")
def _():
    out = os.path.join(WORK, "rjobs")
    with faked_runner() as calls:
        succeeds(experiments.main, ["table1", "--rows", "p1.0_multi", "--seeds", "0-0", "--jobs", "2", "--out", out])
    check(len(calls) == 2, f"{len(calls)} calls")
    return "trained and evaluated once"


# -- one-dimensional edge cases --
def _one_dim(name, flags):
    @case(name)
    def fn():
        d = os.path.join(WORK, f"od{_N[0]}")
        _N[0] += 1
        with contextlib.redirect_stderr(io.StringIO()):
            pass
        succeeds(main_mlp.main, ["--model-dir", d, "--model-id", "m", "--seed", "1",
                                 *(TP if "--view-latents" in flags else T), *flags])
        succeeds(main_mlp.main, evaluate_argv(d, "m"))
        rows = pd.read_csv(os.path.join(d, "m", "results.csv"))
        check(len(rows) and rows["r2_linear"].notna().any(), "no results")
        return f"trains and evaluates ({len(rows)} result rows)"
    return fn


_one_dim("content 1, no style, no modality, encoding 1",
         ["--content-n", "1", "--style-n", "0", "--modality-n", "0", "--encoding-size", "1"])
_one_dim("encoding size 1, whitened", ["--encoding-size", "1", "--encoder-init", "whitened"])
_one_dim("blocks of 1, three views, orthogonal",
         ["--content-n", "1", "--style-n", "1", "--modality-n", "1", "--n-views", "3", "--encoder-init", "orthogonal"])
_one_dim("two views of the same one latent", ["--view-latents", "0;0"])
_one_dim("one-latent views, split coordinates, whitened",
         ["--view-latents", "0;1;0,1", "--content-coords", "split", "--encoder-init", "whitened"])
_one_dim("view list with one-latent views, encoding 1, kaiming",
         ["--view-latents", "0,1;1", "--encoding-size", "1", "--encoder-init", "kaiming"])
_one_dim("discrete content of 2 values, encoding 1",
         ["--content-n", "1", "--discrete-content", "2", "--encoding-size", "1"])


@case("directions.py on a model with blocks of 1")
def _():
    d = os.path.join(WORK, "dir1")
    succeeds(main_mlp.main, ["--model-dir", d, "--model-id", "m", "--seed", "1", *T, "--content-n", "1",
                             "--style-n", "1", "--modality-n", "1", "--encoding-size", "1"])
    succeeds(directions.main, [os.path.join(d, "m"), "--no-cuda"])
    rows = pd.read_csv(os.path.join(d, "m", "directions.csv"))
    check(rows.select_dtypes("number").notna().any().any(), "no numbers")
    return f"{len(rows)} rows"


# -- image/text: evaluation protocol and batch edges --
def img_eval(d, i, *extra):
    return ["--datapath", data_dir(), "--model-dir", d, "--model-id", i, "--evaluate", "--load-args", "--seed", "6",
            "--workers", "0", "--no-cuda", *extra]


@case("imgtxt --eval-protocol bogus")
def _():
    d, i, f = copy("img")
    return fails(main_imgtxt.main, img_eval(d, i, "--eval-protocol", "bogus"), "--eval-protocol", f)


@case("imgtxt --evaluate --batch-size 0")
def _():
    d, i, f = copy("img")
    return fails(main_imgtxt.main, img_eval(d, i, "--batch-size", "0"), "--batch-size", f)


@case("imgtxt published protocol, batch larger than the split")
def _():
    d, i, f = copy("img")
    return fails(main_imgtxt.main, img_eval(d, i, "--eval-protocol", "published", "--batch-size", "64"),
                 "--eval-protocol published", f)


@case("imgtxt published protocol at batch 2")
def _():
    d, i, f = copy("img")
    succeeds(main_imgtxt.main, img_eval(d, i, "--eval-protocol", "published", "--batch-size", "2"))
    check(stamps.stale(f) is None, "stale after evaluation")
    return "evaluates"


@case("imgtxt training at batch 1")
def _():
    return fails(main_imgtxt.main, ["--datapath", data_dir(), "--model-dir", os.path.join(WORK, "ib1"), "--model-id",
                                    "r", "--seed", "5", "--train-steps", "2", *IMGTXT[2:], "--batch-size", "1"],
                 "--batch-size")


@case("imgtxt resumed: its results become stale")
def _():
    d, i, f = copy("img")
    succeeds(main_imgtxt.main, ["--datapath", data_dir(), "--model-dir", d, "--model-id", i, "--resume",
                                "--train-steps", "3", "--workers", "0", "--no-cuda"])
    why = stamps.stale(f)
    check(why and "weights" in why, f"stale: {why}")
    return why


def main(argv):
    chosen = [c for c in CASES if not argv or any(a in c[0] for a in argv)]
    counts = {"clean": 0, "broken": 0}
    for name, fn in chosen:
        try:
            detail = fn() or "ok"
            verdict = "clean"
        except Broken as err:
            verdict, detail = "broken", str(err)
        except Exception as err:  # noqa: BLE001 - the sweep's own setup failed: report it, go on
            verdict, detail = "broken", f"sweep error {type(err).__name__}: {cli.first_line(err)}"
        counts[verdict] += 1
        print(f"CASE {name}: {verdict}: {' '.join(str(detail).split())[:400]}", flush=True)
    print(f"{len(chosen)} cases: {counts['clean']} clean, {counts['broken']} broken")
    shutil.rmtree(WORK, ignore_errors=True)
    return 1 if counts["broken"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
