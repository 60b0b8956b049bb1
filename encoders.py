"""Encoders: the simulation's MLP and its views' networks, the image/text experiment's image and text encoders."""
from contextlib import nullcontext

import torch
from torch import nn


def get_mlp(n_in, n_out, layers, output_normalization=None, slope=0.01):
    """Fully connected encoder: Linear layers of widths `layers` with LeakyReLU between.

    An `nn.Sequential` of alternating Linear/LeakyReLU modules, so the state dict
    keys are 0.weight, 0.bias, 2.weight, ... as in the published checkpoints.
    """
    modules, width = [], n_in
    for hidden in layers:
        modules += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope=slope)]
        width = hidden
    modules.append(nn.Linear(width, n_out))
    if output_normalization is not None:
        raise ValueError(f"unsupported output_normalization: {output_normalization}")
    return nn.Sequential(*modules)


def simulation_encoder(latent_dim, encoding_size, init="torch"):
    """The paper's simulation encoder: hidden widths [10d, 50d, 50d, 50d, 50d, 10d].

    init "torch" keeps torch's default Linear initialisation (the published
    scripts'); "kaiming" re-draws the weights with He et al.'s variance for
    leaky ReLU and zeroes the biases (kaiming_init_); "orthogonal" draws
    (semi-)orthogonal weights with the same gain and zero biases (orthogonal_init_);
    "whitened" is kaiming here, its first layer then whitened by the caller with
    sample inputs (whiten_first_layer_)."""
    d = latent_dim
    net = get_mlp(d, encoding_size, [10 * d, 50 * d, 50 * d, 50 * d, 50 * d, 10 * d])
    if init in ("kaiming", "whitened"):
        return kaiming_init_(net)
    return orthogonal_init_(net) if init == "orthogonal" else net


def kaiming_init_(net, slope=0.01):
    """Variance-preserving weights for a LeakyReLU MLP, zero biases, in place.

    torch's default draws weights with a third of this variance, so the seven
    layers start out shrinking the spread of their input; what that does to
    training: REPRODUCTION.md, "Quick-scale settings, and why"."""
    for module in net:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(module.bias)
    return net


class ViewEncoder(nn.Module):
    """h_k = g_k o f_k for every view k of the simulation as one module, so that DDP wraps all
    encoders once.

    Keyed f1, g1, f2, g2, ... (shared networks appear under several keys);
    forward takes the K views and returns {"hz1": h1(z1), ..., "hzK": hK(zK)}, float32.
    `autocast` (a context factory: --precision while training) covers the encoders only:
    the mixing functions make the observations in float32."""

    def __init__(self, mixings, encoders):
        super().__init__()
        self.nets = nn.ModuleDict()
        for k, (f, g) in enumerate(zip(mixings, encoders), 1):
            self.nets[f"f{k}"], self.nets[f"g{k}"] = f, g
        self.n_views = len(encoders)

    def encoders(self):
        """{"g1": g1, ...}: the trained networks, under their checkpoint names."""
        return {f"g{k}": self.nets[f"g{k}"] for k in range(1, self.n_views + 1)}

    def mixings(self):
        return {f"f{k}": self.nets[f"f{k}"] for k in range(1, self.n_views + 1)}

    def encode(self, view, z, autocast=nullcontext):
        x = self.nets[f"f{view}"](z)
        with autocast():
            return self.nets[f"g{view}"](x).float()

    def forward(self, *views, autocast=nullcontext):
        names = [f"hz{k}" for k in range(1, self.n_views + 1)]
        if len(set(map(id, self.mixings().values()))) == 1 and len(set(map(id, self.encoders().values()))) == 1:
            return dict(zip(names, self.encode(1, torch.cat(views), autocast).chunk(self.n_views)))  # one pass
        return {name: self.encode(k, z, autocast) for k, (name, z) in enumerate(zip(names, views), 1)}


def contrastive_loss(loss_fn, net, blocks, n, views, autocast=nullcontext):
    """The loss (a losses.MultiViewLpLoss, or partial.SetLoss) of the first n tuples of `blocks`
    against the rest as negatives, through `net` (a ViewEncoder, or its DDP wrapper); tuples
    and negatives go through each network in one pass. `views`: the space's cut of blocks
    into views."""
    return loss_fn(list(net(*views(blocks), autocast=autocast).values()), n)


# ---------------------------------------------------------------------------
# Image/text experiment

import torch.nn.functional as F  # noqa: E402

TEXT_ENCODERS = ("conv", "gru")
PAD_INDEX = 0  # the `{pad}` token (datasets.PAD)


def image_encoder(hidden_size, encoding_size):
    """ResNet-18 (random init, `num_classes=hidden_size`) -> LeakyReLU -> Linear.

    An `nn.Sequential`, so the keys (0.conv1.weight, ..., 2.weight, 2.bias) are
    those of the published checkpoints (after removing DataParallel's `module.`).
    Works for any image size (ResNet ends in adaptive average pooling).
    """
    from torchvision.models import resnet18  # imported here: the simulation does not need it (1 s)
    return nn.Sequential(resnet18(num_classes=hidden_size), nn.LeakyReLU(),
                         nn.Linear(hidden_size, encoding_size))


class TokenEmbedding(nn.Linear):
    """A Linear layer on one-hot token vectors, computed as an embedding lookup.

    Parameters (weight: dim x vocab_size, bias: dim) and initialisation are
    those of `nn.Linear(vocab_size, dim)`, the published layer, so published
    checkpoints load. Integer token indices (..., L) are looked up in
    weight.T, which equals multiplying their one-hot vectors by the weight but
    never builds them; float inputs (one-hot or soft, ..., L, vocab_size) go
    through the plain linear map.
    """

    def forward(self, x):
        if x.is_floating_point():
            return F.linear(x, self.weight, self.bias)
        return F.embedding(x, self.weight.t()) + self.bias

    def pad_vector(self):
        """The embedding of the `{pad}` token."""
        return self.weight[:, PAD_INDEX] + self.bias


def _conv_out(n):
    """Size after Conv2d(kernel 4, stride 2, padding 1)."""
    return (n + 2 - 4) // 2 + 1


class TextEncoder2D(nn.Module):
    """The paper's conv text encoder ("4-layer ConvNet") for any sequence length.

    Token embedding to `embedding_dim`, viewed as a 1-channel
    sequence_length x embedding_dim image; three Conv2d(4, stride 2, padding 1)
    with fbase, 2 fbase, 4 fbase channels, each followed by BatchNorm2d and
    ReLU; flatten; Linear to `output_size`. Module names and parameter shapes
    are those of the published encoder: for sequence lengths 24..31 (the only
    ones it accepted) the flattened size is 100 x 3 x 16 = 4800 and published
    weights load and give the same outputs. For other lengths the flattened
    size follows from the length. Sequences shorter than 8 tokens are padded
    with `{pad}` embeddings to 8 (three stride-2 convolutions need 8 rows), and
    inputs shorter than `sequence_length` are padded to it the same way, which
    is exactly what padding the token sequence with `{pad}` would give.
    """

    MIN_ROWS = 8

    def __init__(self, input_size, output_size, sequence_length, embedding_dim=128, fbase=25):
        super().__init__()
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length}")
        if embedding_dim < self.MIN_ROWS:
            raise ValueError(f"embedding_dim must be at least {self.MIN_ROWS}, got {embedding_dim}")
        self.sequence_length = sequence_length
        self.fbase = fbase
        self.embedding = TokenEmbedding(input_size, embedding_dim)
        self.convnet = nn.Sequential(
            nn.Conv2d(1, fbase, 4, 2, 1, bias=True),
            nn.BatchNorm2d(fbase),
            nn.ReLU(True),
            nn.Conv2d(fbase, fbase * 2, 4, 2, 1, bias=True),
            nn.BatchNorm2d(fbase * 2),
            nn.ReLU(True),
            nn.Conv2d(fbase * 2, fbase * 4, 4, 2, 1, bias=True),
            nn.BatchNorm2d(fbase * 4),
            nn.ReLU(True),
        )
        self.rows = max(sequence_length, self.MIN_ROWS)
        h, w = self.rows, embedding_dim
        for _ in range(3):
            h, w = _conv_out(h), _conv_out(w)
        self.ldim = fbase * 4 * h * w
        self.linear = nn.Linear(self.ldim, output_size)

    def forward(self, x):
        length = x.shape[1]
        if length > self.sequence_length:
            raise ValueError(f"text of {length} tokens is longer than this encoder's "
                             f"sequence_length {self.sequence_length}")
        e = self.embedding(x)  # batch x length x embedding_dim
        if length < self.rows:
            pad = self.embedding.pad_vector().expand(e.shape[0], self.rows - length, -1)
            e = torch.cat((e, pad), dim=1)
        h = self.convnet(e.unsqueeze(1))
        return self.linear(h.flatten(1))


class TextEncoderGRU(nn.Module):
    """Token embedding -> GRU over the tokens up to `{eos}` -> Linear on the last hidden state.

    Trailing `{pad}` tokens are skipped (packed sequences), so the encoding
    does not depend on how far a sentence is padded.
    """

    def __init__(self, input_size, output_size, embedding_dim=128, hidden_size=128):
        super().__init__()
        self.embedding = TokenEmbedding(input_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, batch_first=True)
        self.linear = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        tokens = x.argmax(-1) if x.is_floating_point() else x
        content = tokens != PAD_INDEX
        length = tokens.shape[1]
        # length up to the last non-pad token (at least 1)
        lengths = torch.where(content.any(1), length - content.flip(1).int().argmax(1),
                              torch.ones_like(content[:, 0], dtype=torch.long))
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(x), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.linear(h[-1])


def text_encoder(kind, vocab_size, encoding_size, sequence_length):
    """The text encoder of `--text-encoder kind` ("conv" or "gru")."""
    if kind == "conv":
        return TextEncoder2D(vocab_size, encoding_size, sequence_length)
    if kind == "gru":
        return TextEncoderGRU(vocab_size, encoding_size)
    raise ValueError(f"unknown text encoder {kind!r}; choose from {', '.join(TEXT_ENCODERS)}")


def orthogonal_init_(net, slope=0.01):
    """(Semi-)orthogonal weights times leaky ReLU's gain, zero biases, in place.

    Every singular value of a layer's weight is the gain, so the deep encoder
    starts with a well-conditioned Jacobian (Saxe et al., 2014), not only with
    the right average variance as kaiming_init_."""
    gain = nn.init.calculate_gain("leaky_relu", slope)
    for module in net:
        if isinstance(module, nn.Linear):
            nn.init.orthogonal_(module.weight, gain=gain)
            nn.init.zeros_(module.bias)
    return net


def whiten_first_layer_(net, x, eps=1e-6):
    """Fold the ZCA whitening of the sample inputs x (rows) into the first Linear, in place.

    The layer then sees centred inputs of unit variance in every direction: the
    mixed views' covariance spans about three orders of magnitude (smallest
    directions 1e-3 of the largest's variance), and gradient steps learn a
    direction at a rate proportional to its variance. Only the initial weights
    change; the layer stays a plain Linear."""
    x = x.double()
    d = x.shape[1]
    evals, evecs = torch.linalg.eigh(torch.cov(x.T).reshape(d, d))  # one column: cov is a scalar
    zca = evecs @ torch.diag(evals.clamp_min(eps).rsqrt()) @ evecs.T
    first = net[0]
    with torch.no_grad():
        weight = first.weight.double() @ zca
        first.weight.copy_(weight)
        first.bias.copy_(-(weight @ x.mean(0)))
    return net
