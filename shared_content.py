"""The paper's setting of main_mlp.py: one content block shared by all K views (K = 2 by default).

Latents (c, s, m1, m2, ...) come from spaces.LatentSpace; view k is f_k(c, s~k, mk)
through its own random invertible MLP (one shared with --shared-mixing) and is
encoded by g_k (one shared with --shared-encoder). The loss is the K-view
symmetric L2 InfoNCE loss; the evaluation predicts every latent block from
every view's encoding and writes results.csv (settings.py names the interface
that this class and partial.PartialObservability share).
"""
import os

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import dependencies
import probes
import size_estimates
import spaces
from cli import UserError, first_line
from distributed import DistInfo
from encoders import ViewEncoder, contrastive_loss, simulation_encoder
from facts import DISCRETE_KEYS
from invertible_network_utils import construct_invertible_mlp, mlp_shell
from losses import LpSimCLRLoss, MultiViewLpLoss
from utils import load_into

# The claim, stated so that it holds on any CPU: content found, nothing else (nonlinear R²).
CONTENT_FOUND, NOTHING_ELSE = 0.9, 0.05


def targets(n_views=2):
    """What the probes predict: c, s, s~, (s~3, ...,) m1, m2, (m3, ...,) and c', the permuted content."""
    return (*spaces.block_names(n_views), "c'")


class SharedContent:
    def __init__(self, args):
        self.args = args

    def build(self, device):
        """The latent space and the networks of a new training, drawn from --seed."""
        args = self.args
        space = build_latent_space(args, args.seed, device)
        rng = np.random.default_rng(args.seed)
        dim = space.view_dim
        try:
            mixings = [construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng)]
            for _ in range(1, args.n_views):
                mixings.append(mixings[0] if args.shared_mixing
                               else construct_invertible_mlp(dim, args.n_mixing_layer, rng=rng))
            return space, ViewEncoder(mixings, build_encoders(args, dim)).to(device)
        except (MemoryError, RuntimeError) as err:  # e.g. --encoding-size 1000000000
            raise UserError(f"the networks for these sizes do not fit in memory (latent dimension {dim}, "
                            f"--encoding-size {args.encoding_size}): {first_line(err)}") from None

    def load(self, save_dir, saved, device):
        return load_trained(self.args, save_dir, saved, device)

    def loss(self, info=DistInfo(), tau=None):
        tau = getattr(self.args, "tau", 1.0) if tau is None else tau
        return MultiViewLpLoss(info, base=LpSimCLRLoss(tau=tau))

    def warning(self):
        return None

    def quick_probe(self, space, net, loss_fn, generator, batch):
        """Loss on a fresh batch and linear R^2 of each latent block from h1 (75/25 split);
        None for the R^2 where the encodings are not finite."""
        with torch.no_grad():
            blocks = space.sample(2 * batch, generator)
            loss = contrastive_loss(loss_fn, net, blocks, batch, space.views).item()
            blocks = {k: v[:batch] for k, v in blocks.items()}
            hz1 = net.encode(1, space.views(blocks)[0]).cpu().numpy()
        if not np.isfinite(hz1).all():
            return loss, None
        hz1 = probes.standardize(hz1, hz1)[0]
        r2 = {}
        for k in spaces.block_names(space.n_views):
            y = blocks[k].cpu().numpy()
            if y.shape[1]:
                x_tr, x_te, y_tr, y_te = train_test_split(hz1, y, random_state=self.args.seed)
                r2[k] = probes.linear_r2(x_tr, y_tr, x_te, y_te)
        return loss, r2

    def encode(self, space, net, loss_fn, n_batches, generator, batch):
        return encode_batches(space, net, loss_fn, n_batches, generator, self.args.permuted_content, batch)

    def evaluation(self, save_dir, val, test, device):
        """(results.csv's table, {other file: table}, other fields of evaluation.json), printed."""
        args = self.args
        if args.estimate_content_size:  # before results.csv, which marks a finished evaluation
            size_estimates.write(save_dir, {f"hz{k}": test[f"hz{k}"] for k in range(1, args.n_views + 1)},
                                 args.content_n)
        results = probe_results(args, val, test, device)
        print("Regression results:")
        print(results.to_string(index=False))
        if not args.permuted_content:
            print(verdict(results, independent=not dependencies.enabled(args)))
        return results, {}, {"mcc": content_mcc(test, args.n_views)}


def build_latent_space(args, train_seed, device, saved_params=None):
    params = saved_params if saved_params is not None else spaces.draw_parameters(
        train_seed, args.content_n, args.style_n, args.modality_n, [d.key for d in dependencies.enabled(args)],
        args.independent_covariances, n_views=args.n_views)
    discrete = {block: getattr(args, key) for block, key in DISCRETE_KEYS.items()}
    return spaces.LatentSpace(args.content_n, args.style_n, args.modality_n, args.style_change_prob,
                              args.c_param, args.m_param, params, device, discrete, args.n_views)


def build_encoders(args, dim):
    """g1, ..., gK (one shared network with --shared-encoder)."""
    def new():
        return simulation_encoder(dim, args.encoding_size, args.encoder_init)
    encoders = [new()]
    for _ in range(1, args.n_views):
        encoders.append(encoders[0] if args.shared_encoder else new())
    return encoders


def load_trained(args, save_dir, saved, device):
    """(latent space, networks) of a trained model folder, ours or the published scripts'."""
    params = saved_latent_params(save_dir, args)
    if params is None:
        params = published_latent_params(args, saved, save_dir)
    space = build_latent_space(args, saved["seed"], device, params)
    return space, load_networks(args, save_dir, space.view_dim, device)


def load_networks(args, save_dir, dim, device):
    """The saved f1.pt, ..., g1.pt, ... (a shared network is loaded from its first file)."""
    views = range(1, args.n_views + 1)
    mixings = [load_into(mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, "f1.pt"))]
    mixings += [mixings[0] if args.shared_mixing else load_into(
        mlp_shell(dim, args.n_mixing_layer), os.path.join(save_dir, f"f{k}.pt")) for k in views[1:]]
    encoders = build_encoders(args, dim)
    for k in views[:1] if args.shared_encoder else views:
        load_into(encoders[k - 1], os.path.join(save_dir, f"g{k}.pt"))
    return ViewEncoder(mixings, encoders).to(device).eval()


def saved_latent_params(save_dir, args):
    """Parameters stored at training time, or None for folders of the published scripts."""
    params = spaces.read_parameters(save_dir)
    if params is None:
        return None
    path = os.path.join(save_dir, spaces.PARAMS_FILE)
    wanted, on = {}, dependencies.enabled(args)
    for dep in dependencies.REGISTRY:
        own = {k: v for k, v in params.items() if dep.owns(k)}
        if bool(own) != (dep in on):
            raise UserError(f"{path} was saved for other settings than the ones given; "
                            "add --load-args to evaluate with the training settings")
        wanted.update(own)
    return wanted


def published_latent_params(args, saved, save_dir):
    """Rebuild a published folder's latent parameters with the published recipe.

    The published scripts drew B and a on the training device, and a CUDA
    generator gives other numbers than the CPU one, so a folder trained with
    CUDA (args.json: no_cuda false) is rebuilt on CUDA, or refused without it."""
    device = "cpu"
    if args.content_dependent_style and not saved.get("no_cuda", False) and not args.cpu_generator:
        if not torch.cuda.is_available():
            raise UserError(f"{save_dir} comes from the published scripts, trained with CUDA: its B "
                            "and a were drawn by a CUDA generator, which this machine lacks. Evaluate "
                            "it on a GPU, or add --cpu-generator if it was in fact trained on a CPU")
        device = "cuda"
    keys = [d.key for d in dependencies.enabled(args) if d.published]
    return spaces.draw_parameters(saved["seed"], args.content_n, args.style_n, args.modality_n, keys,
                                  args.independent_covariances, published=True,
                                  generator_device=device, n_views=args.n_views)


def encode_batches(space, net, loss_fn, n_batches, generator, permuted_content, batch):
    """Encodings, latent targets and mean loss of n_batches x `batch` fresh pairs (or K-tuples)."""
    out = {k: [] for k in (*targets(space.n_views), *(f"hz{k}" for k in range(1, space.n_views + 1)))}
    losses = []
    with torch.no_grad():
        for _ in range(n_batches):
            blocks = space.sample(2 * batch, generator)
            losses.append(contrastive_loss(loss_fn, net, blocks, batch, space.views).item())
            blocks = {k: v[:batch] for k, v in blocks.items()}
            content = None
            if permuted_content:
                perm = torch.randperm(batch, device=space.device, generator=generator)
                content = blocks["c"][perm]
                out["c'"].append(content.cpu().numpy())
            for name, h in net(*space.views(blocks, content)).items():
                out[name].append(h.cpu().numpy())
            for k in spaces.block_names(space.n_views):
                out[k].append(blocks[k].cpu().numpy())
    data = {k: np.concatenate(v) if v else np.zeros((n_batches * batch, 0)) for k, v in out.items()}
    return data, float(np.mean(losses))


def probe_results(args, val, test, device):
    """Every latent block predicted from every view's encoding: rows hz1 x targets, ..., hzK x targets."""
    columns = probes.result_columns(args.mlp_eval)
    rows = []
    names = targets(args.n_views)
    n_real = sum(val[k].shape[1] > 0 for k in names)
    per_encoding = n_real if args.mlp_eval else probes.krr_work_units(n_real)
    encodings = [f"hz{k}" for k in range(1, args.n_views + 1)]
    with tqdm(total=len(encodings) * per_encoding, desc="probes", unit="fit", dynamic_ncols=True) as bar:
        for enc in encodings:
            x_val, x_test = probes.standardize(val[enc], test[enc])
            scores = probes.evaluate_probes(list(columns.values()), x_val, x_test,
                                            {k: (val[k], test[k]) for k in names}, device=device,
                                            progress=bar.update)
            rows += [(enc, k, *(scores[k][probe] for probe in columns.values())) for k in names]
    return pd.DataFrame(rows, columns=["encoding", "predicted_factors", *columns])


def verdict(results, independent=True):
    """One line: does every encoding recover the content and, where the blocks are independent
    (no --statistical-dependence, no --content-dependent-style), nothing else?
    Dependent blocks are partly predictable from the content itself, so they are not judged."""
    r2 = results.dropna(subset=["r2_nonlinear"])
    content = r2[r2.predicted_factors == "c"].r2_nonlinear.min()
    others = r2[~r2.predicted_factors.isin(("c", "c'"))].r2_nonlinear.max() if independent else float("nan")
    found = content >= CONTENT_FOUND and not others > NOTHING_ELSE
    rule = f"content >= {CONTENT_FOUND}" + (f", every other block <= {NOTHING_ELSE}" if independent else "")
    seen = f"content at least {content:.3f}" + (f", other blocks at most {others:.3f}" if others == others else "")
    return f"Verdict: {'as the theory predicts' if found else 'NOT as the theory predicts'} ({rule}; nonlinear R²: {seen})"


def content_mcc(test, n_views):
    """{"hz1": {"pearson": MCC, "spearman": MCC}, ...}: the content c against each view's whole
    encoding on the test set (probes.mcc; see docs/partial.md for what it can and cannot show)."""
    return {f"hz{k}": {method: probes.mcc(test["c"], test[f"hz{k}"], method)
                       for method in ("pearson", "spearman")} for k in range(1, n_views + 1)}
