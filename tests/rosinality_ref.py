"""Test helper: tiny checkpoints in rosinality/stylegan2-pytorch's key layout, and an independent
reference forward pass over such a state dict (grouped per-sample convolutions, as that repository's
fused path does), so the importer is checked against the format's semantics, not against itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _channels(res: int, base: int, cmax: int) -> int:
    return min(base // res, cmax)


def make_rosinality_state(size: int, style_dim: int, n_mlp: int, base: int, cmax: int, *, img_channels: int = 3,
                          seed: int = 0) -> tuple[dict, dict]:
    """Random g_ema and d state dicts with rosinality's names and shapes (biases and noise gains nonzero)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=1.0: torch.randn(*shape, generator=g) * s  # noqa: E731
    log = int(math.log2(size))
    ch = {2**i: _channels(2**i, base, cmax) for i in range(2, log + 1)}
    G = {}
    for i in range(1, n_mlp + 1):
        G[f"style.{i}.weight"] = r(style_dim, style_dim) / 0.01
        G[f"style.{i}.bias"] = r(style_dim, s=0.1)
    G["input.input"] = r(1, ch[4], 4, 4)

    def styled(prefix, cin, cout, up):
        G[f"{prefix}.conv.weight"] = r(1, cout, cin, 3, 3)
        G[f"{prefix}.conv.modulation.weight"] = r(cin, style_dim)
        G[f"{prefix}.conv.modulation.bias"] = 1 + r(cin, s=0.1)
        if up:
            G[f"{prefix}.conv.blur.kernel"] = torch.ones(4, 4)  # buffer in the real files; ignored
        G[f"{prefix}.noise.weight"] = r(1, s=0.3)
        G[f"{prefix}.activate.bias"] = r(cout, s=0.1)

    def torgb(prefix, cin, up):
        G[f"{prefix}.conv.weight"] = r(1, img_channels, cin, 1, 1)
        G[f"{prefix}.conv.modulation.weight"] = r(cin, style_dim)
        G[f"{prefix}.conv.modulation.bias"] = 1 + r(cin, s=0.1)
        G[f"{prefix}.bias"] = r(1, img_channels, 1, 1, s=0.1)
        if up:
            G[f"{prefix}.upsample.kernel"] = torch.ones(4, 4)

    styled("conv1", ch[4], ch[4], False)
    torgb("to_rgb1", ch[4], False)
    cin = ch[4]
    for k, i in enumerate(range(3, log + 1)):
        styled(f"convs.{2 * k}", cin, ch[2**i], True)
        styled(f"convs.{2 * k + 1}", ch[2**i], ch[2**i], False)
        torgb(f"to_rgbs.{k}", ch[2**i], True)
        cin = ch[2**i]
    num_layers = (log - 2) * 2 + 1
    for layer in range(num_layers):
        res = 2 ** ((layer + 5) // 2)
        G[f"noises.noise_{layer}"] = r(1, 1, res, res)

    D = {"convs.0.0.weight": r(ch[size], img_channels, 1, 1), "convs.0.1.bias": r(ch[size], s=0.1)}
    cin = ch[size]
    for k, i in enumerate(range(log, 2, -1), start=1):
        cout = ch[2 ** (i - 1)]
        D[f"convs.{k}.conv1.0.weight"] = r(cin, cin, 3, 3)
        D[f"convs.{k}.conv1.1.bias"] = r(cin, s=0.1)
        D[f"convs.{k}.conv2.0.kernel"] = torch.ones(4, 4)
        D[f"convs.{k}.conv2.1.weight"] = r(cout, cin, 3, 3)
        D[f"convs.{k}.conv2.2.bias"] = r(cout, s=0.1)
        D[f"convs.{k}.skip.0.kernel"] = torch.ones(4, 4)
        D[f"convs.{k}.skip.1.weight"] = r(cout, cin, 1, 1)
        cin = cout
    D["final_conv.0.weight"] = r(ch[4], cin + 1, 3, 3)
    D["final_conv.1.bias"] = r(ch[4], s=0.1)
    D["final_linear.0.weight"] = r(ch[4], ch[4] * 16)
    D["final_linear.0.bias"] = r(ch[4], s=0.1)
    D["final_linear.1.weight"] = r(1, ch[4])
    D["final_linear.1.bias"] = r(1, s=0.1)
    return G, D


# ---- reference forward -------------------------------------------------------------------------

def _blur(x, pad, up=1, gain=1.0):
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    k = k / k.sum() * gain
    N, C, H, W = x.shape
    if up == 2:
        z = torch.zeros(N, C, H * 2, W * 2, dtype=x.dtype)
        z[:, :, ::2, ::2] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]]).reshape(N * C, 1, x.shape[2] + sum(pad), x.shape[3] + sum(pad))
    x = F.conv2d(x, k.flip([0, 1])[None, None])
    return x.reshape(N, C, x.shape[2], x.shape[3])


def _lin(x, w, b, lr_mul=1.0, act=False):
    y = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])), b * lr_mul)
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if act else y


def _modconv(sd, p, x, w, *, demod=True, up=False):
    N, cin, H, W = x.shape
    weight = sd[f"{p}.conv.weight"]  # [1, out, in, k, k]
    k = weight.shape[-1]
    style = _lin(w, sd[f"{p}.conv.modulation.weight"], sd[f"{p}.conv.modulation.bias"]).view(N, 1, cin, 1, 1)
    wt = weight / math.sqrt(cin * k * k) * style  # [N, out, in, k, k]
    if demod:
        wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + 1e-8).view(N, -1, 1, 1, 1)
    cout = wt.shape[1]
    xg = x.reshape(1, N * cin, H, W)
    if up:
        wt = wt.transpose(1, 2).reshape(N * cin, cout, k, k)
        out = F.conv_transpose2d(xg, wt, stride=2, groups=N)
        out = _blur(out.view(N, cout, out.shape[2], out.shape[3]), (1, 1), gain=4.0)
    else:
        out = F.conv2d(xg, wt.reshape(N * cout, cin, k, k), padding=k // 2, groups=N)
        out = out.view(N, cout, H, W)
    return out


def reference_generator(sd: dict, ws: torch.Tensor, n_mlp: int | None = None) -> torch.Tensor:
    """rosinality Generator forward with input_is_latent=True, randomize_noise=False. ws: [N, n_latent, D]."""
    def styled(p, x, w, noise, up=False):
        x = _modconv(sd, p, x, w, up=up)
        x = x + sd[f"{p}.noise.weight"] * noise
        return F.leaky_relu(x + sd[f"{p}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    N = ws.shape[0]
    x = sd["input.input"].repeat(N, 1, 1, 1)
    x = styled("conv1", x, ws[:, 0], sd["noises.noise_0"])
    skip = _modconv(sd, "to_rgb1", x, ws[:, 1], demod=False) + sd["to_rgb1.bias"]
    i, k = 1, 0
    while f"to_rgbs.{k}.conv.weight" in sd:
        x = styled(f"convs.{2 * k}", x, ws[:, i], sd[f"noises.noise_{2 * k + 1}"], up=True)
        x = styled(f"convs.{2 * k + 1}", x, ws[:, i + 1], sd[f"noises.noise_{2 * k + 2}"])
        rgb = _modconv(sd, f"to_rgbs.{k}", x, ws[:, i + 2], demod=False) + sd[f"to_rgbs.{k}.bias"]
        skip = rgb + _blur(skip, (2, 1), up=2, gain=4.0)
        i, k = i + 2, k + 1
    return skip


def reference_mapping(sd: dict, z: torch.Tensor) -> torch.Tensor:
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        x = _lin(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], lr_mul=0.01, act=True)
        i += 1
    return x


def reference_discriminator(sd: dict, img: torch.Tensor) -> torch.Tensor:
    def conv(p, x, *, down=False, act=True, bias_key=None):
        w = sd[f"{p}.weight"]
        w = w / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])
        if down:
            pd = 2 + (w.shape[-1] - 1)
            x = _blur(x, ((pd + 1) // 2, pd // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if bias_key is not None:
            x = x + sd[bias_key].view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if act else x

    x = conv("convs.0.0", img, bias_key="convs.0.1.bias")
    k = 1
    while f"convs.{k}.conv1.0.weight" in sd:
        y = conv(f"convs.{k}.conv1.0", x, bias_key=f"convs.{k}.conv1.1.bias")
        y = conv(f"convs.{k}.conv2.1", y, down=True, bias_key=f"convs.{k}.conv2.2.bias")
        s = conv(f"convs.{k}.skip.1", x, down=True, act=False)
        x = (y + s) / math.sqrt(2)
        k += 1
    N, C, H, W = x.shape
    G = min(N, 4)
    std = x.view(G, -1, 1, C, H, W)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
    x = torch.cat([x, std.repeat(G, 1, H, W)], 1)
    x = conv("final_conv.0", x, bias_key="final_conv.1.bias")
    x = _lin(x.view(N, -1), sd["final_linear.0.weight"], sd["final_linear.0.bias"], act=True)
    return _lin(x, sd["final_linear.1.weight"], sd["final_linear.1.bias"])
