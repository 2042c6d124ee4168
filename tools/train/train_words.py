#!/usr/bin/python3
"""Trains the character-level masked-diffusion word model (models/words_mdm.pt).

A time-independent transformer (RADD, Ou et al. 2024: absorbing diffusion needs no
time input; width 256, 4 layers by default, matrix products in bfloat16 with float32
residuals, norms and softmax) predicts the clean character at every position from the
partially masked word; loss: the lambda-DCE objective of RADD, -sum over masked positions of log p(x0) / lambda,
with the masking ratio lambda ~ U(0, 1) per word (stratified over the batch).
Exported as TorchScript forward(tokens [B, 12] int64, t [B]) -> log-probabilities [B, 12, 27]
(the vocabulary a-z and '.', the mask id 27 excluded; t is ignored).

A run can be continued in chunks (--init-from the previous chunk's export, --seed per chunk);
give --iters rather than --minutes for a chunk that another machine can repeat exactly.
A chunk longer than one sitting keeps its whole training state in --checkpoint (weights,
optimiser moments, iteration, random state) every --save-every iterations; the same command
started again resumes there and ends as the uninterrupted chunk would (bit for bit on one
thread).

Usage: /usr/bin/python3 tools/train/train_words.py [--minutes 30 | --iters N] [--out models/words_mdm.pt]
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import words_data  # noqa: E402

V, L = 27, words_data.LENGTH


class Block(torch.nn.Module):
    """A pre-norm transformer encoder layer (bidirectional attention, GELU feed-forward).
    Every matrix product runs in the dtype of `ref` (bfloat16 with --precision bfloat16: the
    AMX/AVX-512 units, about 7x the float32 rate here) with float32 residuals, layer norms
    and softmax; the exported file stores the matrices in that dtype, so what is sampled is
    what was trained."""

    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc1 = torch.nn.Linear(d, ff)
        self.fc2 = torch.nn.Linear(ff, d)

    def forward(self, h, ref):
        B, n, d = h.shape
        dh = d // self.heads
        qkv = lin(self.ln1(h), self.qkv.weight, self.qkv.bias, ref)
        qkv = qkv.view(B, n, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        att = (torch.matmul(qkv[0], qkv[1].transpose(-1, -2)).float() * dh ** -0.5).softmax(-1)
        o = torch.matmul(att.to(ref.dtype), qkv[2]).transpose(1, 2).reshape(B, n, d)
        h = h + lin(o, self.proj.weight, self.proj.bias, ref).float()
        a = torch.nn.functional.gelu(lin(self.ln2(h), self.fc1.weight, self.fc1.bias, ref).float())
        return h + lin(a, self.fc2.weight, self.fc2.bias, ref).float()


def lin(x, weight, bias, ref):
    return torch.nn.functional.linear(x.to(ref.dtype), weight.to(ref.dtype), bias.to(ref.dtype))


class WordModel(torch.nn.Module):
    def __init__(self, d=256, layers=4, heads=4, ff=768, dtype=torch.float32):
        super().__init__()
        self.tok = torch.nn.Embedding(V + 1, d)
        self.pos = torch.nn.Parameter(torch.randn(L, d) * 0.02)
        self.blocks = torch.nn.ModuleList([Block(d, heads, ff) for _ in range(layers)])
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, V)
        # The compute dtype of the matrix products, carried by an empty buffer (TorchScript
        # keeps a tensor's dtype; the exported file keeps it too).
        self.register_buffer("ref", torch.zeros(0, dtype=dtype))

    def forward(self, tokens, t):
        h = self.tok(tokens) + self.pos
        for block in self.blocks:
            h = block(h, self.ref)
        return torch.log_softmax(lin(self.norm(h), self.head.weight, self.head.bias, self.ref).float(), dim=-1)

    def matrices_in_compute_dtype(self):
        """For the export: the Linear weights stored in the compute dtype (half the file in
        bfloat16; the products are the ones trained)."""
        for m in self.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.data = m.weight.data.to(self.ref.dtype)
                m.bias.data = m.bias.data.to(self.ref.dtype)


def elbo_per_char(model, words):
    """The masked-diffusion bound on -log p(word) / L, averaged over `words` [N, L], with the
    expectation over the number k of masked positions computed exactly (k = 1..L, each k
    masking the first k positions of one fixed random order per word):
    -log p(x) <= sum_k (1 / k) sum_{i masked at k} -log p(x_i | unmasked), the count form of the
    lambda-DCE objective. Fixed seed, so successive calls measure the same masks."""
    g = torch.Generator().manual_seed(1234)
    order = torch.rand(len(words), L, generator=g).argsort(1).argsort(1)
    total = torch.zeros(len(words), dtype=torch.float64)
    with torch.no_grad():
        for k in range(1, L + 1):
            masked = order < k
            xt = torch.where(masked, torch.full_like(words, words_data.MASK), words)
            nll = -model(xt, torch.full((len(words),), k / L)).gather(-1, words[..., None]).squeeze(-1)
            total += (nll * masked).sum(1).double() / k
    return (total.mean() / L).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--iters", type=int, default=0,
                    help="train exactly this many iterations (the cosine cycle over them) instead of --minutes")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default="models/words_mdm.pt")
    ap.add_argument("--masking", choices=["lambda", "count"], default="lambda",
                    help="lambda: RADD's lambda-DCE (mask ratio lambda ~ U(0, 1), weight 1 / lambda); count: "
                         "exactly k ~ U{1..L} masked positions per word, weight L / k (the same ELBO for "
                         "short sequences, without the rows of no mask and weight 1 / lambda)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--precision", choices=["bfloat16", "float32"], default="bfloat16",
                    help="dtype of the matrix products in training and in the exported file (float32 "
                         "residuals, norms and softmax either way)")
    ap.add_argument("--init-from", metavar="PT",
                    help="continue from an exported model of the same width and depth (a chunk of a "
                         "resumable run: a new warm-up and cosine cycle over --minutes or --iters, fresh optimiser state)")
    ap.add_argument("--seed", type=int, default=0, help="batch and mask draws; give each chunk its own")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500, metavar="N",
                    help="print the validation bound (held-out and training words) every N iterations")
    ap.add_argument("--checkpoint", metavar="PATH",
                    help="keep the training state here every --save-every iterations; if PATH exists, resume "
                         "from it (needs --iters and the options it was written with)")
    ap.add_argument("--save-every", type=int, default=250, metavar="N")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train, held = words_data.split()
    data = torch.tensor([words_data.encode(w) for w in train])
    print(f"{len(train)} training words, {len(held)} held out", flush=True)
    if args.width <= 0 or args.width % 4 or args.layers <= 0:
        print("train_words.py: --width must be a positive multiple of 4 (the 4 attention heads), --layers > 0",
              file=sys.stderr)
        sys.exit(2)
    model = WordModel(d=args.width, layers=args.layers, heads=4, ff=3 * args.width,
                      dtype=getattr(torch, args.precision))
    if args.iters < 0 or args.eval_every < 0 or args.save_every <= 0:
        print("train_words.py: --iters and --eval-every must be >= 0, --save-every > 0", file=sys.stderr)
        sys.exit(2)
    if args.checkpoint and not args.iters:
        print("train_words.py: --checkpoint needs --iters (a time budget cannot be resumed exactly)", file=sys.stderr)
        sys.exit(2)
    if args.init_from and not os.path.isfile(args.init_from):
        print(f"train_words.py: --init-from {args.init_from}: no such file", file=sys.stderr)
        sys.exit(2)
    if args.init_from:
        try:
            model.load_state_dict(torch.jit.load(args.init_from).state_dict())
        except (RuntimeError, ValueError) as e:
            print(f"train_words.py: --init-from {args.init_from}: not a word model of width {args.width} and "
                  f"{args.layers} layers ({str(e).splitlines()[0]})", file=sys.stderr)
            sys.exit(2)
        print(f"continuing from {args.init_from}", flush=True)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    val_held = torch.tensor([words_data.encode(w) for w in held[::len(held) // 1000][:1000]])
    val_train = torch.tensor([words_data.encode(w) for w in train[::len(train) // 1000][:1000]])
    report = lambda it: print(f"iter {it}  validation bound (nats per character): held-out "
                              f"{elbo_per_char(model, val_held):.4f}  training {elbo_per_char(model, val_train):.4f}",
                              flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start, it, smooth = time.time(), 0, None
    # What must match for a resumed chunk to be the chunk it continues.
    identity = {k: getattr(args, k) for k in ("iters", "batch", "lr", "masking", "width", "layers", "precision", "seed",
                                               "init_from")}
    if args.checkpoint and os.path.isfile(args.checkpoint):
        try:
            state = torch.load(args.checkpoint)
        except Exception as e:  # a truncated or foreign file: whatever torch.load raises
            print(f"train_words.py: --checkpoint {args.checkpoint}: not readable ({e})", file=sys.stderr)
            sys.exit(2)
        if not isinstance(state, dict) or state.get("identity") != identity:
            print(f"train_words.py: --checkpoint {args.checkpoint}: written by another run "
                  f"({state.get('identity') if isinstance(state, dict) else 'not a checkpoint'}); "
                  f"remove it or give that run's options", file=sys.stderr)
            sys.exit(2)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        it, smooth = state["it"], state["smooth"]
        torch.set_rng_state(state["rng"])
        print(f"resuming from {args.checkpoint} at iteration {it}", flush=True)
    else:
        report(0)
    budget = args.minutes * 60
    while True:
        elapsed = time.time() - start
        if (it >= args.iters) if args.iters else (elapsed > budget):
            break
        frac = it / args.iters if args.iters else elapsed / budget
        lr = args.lr * min(1.0, (it + 1) / 200) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        x0 = data[torch.randint(len(data), (args.batch,))]
        if args.masking == "lambda":
            # stratified masking ratios in (0, 1]
            lam = ((torch.arange(args.batch) + torch.rand(1)) / args.batch).clamp_min(1e-3)
            masked = torch.rand(args.batch, L) < lam[:, None]
        else:
            # exactly k masked positions, k stratified over 1..L: the k smallest of L uniforms
            k = (torch.arange(args.batch) * L // args.batch + 1)[torch.randperm(args.batch)]
            ranks = torch.rand(args.batch, L).argsort(1).argsort(1)
            masked = ranks < k[:, None]
            lam = k.float() / L
        xt = torch.where(masked, torch.full_like(x0, words_data.MASK), x0)
        logp = model(xt, lam)
        nll = -logp.gather(-1, x0[..., None]).squeeze(-1)
        loss = ((nll * masked).sum(1) / lam).mean() / L
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        it += 1
        if it % 200 == 0:
            print(f"iter {it}  loss {smooth:.4f}  lr {lr:.2e}  {time.time() - start:.0f} s", flush=True)
        if args.eval_every and it % args.eval_every == 0:
            report(it)
        if args.checkpoint and it % args.save_every == 0 and it < args.iters:
            # Written to a side file and renamed: a run killed while saving keeps the last state.
            torch.save({"identity": identity, "model": model.state_dict(), "opt": opt.state_dict(), "it": it,
                        "smooth": smooth, "rng": torch.get_rng_state()}, args.checkpoint + ".tmp")
            os.replace(args.checkpoint + ".tmp", args.checkpoint)
    print(f"done: {it} iterations in {time.time() - start:.0f} s, smoothed loss {smooth if smooth is not None else float('nan'):.4f}", flush=True)
    if not args.eval_every or it % args.eval_every != 0:
        report(it)
    model.eval()
    model.matrices_in_compute_dtype()
    # The weights first, as a plain state dict (OUT.state_dict, removed once the export is
    # written): torch.jit.script reads this file's source again, and an edit to it during a
    # long run would otherwise lose the run at the last step.
    torch.save(model.state_dict(), args.out + ".state_dict")
    scripted = torch.jit.script(model)
    scripted.save(args.out)
    os.remove(args.out + ".state_dict")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)", flush=True)
    if args.checkpoint and os.path.isfile(args.checkpoint):
        os.remove(args.checkpoint)


if __name__ == "__main__":
    main()
