#!/usr/bin/python3
"""Exports randomly initialised TorchScript networks with the interfaces of real latent
text-to-image models, scaled down in width so that they load in a second (their shapes are
real, their weights are noise: they test plumbing, shapes, chunking, memory and per-step
overhead, never image quality), plus matching decoders:

- sd15_unet.pt:  forward(sample [B, 4, 64, 64], timestep [B], encoder_hidden_states
                 [B, 77, 768]) -> eps; SD 1.5 at 512 px (cross-attention at 32x32 and 16x16).
- sdxl_unet.pt:  forward(sample [B, 4, 128, 128], timestep [B], encoder_hidden_states
                 [B, 77, 2048], text_embeds [B, 1280], time_ids [B, 6]) -> eps; SDXL at 1024 px
                 (pooled text and size ids added to the time embedding, as SDXL's add_embedding).
- flux_transformer.pt: forward(hidden_states [B, 1024, 64], timestep [B], encoder_hidden_states
                 [B, 512, 4096], pooled_projections [B, 768], img_ids [B, 1024, 3], txt_ids
                 [B, 512, 3], guidance [B]) -> velocity; Flux at 512 px: 16-channel 64x64
                 latents packed in 2x2 patches (1024 tokens of 64), T5 tokens, CLIP pooled,
                 one joint attention block over text and image tokens.
- sd_decoder.pt: [B, 4, H, W] -> [B, 3, 8H, 8W];  flux_decoder.pt: packed [B, 1024, 64] ->
                 [B, 3, 512, 512] (unpacks the 2x2 patches, then 8x).

Usage: /usr/bin/python3 tools/scripts/make_shaped_models.py [OUT_DIR] (default tests/fixtures/shaped)
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Block(nn.Module):
    """Residual conv block with a time embedding and optional cross-attention to a context."""

    def __init__(self, ch: int, emb: int, ctx: int, attend: bool):
        super().__init__()
        self.norm = nn.GroupNorm(8, ch)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.emb = nn.Linear(emb, ch)
        self.attend = attend
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(ctx, 2 * ch)

    def forward(self, h, e, context):
        h = h + self.conv(F.silu(self.norm(h) + self.emb(e)[:, :, None, None]))
        if self.attend:
            b, c, hh, ww = h.shape
            q = self.q(h.flatten(2).transpose(1, 2))
            k, v = self.kv(context.to(h.dtype)).chunk(2, dim=-1)
            a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1) @ v
            h = h + a.transpose(1, 2).reshape(b, c, hh, ww)
        return h


class UNetShaped(nn.Module):
    """Down 2x twice with cross-attention at the two lower resolutions, then up again."""

    def __init__(self, ctx: int, extra: int = 0, ch: int = 64, emb: int = 128):
        super().__init__()
        self.emb_dim = emb
        self.t_mlp = nn.Linear(emb, emb)
        self.extra = nn.Linear(max(extra, 1), emb)
        self.has_extra = extra > 0
        self.inp = nn.Conv2d(4, ch, 3, padding=1)
        self.d0 = Block(ch, emb, ctx, False)
        self.d1 = Block(ch, emb, ctx, True)
        self.d2 = Block(ch, emb, ctx, True)
        self.u1 = Block(ch, emb, ctx, True)
        self.u0 = Block(ch, emb, ctx, False)
        self.out = nn.Conv2d(ch, 4, 3, padding=1)

    def run(self, x, t, context, extra):
        e = self.t_mlp(time_embedding(t, self.emb_dim).to(x.dtype))
        if self.has_extra:
            e = e + self.extra(extra.to(x.dtype))
        h0 = self.d0(self.inp(x), e, context)
        h1 = self.d1(F.avg_pool2d(h0, 2), e, context)
        h2 = self.d2(F.avg_pool2d(h1, 2), e, context)
        h1 = self.u1(h1 + F.interpolate(h2, scale_factor=2.0, mode="nearest"), e, context)
        h0 = self.u0(h0 + F.interpolate(h1, scale_factor=2.0, mode="nearest"), e, context)
        return self.out(h0)


class SD15(UNetShaped):
    def __init__(self):
        super().__init__(ctx=768)

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.run(sample, timestep, encoder_hidden_states, sample.new_zeros(1))


class SDXL(UNetShaped):
    def __init__(self):
        super().__init__(ctx=2048, extra=1280 + 6)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        extra = torch.cat([text_embeds, time_ids.to(text_embeds.dtype) / 1024.0], dim=1)
        return self.run(sample, timestep, encoder_hidden_states, extra)


class FluxShaped(nn.Module):
    """Image tokens and text tokens projected to one width, a joint attention block with
    rotary-free position features from the ids, modulation by time, guidance and pooled text."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.dim = dim
        self.img_in = nn.Linear(64, dim)
        self.txt_in = nn.Linear(4096, dim)
        self.ids = nn.Linear(3, dim)
        self.vec = nn.Linear(64 + 64 + 768, 2 * dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 64)

    def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections, img_ids, txt_ids, guidance):
        dt = hidden_states.dtype
        vec = torch.cat([time_embedding(1000.0 * timestep, 64).to(dt), time_embedding(1000.0 * guidance, 64).to(dt),
                         pooled_projections.to(dt)], dim=1)
        scale, shift = self.vec(F.silu(vec)).unsqueeze(1).chunk(2, dim=-1)
        img = self.img_in(hidden_states) + self.ids(img_ids.to(dt) / 64.0)
        txt = self.txt_in(encoder_hidden_states.to(dt)) + self.ids(txt_ids.to(dt))
        x = torch.cat([txt, img], dim=1)
        x = F.layer_norm(x, [self.dim]) * (1 + scale) + shift
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.dim), dim=-1) @ v
        x = x + self.mlp(F.silu(x))
        return self.out(x[:, encoder_hidden_states.size(1):])


class SDDecoder(nn.Module):
    def __init__(self, cin: int = 4):
        super().__init__()
        self.a = nn.Conv2d(cin, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, z):
        h = F.silu(self.a(z))
        h = F.interpolate(h, scale_factor=8.0, mode="nearest")
        return torch.tanh(self.b(h))


class FluxDecoder(nn.Module):
    """Unpacks [B, 1024, 64] (32x32 tokens of 16 channels x 2x2) to [B, 16, 64, 64], then 8x."""

    def __init__(self):
        super().__init__()
        self.dec = SDDecoder(16)

    def forward(self, packed):
        b = packed.size(0)
        z = packed.view(b, 32, 32, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, 16, 64, 64)
        return self.dec(z)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/shaped"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, m in [("sd15_unet", SD15()), ("sdxl_unet", SDXL()), ("flux_transformer", FluxShaped()),
                    ("sd_decoder", SDDecoder()), ("flux_decoder", FluxDecoder())]:
        path = os.path.join(out, name + ".pt")
        torch.jit.save(torch.jit.script(m.eval()), path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {sum(p.numel() for p in m.parameters())} params)")


if __name__ == "__main__":
    main()
