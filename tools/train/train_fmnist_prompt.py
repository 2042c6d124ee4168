#!/usr/bin/python3
"""Trains the Fashion-MNIST text-to-image model in two stages and exports four TorchScript
files, the parts of a latent text-to-image pipeline (an SD3 / Flux in miniature):

1. An autoencoder from 1x28x28 images to 8x7x7 latents (MSE, a small latent penalty):
   `<prefix>_encoder.pt` forward(image) -> latent and `<prefix>_decoder.pt`
   forward(latent) -> image. The latents' mean and standard deviation over the training
   set give the shift and scale factors (printed, for the config): the flow model works on
   z = (encoder(x) - shift) * scale, the decoder gets z / scale + shift (Flux's convention).
2. A character-level text encoder (`<prefix>_text_encoder.pt`, forward(tokens [B, 32]
   int64) -> context [B, 32, 64]: embeddings, positions, two transformer layers) trained
   jointly with a rectified-flow latent denoiser (`<prefix>_flow.pt`, forward(x [B, 8, 7, 7],
   t, context) -> velocity: residual blocks at 7x7, time and pooled-text embeddings, two
   cross-attention layers). Prompts are the class paraphrases of prompts.py, replaced by the
   empty prompt with probability 0.1 (the negative prompt of classifier-free guidance).
   Rectified flow as in train_fmnist_flow.py: x_t = (1 - t) x0 + t z, velocity z - x0,
   logit-normal t, the network gets 1000 t.

With --decoder-only the script trains just a new, possibly wider decoder for the fixed
encoder (stage 1 without its encoder half): the latents do not change, so the shipped flow and
the config's shift and scale stay valid.

Usage: /usr/bin/python3 tools/train/train_fmnist_prompt.py [--ae-iters N] [--iters N]
       [--prefix models/fmnist_prompt]
       /usr/bin/python3 tools/train/train_fmnist_prompt.py --decoder-only --decoder-width 64
       [--decoder-iters N] [--prefix models/fmnist_prompt]
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_data  # noqa: E402
import prompts  # noqa: E402
from train_fmnist_unet import ResBlock, timestep_embedding  # noqa: E402

# Latent channels: with 4 (196 numbers per image) the reconstructions alone had FD 11.9
# against the test set, above what the pixel-space flow model reaches; 8 halves the compression.
LATENT = 8


class Encoder(nn.Module):
    def __init__(self, ch=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU(),          # 14
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU(),      # 7
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * ch, LATENT, 1))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, ch=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(LATENT, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),                     # 14
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),                     # 28
            nn.Conv2d(2 * ch, ch, 3, padding=1), nn.SiLU(),
            nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, z):
        return self.net(z)


class TextEncoder(nn.Module):
    def __init__(self, dim=64, length=prompts.LENGTH, vocab=len(prompts.CHARS) + 1):
        super().__init__()
        self.length = length
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens):
        if tokens.dim() != 2 or tokens.size(1) != self.length:
            raise RuntimeError("tokens must be [B, 32]")
        return self.norm(self.layers(self.tok(tokens) + self.pos))


class CrossAttention(nn.Module):
    def __init__(self, ch, ctx_dim):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        # Torch 1.13's scripted MultiheadAttention fails when kdim differs from the width (its
        # packed in_proj_weight is None then), so a wider network projects the context first.
        self.ctx = nn.Identity() if ctx_dim == ch else nn.Linear(ctx_dim, ch)
        self.attn = nn.MultiheadAttention(ch, 4, kdim=ch, vdim=ch, batch_first=True)

    def forward(self, h, context):
        b, c, hh, ww = h.shape
        q = self.norm(h).flatten(2).transpose(1, 2)
        ctx = self.ctx(context.to(q.dtype))
        out, _ = self.attn(q, ctx, ctx, need_weights=False)
        return h + out.transpose(1, 2).reshape(b, c, hh, ww)


class SelfAttention(nn.Module):
    """Attention across the 49 latent positions: the convolutions mix neighbours only, while
    at high noise the velocity depends on the whole image. The output projection starts at
    zero, so adding these layers to a trained network leaves its function unchanged
    (--init-from) and training grows them from there."""

    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        self.attn = nn.MultiheadAttention(ch, 4, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, h):
        b, c, hh, ww = h.shape
        q = self.norm(h).flatten(2).transpose(1, 2)
        out, _ = self.attn(q, q, q, need_weights=False)
        return h + out.transpose(1, 2).reshape(b, c, hh, ww)


class LatentFlow(nn.Module):
    def __init__(self, ch=64, emb=128, ctx_dim=64, self_attention=False):
        super().__init__()
        self.emb_dim = emb
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.pool = nn.Linear(ctx_dim, emb)
        self.inp = nn.Conv2d(LATENT, ch, 3, padding=1)
        self.b1, self.b2 = ResBlock(ch, ch, emb), ResBlock(ch, ch, emb)
        self.b3, self.b4 = ResBlock(ch, ch, emb), ResBlock(ch, ch, emb)
        self.a1, self.a2 = CrossAttention(ch, ctx_dim), CrossAttention(ch, ctx_dim)
        self.s1 = SelfAttention(ch) if self_attention else nn.Identity()
        self.s2 = SelfAttention(ch) if self_attention else nn.Identity()
        self.out_norm = nn.GroupNorm(8, ch)
        self.out = nn.Conv2d(ch, LATENT, 3, padding=1)

    def forward(self, x, t, context):
        if context.dim() != 3 or context.size(1) != prompts.LENGTH or context.size(2) != 64:
            raise RuntimeError("context must be [B, 32, 64]")
        e = self.time_mlp(timestep_embedding(t, self.emb_dim).to(x.dtype)) + self.pool(context.mean(1).to(x.dtype))
        h = self.inp(x)
        h = self.s1(self.a1(self.b1(h, e), context))
        h = self.b2(h, e)
        h = self.s2(self.a2(self.b3(h, e), context))
        h = self.b4(h, e)
        return self.out(F.silu(self.out_norm(h)))


def ema_update(ema, model, it):
    with torch.no_grad():
        decay = min(0.999, (1 + it) / (10 + it))
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(decay).add_(pm, alpha=1 - decay)


def export_stage2(ema_text, ema_flow, prefix):
    torch.jit.save(torch.jit.script(ema_text.eval()), prefix + "_text_encoder.pt")
    torch.jit.save(torch.jit.script(ema_flow.eval()), prefix + "_flow.pt")


def train_autoencoder(args, x_all):
    enc, dec = Encoder(), Decoder()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.ae_iters, pct_start=0.05)
    print(f"autoencoder: {sum(p.numel() for p in params)} params, {args.ae_iters} iters", flush=True)
    start, running = time.time(), 0.0
    for it in range(1, args.ae_iters + 1):
        x = x_all[torch.randint(0, x_all.shape[0], (args.batch,))]
        z = enc(x)
        rec = F.mse_loss(dec(z), x)
        loss = rec + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * rec.item() if it > 1 else rec.item()
        if it % 100 == 0 or it == args.ae_iters:
            print(f"ae iter {it} mse {running:.5f} elapsed {time.time() - start:.0f}s", flush=True)
    return enc.eval(), dec.eval()


def train_decoder(args, enc, x_all):
    """A new decoder for a fixed encoder (as Stable Diffusion's ft-MSE VAE decoder was made):
    the latent space, its shift and scale, and every flow trained on it stay valid, so the
    decoder can be wider and trained longer than the joint autoencoder stage allowed."""
    dec = Decoder(ch=args.decoder_width)
    opt = torch.optim.AdamW(dec.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.decoder_iters, pct_start=0.05)
    print(f"decoder (encoder fixed): {sum(p.numel() for p in dec.parameters())} params, "
          f"{args.decoder_iters} iters", flush=True)
    lat = fmnist_data.batched(enc, x_all)
    start, running = time.time(), 0.0
    for it in range(1, args.decoder_iters + 1):
        idx = torch.randint(0, x_all.shape[0], (args.batch,))
        rec = F.mse_loss(dec(lat[idx]), x_all[idx])
        opt.zero_grad(set_to_none=True)
        rec.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0)
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * rec.item() if it > 1 else rec.item()
        if it % 100 == 0 or it == args.decoder_iters:
            print(f"decoder iter {it} mse {running:.5f} elapsed {time.time() - start:.0f}s", flush=True)
    return dec.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae-iters", type=int, default=3000)
    ap.add_argument("--iters", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefix", default="models/fmnist_prompt")
    ap.add_argument("--width", type=int, default=64, help="channels of the latent flow's blocks")
    ap.add_argument("--reuse-autoencoder", action="store_true",
                    help="load PREFIX_encoder.pt / PREFIX_decoder.pt instead of training them (stage 2 only)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="train only a new decoder for the fixed PREFIX_encoder.pt and write PREFIX_decoder.pt "
                         "(no stage 2)")
    ap.add_argument("--decoder-iters", type=int, default=6000)
    ap.add_argument("--decoder-width", type=int, default=32, help="channels of the decoder (twice that at 7x7 and 14x14)")
    ap.add_argument("--self-attention", action="store_true",
                    help="a self-attention layer after each cross-attention layer of the latent flow")
    ap.add_argument("--init-from", metavar="PREFIX2",
                    help="start stage 2 from the exported PREFIX2_text_encoder.pt / PREFIX2_flow.pt weights "
                         "(same width) instead of a fresh initialisation: a continuation run")
    ap.add_argument("--export-every", type=int, default=0, metavar="N",
                    help="also export the EMA text encoder and flow every N iterations (each export a "
                         "usable model, so a long run can be stopped and evaluated at any chunk)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    for name in ("iters", "ae_iters", "decoder_iters", "batch", "width", "decoder_width", "threads"):
        if getattr(args, name) <= 0:
            print(f"train_fmnist_prompt.py: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            sys.exit(2)
    if (args.reuse_autoencoder or args.decoder_only) and not os.path.isfile(args.prefix + "_encoder.pt"):
        print(f"train_fmnist_prompt.py: --prefix {args.prefix}: no file {args.prefix}_encoder.pt", file=sys.stderr)
        sys.exit(2)
    if args.decoder_only and (args.init_from or args.reuse_autoencoder):
        print("train_fmnist_prompt.py: --decoder-only trains no flow: it takes neither --init-from nor "
              "--reuse-autoencoder", file=sys.stderr)
        sys.exit(2)
    x_all, y_all = fmnist_data.load("train")

    if args.decoder_only:
        enc = torch.jit.load(args.prefix + "_encoder.pt")
        dec = train_decoder(args, enc, x_all)
        x_test, _ = fmnist_data.load("test")
        rec = fmnist_data.batched(lambda x: dec(enc(x)), x_test)
        print(f"test reconstruction mse {F.mse_loss(rec, x_test).item():.5f}", flush=True)
        torch.jit.save(torch.jit.script(dec), args.prefix + "_decoder.pt")
        print(f"wrote {args.prefix}_decoder.pt ({os.path.getsize(args.prefix + '_decoder.pt')} bytes)", flush=True)
        return
    if args.reuse_autoencoder:
        enc, dec = torch.jit.load(args.prefix + "_encoder.pt"), torch.jit.load(args.prefix + "_decoder.pt")
    else:
        enc, dec = train_autoencoder(args, x_all)
    lat = fmnist_data.batched(enc, x_all)
    x_test, _ = fmnist_data.load("test")
    rec = fmnist_data.batched(lambda x: dec(enc(x)), x_test)
    shift, scale = lat.mean().item(), 1.0 / lat.std().item()
    print(f"latents: shift_factor {shift:.6f} scale_factor {scale:.6f}; "
          f"test reconstruction mse {F.mse_loss(rec, x_test).item():.5f}", flush=True)
    if not args.reuse_autoencoder:
        torch.jit.save(torch.jit.script(enc), args.prefix + "_encoder.pt")
        torch.jit.save(torch.jit.script(dec), args.prefix + "_decoder.pt")
    z_all = (lat - shift) * scale

    # Stage 2: text encoder and latent flow, jointly.
    tokens = {c: torch.tensor([prompts.tokenize(p) for p in prompts.TRAIN[c]]) for c in range(10)}
    empty = torch.tensor(prompts.tokenize(""))
    text, flow = TextEncoder(), LatentFlow(ch=args.width, self_attention=args.self_attention)
    ema_text, ema_flow = TextEncoder(), LatentFlow(ch=args.width, self_attention=args.self_attention)
    if args.init_from:
        for part in ("_text_encoder.pt", "_flow.pt"):
            if not os.path.isfile(args.init_from + part):
                print(f"train_fmnist_prompt.py: --init-from {args.init_from}: no file {args.init_from + part}",
                      file=sys.stderr)
                sys.exit(2)
        text.load_state_dict(torch.jit.load(args.init_from + "_text_encoder.pt").state_dict())
        # strict=False: the layers the loaded network lacks (new self-attention) keep their
        # initialisation, which leaves the network's function unchanged; anything else missing
        # or unexpected is a mismatch.
        loaded = torch.jit.load(args.init_from + "_flow.pt")
        missing, unexpected = flow.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("s1.", "s2.")) for k in missing):
            print(f"train_fmnist_prompt.py: --init-from {args.init_from}: not the same network "
                  f"(missing {missing}, unexpected {unexpected})", file=sys.stderr)
            sys.exit(2)
        # The added layers must not change the loaded network's function. Eager and TorchScript
        # runs of the same weights differ by float32 rounding (about 1e-6 on outputs of size 6),
        # so the check allows 1e-5; a changed function differs by the output's own size.
        with torch.no_grad():
            x, t, c = torch.randn(4, LATENT, 7, 7), torch.rand(4) * 1000, torch.randn(4, prompts.LENGTH, 64)
            if not torch.allclose(flow(x, t, c), loaded(x, t, c), rtol=1e-5, atol=1e-5):
                print(f"train_fmnist_prompt.py: --init-from {args.init_from}: the continued network differs", file=sys.stderr)
                sys.exit(2)
        print(f"stage 2 continues from {args.init_from}_text_encoder.pt / _flow.pt", flush=True)
    ema_text.load_state_dict(text.state_dict())
    ema_flow.load_state_dict(flow.state_dict())
    params = list(text.parameters()) + list(flow.parameters())
    for p in list(ema_text.parameters()) + list(ema_flow.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.05)
    print(f"text encoder {sum(p.numel() for p in text.parameters())} params, "
          f"latent flow {sum(p.numel() for p in flow.parameters())} params, {args.iters} iters", flush=True)
    start, running = time.time(), 0.0
    for it in range(1, args.iters + 1):
        idx = torch.randint(0, z_all.shape[0], (args.batch,))
        x0, y = z_all[idx], y_all[idx]
        tok = torch.stack([tokens[int(c)][torch.randint(0, len(prompts.TRAIN[int(c)]), ())] for c in y])
        tok[torch.rand(args.batch) < 0.1] = empty
        t = torch.sigmoid(torch.randn(args.batch))
        z = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1)
        loss = F.mse_loss(flow((1 - tt) * x0 + tt * z, 1000.0 * t, text(tok)), z - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_update(ema_text, text, it)
        ema_update(ema_flow, flow, it)
        running = 0.98 * running + 0.02 * loss.item() if it > 1 else loss.item()
        if it % 100 == 0 or it == args.iters:
            print(f"iter {it} loss {running:.4f} elapsed {time.time() - start:.0f}s", flush=True)
        if args.export_every and it % args.export_every == 0 and it < args.iters:
            export_stage2(ema_text, ema_flow, args.prefix)
            print(f"exported the EMA weights of iteration {it}", flush=True)
    export_stage2(ema_text, ema_flow, args.prefix)
    for part in ("encoder", "decoder", "text_encoder", "flow"):
        path = f"{args.prefix}_{part}.pt"
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", flush=True)


if __name__ == "__main__":
    main()
