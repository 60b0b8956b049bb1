"""Facts that several parts of the project must agree on, in one torch-free place.

The files of a model folder, the data splits, the discrete-latent settings, the
shapes of the synthetic data, and the defaults of the optimisation recipe (the
published recipe). The runner and the report read them without importing torch.
"""
ARGS_FILE = "args.json"        # every setting of a training (the published name)
RESULTS_FILE = "results.csv"   # an evaluation's table (the published name and columns)
CHECKPOINT = "checkpoint.pt"   # modules, optimiser, step and random streams, for --resume
PARTIAL_FILE = "partial.csv"   # main_mlp.py --view-latents: each set of views' content (partial.py)
PARTIAL_COLUMNS = ("views", "view", "coordinates", "target", "latents", "r2_linear", "r2_nonlinear",
                   "mcc", "mcc_spearman")
# Files a finished training has left, per entry point (the published layouts).
MODEL_FILES = {"main_mlp.py": (ARGS_FILE, "g1.pt", "g2.pt"),
               "main_imgtxt.py": (ARGS_FILE, "encoder_img.pt", "encoder_txt.pt")}

SPLITS = ("train", "val", "test")  # the Multimodal3DIdent folder's sub-folders

# main_mlp.py's settings that make a latent block discrete, by block.
DISCRETE_KEYS = {"c": "discrete_content", "s": "discrete_style", "m": "discrete_modality"}

# The seven object shapes of Multimodal3DIdent, in the order of their index.
SHAPE_NAMES = ("teapot", "hammer", "chair", "snowman", "car", "lamp", "airplane")

# Defaults of the recipe flags (recipe.py, main_mlp.py --encoder-init): the published
# recipe. A model trained with other values must not pass for one trained without them.
RECIPE_DEFAULTS = {"lr_schedule": "constant", "warmup_steps": 0, "adam_beta1": 0.9, "adam_beta2": 0.999,
                   "adam_eps": 1e-8, "weight_decay": 0.0, "grad_clip": 2.0, "precision": "fp32",
                   "encoder_init": "torch", "tau": 1.0}
# main_mlp.py --encoder-init: the ways to initialise the simulation's encoders (encoders.py).
INITS = ("torch", "kaiming", "orthogonal", "whitened")

# results.csv of each kind of run: (text columns, numeric columns, numbers or empty); a file
# without them is no finished evaluation for the runner (stamps.results_problem) nor the report.
RESULT_COLUMNS = {
    "sim": (("encoding", "predicted_factors"), ("r2_linear", "r2_nonlinear")),
    "imgtxt": (("modality", "factor_name", "factor_type"), ("r2_linreg", "r2_krreg", "acc_logreg", "acc_mlp")),
}

# --view-latents: which encoding coordinates hold each set's content; the first is the default.
CONTENT_COORDS = ("truth", "split")
