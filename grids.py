"""The experiments as records: what each one runs and how its report reads.

The runner (plans.py) takes the grid, the entry point, where the models are
trained, the evaluation's extra flags and the scales' flags (SCALES); report.py takes the report layout, the
table's columns, the factor that tells whether a run converged and the
paper's values. Adding an experiment is adding a record here. No torch: the
runner and the report import this module.
"""
import os
from dataclasses import dataclass, field

import dependencies
import facts
from cli import flag_of

# Hyperparameters per scale. "paper" spells out the paper's values (the entry
# points' defaults) so that every command documents itself.
SCALES = {
    "paper": {
        "sim_train": {"--content-n": 5, "--style-n": 5, "--modality-n": 5, "--encoding-size": 5,
                      "--batch-size": 6144, "--lr": 1e-4, "--train-steps": 300001, "--log-steps": 1000},
        "sim_eval": {"--num-eval-batches": 5},
        "imgtxt_train": {"--batch-size": 256, "--lr": 1e-5, "--tau": 1.0, "--train-steps": 100001,
                         "--log-steps": 1000, "--checkpoint-steps": 10000, "--workers": 4},
        "imgtxt_eval": {"--workers": 4},
        "data": None,  # the published Multimodal3DIdent: --datapath is required
    },
    # CPU-sized: simulation blocks of 3 with the kaiming/cosine/bf16 recipe, image/text
    # the make demo-imgtxt recipe at 64 px. Why each setting: REPRODUCTION.md,
    # "Quick-scale settings, and why".
    "quick": {
        "sim_train": {"--content-n": 3, "--style-n": 3, "--modality-n": 3, "--encoding-size": 3,
                      "--batch-size": 256, "--lr": 1e-3, "--lr-schedule": "cosine", "--warmup-steps": 100,
                      "--train-steps": 15001, "--precision": "bf16", "--encoder-init": "kaiming",
                      "--log-steps": 1000},
        "sim_eval": {"--num-eval-batches": 1},
        "imgtxt_train": {"--batch-size": 64, "--lr": 1e-3, "--tau": 0.1, "--train-steps": 4001,
                         "--lr-schedule": "cosine", "--warmup-steps": 200, "--precision": "bf16",
                         "--log-steps": 500, "--checkpoint-steps": 250, "--workers": 1},
        "imgtxt_eval": {"--workers": 1},
        "data": {"--n-train": 10000, "--n-val": 1000, "--n-test": 1000, "--seed": 0,
                 "--image-size": 64, "--position-dependent-color": True,
                 "--workers": os.cpu_count() or 1},
    },
}
# The paper's latent sizes (blocks of 5, encoding size 5) with the quick scale's CPU
# recipe over more steps: at blocks of 5 that recipe needs about 34,000 steps for a
# linear content R^2 of 0.9. 50,001 steps leave 2 of Table 1's 6 models without any
# dependence short of convergence, 100,001 converge all 6 (the Cau row converges in
# neither; REPRODUCTION.md, "Table 1 at the paper's latent sizes"). Image/text runs as
# at the quick scale.
SCALES["dims"] = {**SCALES["quick"], "sim_train": {
    **SCALES["quick"]["sim_train"], "--content-n": 5, "--style-n": 5, "--modality-n": 5,
    "--encoding-size": 5, "--train-steps": 100001}}

# Table 1's rows: p(chg) and the latent dependencies switched on (dependencies.REGISTRY's keys).
STAT, CAU = "statistical_dependence", "content_dependent_style"
SIM_ROWS = ((1.0, ()), (0.75, ()), (0.75, (STAT,)), (0.75, (CAU,)), (0.75, (STAT, CAU)))
ENCODING_SIZES = (1, 2, 3, 4, 6, 8, 10, 12)
# figure5's rows: which blocks are discrete, each dimension with FIG5_K values
# (p(chg) 0.75, no dependencies: Table 1's second row with discrete blocks).
FIG5_ROWS = (("c",), ("s",), ("m",), ("c", "s", "m"))
FIG5_K = 5
# The flag of each discrete block, e.g. "c": "--discrete-content".
DISCRETE_FLAGS = {block: flag_of(key) for block, key in facts.DISCRETE_KEYS.items()}
VIEW_COUNTS = (2, 3, 4)  # views: Table 1's first row (multimodal, p(chg) 1.0) with K views
# Yao et al. (ICLR 2024), numerical experiment: 4 views of 6 latents, their default S_k
# (multiview-crl, main_numerical.py, --S-k). Rows: the two coordinate assignments; "split"
# gives every set 4 coordinates per view, the largest content (a pair's) here.
YAO_VIEWS = "0-4;0,1,2,4,5;0,1,2,3,5;0,1,3,4,5"
# The quick and paper scales set block sizes that the view list replaces: None leaves a flag out.
NO_BLOCKS = {"--content-n": None, "--style-n": None, "--modality-n": None}
PARTIAL_ROWS = (("yao_truth", {"--view-latents": YAO_VIEWS, "--content-coords": "truth", **NO_BLOCKS,
                               "--encoding-size": None}),
                ("yao_split", {"--view-latents": YAO_VIEWS, "--content-coords": "split", **NO_BLOCKS,
                               "--encoding-size": 4}))


# content_size: encoders of 1, 2 and 3 times the content size (3, as at the quick scale) on
# Table 1's rows, a unimodal row, Figure 5's discrete content and K = 3, 4 views, each with
# the fixed and with a learned temperature (--learn-tau).
CONTENT_N = 3
SIZE_FACTORS = (1, 2, 3)
SIZE_ROWS = (
    ("p1.0_multi", {"--style-change-prob": 1.0}),
    ("p0.75_multi", {"--style-change-prob": 0.75}),
    ("p0.75_stat_multi", {"--style-change-prob": 0.75, "--statistical-dependence": True}),
    ("p0.75_cau_multi", {"--style-change-prob": 0.75, "--content-dependent-style": True}),
    ("p0.75_stat_cau_multi", {"--style-change-prob": 0.75, "--statistical-dependence": True,
                              "--content-dependent-style": True}),
    ("p1.0_uni", {"--style-change-prob": 1.0, "--shared-mixing": True, "--shared-encoder": True}),
    (f"p0.75_discc{FIG5_K}_multi", {"--style-change-prob": 0.75, DISCRETE_FLAGS["c"]: FIG5_K}),
    ("p1.0_k3_multi", {"--n-views": 3}),
    ("p1.0_k4_multi", {"--n-views": 4}),
)


def size_grid():
    return tuple((f"{name}_enc{CONTENT_N * k}" + "_lt" * learn,
                  {**row, "--content-n": CONTENT_N, "--encoding-size": CONTENT_N * k, "--learn-tau": learn})
                 for name, row in SIZE_ROWS for k in SIZE_FACTORS for learn in (False, True))


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str                  # what --list says
    report_title: str           # the report's heading
    script: str                 # the entry point
    grid: tuple                 # ((row name, {flag: value}), ...); the seeds multiply it
    layout: str                 # the report's layout: "sim", "discrete", "views", "partial", "content_size" or "imgtxt"
    columns: tuple = ()         # "sim" and "discrete" tables: ((mode, factor, header), ...)
    paper: dict = field(default_factory=dict)  # the paper's values, keyed as the layout reads them
    trained_in: str = None      # another experiment whose models this one evaluates
    eval_flags: dict = field(default_factory=dict)
    content: str = "c"          # the factor whose R² < 0.9 marks a run as not converged
    needs_data: bool = False    # image/text: a Multimodal3DIdent folder


def table_grid(modes, no_modality=False):
    """Rows named <Table 1's row>_<mode>[_nm0], e.g. p0.75_stat_cau_multi."""
    grid = []
    for p, keys in SIM_ROWS:
        for mode in modes:
            row = {"--style-change-prob": p, **{d.flag: d.key in keys for d in dependencies.REGISTRY},
                   "--shared-mixing": mode == "uni", "--shared-encoder": mode == "uni"}
            if no_modality:
                row["--modality-n"] = 0
            grid.append((dependencies.row_key(p, keys) + f"_{mode}" + "_nm0" * no_modality, row))
    return tuple(grid)


# The paper's numbers: Tables 1 and 4 (nonlinear R² of h1's encodings, mean of 3 seeds,
# 300,000 steps at batch 6,144), keyed by Table 1's row names, and Figure 3 (read off its plot).
TABLE1 = {
    "p1.0": {"uni": {"c": 1.00, "s": 0.00}, "multi": {"c": 0.99, "s": 0.00, "m1": 0.00}},
    "p0.75": {"uni": {"c": 0.99, "s": 0.00}, "multi": {"c": 1.00, "s": 0.00, "m1": 0.00}},
    "p0.75_stat": {"uni": {"c": 0.99, "s": 0.52}, "multi": {"c": 0.95, "s": 0.56, "m1": 0.00}},
    "p0.75_cau": {"uni": {"c": 1.00, "s": 0.79}, "multi": {"c": 0.98, "s": 0.87, "m1": 0.00}},
    "p0.75_stat_cau": {"uni": {"c": 0.99, "s": 0.81}, "multi": {"c": 0.95, "s": 0.89, "m1": 0.00}},
}
TABLE4 = {
    "p1.0": {"multi": {"c": 1.00, "s": 0.00}},
    "p0.75": {"multi": {"c": 1.00, "s": 0.00}},
    "p0.75_stat": {"multi": {"c": 0.99, "s": 0.36}},
    "p0.75_cau": {"multi": {"c": 1.00, "s": 0.81}},
    "p0.75_stat_cau": {"multi": {"c": 0.99, "s": 0.83}},
}
# One cell per encoding size 1, 2, 3, 4, 6, 8, 10, 12: a value, a (low, high) range (low
# None: "<= high"), or None where the plot gives nothing readable. Accuracy for discrete
# factors, R² otherwise.
FIGURE3 = {
    ("image", "object_shape"): [0.21, 0.21, 0.54, 0.88, 0.97, 0.99, 1.0, 1.0],
    ("image", "object_ypos"): [0.4] + [1.0] * 7,
    ("image", "object_xpos"): [0.4] + [1.0] * 7,
    **{("image", f): [(None, 0.05)] * 8
       for f in ("object_alpharot", "object_betarot", "object_gammarot", "spotlight_pos",
                 "spotlight_color", "background_color")},
    ("image", "object_color"): [None] + [(0.92, 0.99)] * 7,
    # Six values can be read off the plot for text shape; they are taken as sizes 1-8.
    ("text", "object_shape"): [0.18, 0.15, 0.51, 0.93, 0.98, 1.0, None, None],
    ("text", "object_ypos"): [0.4] + [1.0] * 7,
    ("text", "object_xpos"): [0.4] + [1.0] * 7,
    ("text", "object_color_index"): [0.09] + [None] * 6 + [0.5],
    ("text", "text_phrasing"): [(0.49, 0.78)] * 8,
}

EXPERIMENTS = {e.name: e for e in (
    Experiment("table1", "Table 1: simulation, unimodal and multimodal, five latent settings",
               "Table 1: numerical simulation, nonlinear R² of the encodings h1(x1)",
               "main_mlp.py", table_grid(("uni", "multi")), "sim",
               columns=(("uni", "c", "unimodal c"), ("uni", "s", "unimodal s"), ("multi", "c", "multimodal c"),
                        ("multi", "s", "multimodal s"), ("multi", "m1", "multimodal m_i")),
               paper=TABLE1),
    Experiment("table4", "Table 4: multimodal simulation without modality-specific latents (--modality-n 0)",
               "Table 4: multimodal simulation without modality-specific latents, nonlinear R² of h1(x1)",
               "main_mlp.py", table_grid(("multi",), no_modality=True), "sim",
               columns=(("multi", "c", "content c"), ("multi", "s", "style s")), paper=TABLE4),
    Experiment("figure8", "Figure 8: table1's multimodal models evaluated with --permuted-content",
               "Figure 8: Table 1's multimodal models under permuted content, nonlinear R² of h1(x1)",
               "main_mlp.py", table_grid(("multi",)), "sim",
               columns=(("multi", "c", "c (original content)"), ("multi", "c'", "c' (permuted content)")),
               trained_in="table1", eval_flags={"--permuted-content": True}, content="c'"),
    Experiment("figure3", "Figure 3: image/text with position-dependent colour, by encoding size",
               "Figure 3: image/text, position-dependent colour, prediction performance by encoding size",
               "main_imgtxt.py", tuple((f"enc{size}", {"--encoding-size": size}) for size in ENCODING_SIZES),
               "imgtxt", paper=FIGURE3, needs_data=True, eval_flags={"--estimate-content-size": True}),
    Experiment("figure5", "Figure 5: multimodal simulation with discrete content, style or modality-specific "
               "latents", "Figure 5: multimodal simulation with discrete latent blocks, nonlinear R² of h1(x1)",
               "main_mlp.py",
               tuple((f"p0.75_disc{''.join(blocks)}{FIG5_K}_multi",
                      {"--style-change-prob": 0.75, **{DISCRETE_FLAGS[b]: FIG5_K for b in blocks}})
                     for blocks in FIG5_ROWS), "discrete",
               columns=(("multi", "c", "content c"), ("multi", "s", "style s"), ("multi", "m1", "modality m_i"))),
    Experiment("views", "Beyond the paper: K = 2, 3, 4 views of shared content (main_mlp.py --n-views K)",
               "K views of shared content: nonlinear R² by number of views",
               "main_mlp.py", tuple((f"p1.0_k{k}_multi", {"--n-views": k}) for k in VIEW_COUNTS), "views"),
    Experiment("content_size", "Beyond the paper: the content size estimated from encodings of 1-3x its size, "
               "with a fixed and a learned temperature (main_mlp.py --estimate-content-size)",
               "The content size estimated from over-sized encodings (content_size.py), against the truth",
               "main_mlp.py", size_grid(), "content_size", eval_flags={"--estimate-content-size": True}),
    Experiment("partial", "Beyond the paper: Yao et al. (2024)'s numerical setting, 4 views each seeing "
               "5 of 6 latents (main_mlp.py --view-latents)",
               "Partial observability: each set of views' content from each of its views, nonlinear R²",
               "main_mlp.py", PARTIAL_ROWS, "partial"),
)}
