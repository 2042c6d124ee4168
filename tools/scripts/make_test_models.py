#!/usr/bin/python3
"""Writes the small TorchScript fixtures the tests use to tests/fixtures/.

Usage: /usr/bin/python3 tools/scripts/make_test_models.py [outdir]
"""
import os
import sys

import torch
import warnings


class GaussianEps(torch.nn.Module):
    """Exact noise prediction of the diagonal Gaussian N(mean, diag(var)) under
    vp_linear (beta_0 = 0.1, beta_1 = 20): eps = (x - alpha x0) / sigma with the
    posterior mean x0 = mean + alpha var / (alpha^2 var + sigma^2) (x - alpha mean)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]]))
        self.register_buffer("var", torch.tensor([[1.0, 0.25, 4.0], [0.5, 2.0, 0.1]]))

    def forward(self, x, t):
        t = t.view(-1, 1, 1)
        log_alpha = -0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
        x0 = self.mean + alpha * self.var / (alpha * alpha * self.var + sigma * sigma) * (x - alpha * self.mean)
        return (x - alpha * x0) / sigma


class GaussianVelocity(GaussianEps):
    """Exact velocity of the same diagonal Gaussian under rectified flow, x_t = (1 - t) x0 + t z
    (schedule.type: flow, model.prediction: velocity, time_input: t): v = E[z | x_t] - E[x0 | x_t]
    with V = (1 - t)^2 var + t^2, E[z | x_t] = t (x_t - (1 - t) mean) / V and E[x0 | x_t] =
    mean + (1 - t) var (x_t - (1 - t) mean) / V, finite at t = 0 and t = 1. The buffers are
    float64, so a float64 run matches the closed form to round-off."""

    def __init__(self):
        super().__init__()
        self.mean = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]], dtype=torch.float64)
        self.var = torch.tensor([[1.0, 0.25, 4.0], [0.5, 2.0, 0.1]], dtype=torch.float64)

    def forward(self, x, t):
        t = t.view(-1, 1, 1)
        a = 1.0 - t
        r = (x - a * self.mean) / (a * a * self.var + t * t)
        return t * r - (self.mean + a * self.var * r)


class GaussianEnergy(GaussianEps):
    """GaussianEps plus energy(x, t) = -log p_t(x) up to a constant: the marginal is
    N(alpha mean, alpha^2 var + sigma^2) per coordinate."""

    @torch.jit.export
    def energy(self, x, t):
        t = t.view(-1, 1, 1)
        log_alpha = -0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
        v = alpha * alpha * self.var + sigma * sigma
        e = 0.5 * (x - alpha * self.mean) ** 2 / v + 0.5 * torch.log(v)
        return e.sum(dim=(1, 2))


class GmmClassifier(torch.nn.Module):
    """Exact noise-conditional classifier of two diagonal Gaussians (classes 0 and 1, weights
    0.4 and 0.6, samples [2, 3]) under vp_linear: logits_c = log pi_c + log N(x; alpha mu_c,
    alpha^2 var_c + sigma^2)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([[[1.0, -0.5, 0.0], [0.5, 1.5, -1.0]],
                                                   [[-1.0, 0.5, 0.5], [0.0, -1.0, 1.0]]]))
        self.register_buffer("var", torch.tensor([[[0.5, 0.3, 0.8], [0.4, 0.6, 0.2]],
                                                  [[0.3, 0.7, 0.4], [0.9, 0.2, 0.5]]]))
        self.register_buffer("log_w", torch.log(torch.tensor([0.4, 0.6])))

    def forward(self, x, t):
        t = t.view(-1, 1, 1, 1)
        log_alpha = -0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
        v = alpha * alpha * self.var + sigma * sigma  # [B, 2, 2, 3]
        d = x.unsqueeze(1) - alpha * self.mean
        return self.log_w - 0.5 * (d * d / v + torch.log(v)).sum(dim=(2, 3))


class UniformTokens(torch.nn.Module):
    """Token denoiser forward(tokens [B, 4], t [B]) -> log-probabilities [B, 4, 5], uniform."""

    def forward(self, tokens, t):
        return torch.full((tokens.shape[0], 4, 5), -1.6094379124341003)


class ClassTokens(torch.nn.Module):
    """Class-conditional token denoiser forward(tokens [B, 4], t [B], labels [B]) ->
    log-probabilities [B, 4, 5]: class c (0 or 1) puts almost all mass on token c at every
    position, the null label 2 is uniform."""

    def forward(self, tokens, t, labels):
        table = torch.full((3, 5), -30.0)
        table[0, 0] = 0.0
        table[1, 1] = 0.0
        table[2] = 0.0
        logits = table[labels].unsqueeze(1).expand(tokens.shape[0], 4, 5)
        return torch.log_softmax(logits, -1)


class PromptTokens(torch.nn.Module):
    """Prompt-conditional token denoiser forward(tokens [B, 4], t [B], context [B, 5, 8]) ->
    log-probabilities [B, 4, 5] (mask id 5), with tiny_text's context: logits = W . context
    plus a term in the unmasked tokens, float64 weights, so that guidance's combination of two
    contexts is not the network's output at any one context."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(40, 20, dtype=torch.float64))

    def forward(self, tokens, t, context):
        if context.dim() != 3 or context.size(1) != 5 or context.size(2) != 8:
            raise RuntimeError("context must be [B, 5, 8]")
        logits = (context.reshape(context.size(0), 40).to(torch.float64) @ self.w).view(-1, 4, 5)
        known = (tokens != 5).to(torch.float64).sum(1).view(-1, 1, 1)
        return torch.log_softmax(logits + 0.5 * torch.tanh(logits) * known, -1)


class BlockCausalTokens(torch.nn.Module):
    """A block-causal token denoiser with a prefix cache (BD3-LM style), float64: 5 tokens
    (mask id 5), any length up to 16, blocks of 4 positions; one attention layer in which a
    position sees its own block and the blocks before it. forward(tokens, t) is the whole
    sequence; prefix_cache(prefix) gives the prefix's keys and values [B, 2, P, 16], and
    forward_block(block, t, cache, start) the predictions of one block from them, equal to
    forward's on that block to round-off."""

    block_size: int

    def __init__(self):
        super().__init__()
        self.block_size = 4
        self.register_buffer("emb", torch.randn(6, 16, dtype=torch.float64))
        self.register_buffer("pos", torch.randn(16, 16, dtype=torch.float64))
        self.register_buffer("wq", torch.randn(16, 16, dtype=torch.float64) / 4)
        self.register_buffer("wk", torch.randn(16, 16, dtype=torch.float64) / 4)
        self.register_buffer("wv", torch.randn(16, 16, dtype=torch.float64) / 4)
        self.register_buffer("out", torch.randn(16, 5, dtype=torch.float64))

    def hidden(self, tokens, start: int):
        return self.emb[tokens] + self.pos[start:start + tokens.size(1)].unsqueeze(0)

    def attend(self, h, k, v, allowed):
        a = (h @ self.wq) @ k.transpose(1, 2) / 4.0
        w = torch.softmax(a.masked_fill(~allowed, float("-inf")), -1)
        return torch.log_softmax((h + w @ v) @ self.out, -1)

    def allowed(self, start: int, queries: int, keys: int):
        """query i (position start + i) sees key j if j's block is not after i's"""
        q = (torch.arange(queries) + start) // self.block_size
        return (q.view(-1, 1) >= (torch.arange(keys) // self.block_size).view(1, -1)).unsqueeze(0)

    def forward(self, tokens, t):
        h = self.hidden(tokens, 0)
        return self.attend(h, h @ self.wk, h @ self.wv, self.allowed(0, tokens.size(1), tokens.size(1)))

    @torch.jit.export
    def prefix_cache(self, prefix):
        h = self.hidden(prefix, 0)
        return torch.stack([h @ self.wk, h @ self.wv], 1)

    @torch.jit.export
    def forward_block(self, block, t, cache, start: int):
        h = self.hidden(block, start)
        k = torch.cat([cache[:, 0], h @ self.wk], 1)
        v = torch.cat([cache[:, 1], h @ self.wv], 1)
        return self.attend(h, k, v, self.allowed(start, block.size(1), k.size(1)))


class TemperedTokens(torch.nn.Module):
    """Token denoiser over 5 tokens (mask id 5), any length: every masked position gets
    softmax(beta z), z = (-1.5, -0.75, 0, 0.75, 1.5), beta = 1 + (fraction of unmasked positions).
    Its predictions sharpen as tokens are revealed by a known law, so the LSD coefficient that
    matches a teacher's later predictions is known in closed form (tests/test_cli.cpp)."""

    def forward(self, tokens, t):
        unmasked = (tokens != 5).to(torch.float32).mean(1)
        beta = (1.0 + unmasked).view(-1, 1, 1)
        z = torch.linspace(-1.5, 1.5, 5).view(1, 1, 5)
        return torch.log_softmax(beta * z, -1).expand(tokens.shape[0], tokens.shape[1], 5).contiguous()


class EchoTime(torch.nn.Module):
    """Returns its time input broadcast to x: shows what the engine passes as t."""

    def forward(self, x, t):
        return torch.zeros_like(x) + t.view(-1, 1, 1).to(x.dtype)


class Warns(torch.nn.Module):
    """eps = 0 (the standard Gaussian's) with a Python warning at every call: LibTorch's own
    printing, which the CLI collects into a note."""

    def forward(self, x, t):
        warnings.warn("this fixture always warns")
        return torch.zeros_like(x)


class EchoCond(torch.nn.Module):
    """Conditional: returns the class label broadcast to x."""

    def forward(self, x, t, cond):
        return torch.zeros_like(x) + cond.view(-1, 1, 1).to(x.dtype)


class TensorCond(torch.nn.Module):
    """Declared inputs the way SD / Flux networks take them: forward(x [B, 2, 3], t,
    context [B, 3, 4], guidance [B]); eps = 0.5 x + guidance t tanh(context W), float64
    weights, nonlinear in the context so that guidance's combination is not the network's."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(12, 6, dtype=torch.float64))

    def forward(self, x, t, context, guidance):
        if context.dim() != 3 or context.size(1) != 3 or context.size(2) != 4:
            raise RuntimeError("context must be [B, 3, 4]")
        h = torch.tanh(context.reshape(context.size(0), 12).to(self.w.dtype) @ self.w).view(-1, 2, 3)
        g = guidance.view(-1, 1, 1).to(x.dtype) * t.view(-1, 1, 1).to(x.dtype)
        return 0.5 * x + g * h.to(x.dtype)


class TinyText(torch.nn.Module):
    """A text encoder for tests: tokens [B, 5] -> (context [B, 5, 8], pooled [B, 8]), an
    embedding table (30 tokens) through tanh, float64."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(30, 8, dtype=torch.float64))

    def forward(self, tokens):
        if tokens.dim() != 2 or tokens.size(1) != 5:
            raise RuntimeError("tokens must be [B, 5]")
        h = torch.tanh(self.table[tokens] + 0.1 * torch.arange(5, dtype=torch.float64).view(1, 5, 1))
        return h, h.mean(1)


class LatentEps(torch.nn.Module):
    """A latent denoiser for tests: x [B, 2, H, W], context [B, 5, 8] -> eps = 0.5 x +
    t tanh(pooled context W) per channel, any H and W."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(8, 2, dtype=torch.float64))

    def forward(self, x, t, context):
        g = torch.tanh(context.mean(1).to(self.w.dtype) @ self.w).to(x.dtype).view(-1, 2, 1, 1)
        return 0.5 * x + t.view(-1, 1, 1, 1).to(x.dtype) * g


class TinyDecoder(torch.nn.Module):
    """Latents [B, 2, H, W] -> images [B, 1, 2H, 2W]: a 3x3 convolution, nearest upsampling,
    a 3x3 convolution (a receptive field of about two latent cells), float64."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(2, 3, 3, padding=1).double()
        self.b = torch.nn.Conv2d(3, 1, 3, padding=1).double()

    def forward(self, z):
        h = torch.tanh(self.a(z))
        return self.b(torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))


class TinyEncoder(torch.nn.Module):
    """Images [B, 1, 2H, 2W] -> latents [B, 2, H, W]: 2x2 average pooling, a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 2, 1).double()

    def forward(self, x):
        return self.a(torch.nn.functional.avg_pool2d(x, 2))


class WrongArity(torch.nn.Module):
    def forward(self, x):
        return x


class WrongShape(torch.nn.Module):
    def forward(self, x, t):
        return x[:, :1]


class NanOutput(torch.nn.Module):
    def forward(self, x, t):
        return x * float("nan")


class LateNan(torch.nn.Module):
    """Finite for t >= 0.3 (so the load-time dry run passes), NaN below."""

    def forward(self, x, t):
        bad = (t < 0.3).view(-1, 1, 1)
        return torch.where(bad, torch.full_like(x, float("nan")), x * 0.1)


class TimeDtypeProbe(torch.nn.Module):
    """Returns 1 where its time input arrives as float32, else 0: shows the dtype of t."""

    def forward(self, x, t):
        return torch.zeros_like(x) + (1.0 if t.dtype == torch.float32 else 0.0)


class Float32Layers(torch.nn.Module):
    """Casts its input to float32 before a linear layer: it fails when its weights are
    moved to a 16-bit model.dtype, as a network whose time embedding stays float32 does."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x, t):
        return self.lin(x.float())


class VectorClassifier(torch.nn.Module):
    """A classifier of 4-d vectors for `scorch eval` on non-image samples: features(x) = x,
    logits (x_0, -x_0) (label 0 where x_0 > 0); anything but [N, 4] is refused."""

    def check(self, x):
        if x.dim() != 2 or x.size(1) != 4:
            raise RuntimeError("expects [N, 4]")

    @torch.jit.export
    def features(self, x):
        self.check(x)
        return x

    def forward(self, x):
        self.check(x)
        return torch.stack([x[:, 0], -x[:, 0]], 1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    only = set(sys.argv[2:])  # fixture names to write (default: all)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, module in [("gaussian_eps", GaussianEps()), ("gaussian_velocity", GaussianVelocity()), ("gaussian_energy", GaussianEnergy()),
                         ("gmm_classifier", GmmClassifier()), ("uniform_tokens", UniformTokens()), ("class_tokens", ClassTokens()), ("tempered_tokens", TemperedTokens()), ("echo_time", EchoTime()), ("echo_cond", EchoCond()), ("tensor_cond", TensorCond()),
                         ("tiny_text", TinyText()), ("latent_eps", LatentEps()), ("tiny_decoder", TinyDecoder()),
                         ("tiny_encoder", TinyEncoder()),
                         ("wrong_arity", WrongArity()), ("wrong_shape", WrongShape()),
                         ("nan_output", NanOutput()), ("late_nan", LateNan()),
                         ("time_dtype_probe", TimeDtypeProbe()), ("float32_layers", Float32Layers()),
                         ("vector_classifier", VectorClassifier()), ("warns", Warns()), ("prompt_tokens", PromptTokens()),
                         ("block_causal_tokens", BlockCausalTokens())]:
        if only and name not in only:
            continue
        torch.jit.save(torch.jit.script(module.eval()), os.path.join(out, name + ".pt"))
    with open(os.path.join(out, "not_a_model.pt"), "w") as f:
        f.write("this is not a TorchScript archive\n")
    print("wrote fixtures to", out)


if __name__ == "__main__":
    main()
