"""StyleGAN2 generator and discriminator (Karras et al. 2020, config-e/f style), in plain PyTorch.

Written from the paper's description: equalized learning rate, a mapping network z -> w with a
learning-rate multiplier, a synthesis network of modulated/demodulated 3x3 convolutions on a
learned 4x4 constant, bilinear ([1,3,3,1] FIR) resampling, per-layer noise with learned strength,
skip-connected ToRGB outputs, and a residual discriminator with minibatch standard deviation.

Nothing here needs a compiler: every op is a stock PyTorch op, so the same code runs on CPU and CUDA.
No forward pass mutates module state (noise, truncation and batch-statistics modes are arguments),
so one model can serve concurrent requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NoiseMode = str  # 'const' | 'random' | 'none'
SQRT2 = math.sqrt(2.0)

# --------------------------------------------------------------------------------------------
# Resampling: [1,3,3,1] FIR filter (separable bilinear kernel) with zero-insertion upsampling.


def make_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()  # [k, k]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with `f` (depthwise), then keep every `down`-th pixel."""
    N, C, H, W = x.shape
    if up > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(N, C, H * up, W * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(C, 1, *f.shape)
    x = F.conv2d(x, k, groups=C)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


# --------------------------------------------------------------------------------------------
# Equalized-learning-rate layers.


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, activation: bool = False,
                 bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu(x) if self.activation else x


class Conv2dLayer(nn.Module):
    """Discriminator convolution: optional blur + stride-2 downsampling, optional bias and lrelu."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, down: bool = False,
                 bias: bool = True, activation: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.down, self.activation, self.kernel_size = down, activation, kernel_size
        self.register_buffer("resample_filter", make_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down:
            p = 2 + (self.kernel_size - 1)  # filter taps - factor + kernel - 1
            x = upfirdn2d(x, self.resample_filter, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return lrelu(x) if self.activation else x


# --------------------------------------------------------------------------------------------
# Generator.


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, *, num_layers: int = 8, lr_mul: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], activation=True, lr_mul=lr_mul) for i in range(num_layers))
        # Running mean of w, tracked by the training loop (never by forward); saved in the bundle.
        self.register_buffer("w_avg", torch.zeros(w_dim), persistent=False)

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # normalise z
        for layer in self.layers:
            x = layer(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        if psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = ws.clone()
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2) + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool = False):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.up, self.resolution = up, resolution
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        styles = self.affine(w)  # [N, in_channels]
        weight = self.weight * self.weight_gain
        # Demodulation coefficients of the per-sample modulated weights, applied after a shared conv
        # (mathematically identical to the grouped per-sample conv, and much faster on CPU).
        dcoefs = (weight.unsqueeze(0) * styles[:, None, :, None, None]).square().sum([2, 3, 4]).add(1e-8).rsqrt()
        x = x * styles[:, :, None, None]
        if self.up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = upfirdn2d(x, self.resample_filter, pad=(1, 1), gain=4.0)
        else:
            x = F.conv2d(x, weight, padding=1)
        x = x * dcoefs[:, :, None, None]
        if noise is not None:
            x = x + noise * self.noise_strength
        return lrelu(x + self.bias.view(1, -1, 1, 1))


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = F.conv2d(x * styles[:, :, None, None], self.weight * self.weight_gain)
        return x + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv,) conv, ToRGB added to the upsampled skip image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int):
        super().__init__()
        self.resolution = resolution
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True) if resolution > 4 else None
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)
        self.num_conv = 1 if self.conv0 is None else 2
        self.register_buffer("resample_filter", make_filter(), persistent=False)

    def forward(self, x, img, ws, noises):
        # ws: [N, num_conv + 1, w_dim]; noises: one tensor (or None) per conv
        if self.conv0 is not None:
            x = self.conv0(x, ws[:, 0], noises[0])
        x = self.conv1(x, ws[:, self.num_conv - 1], noises[-1])
        y = self.torgb(x, ws[:, self.num_conv])
        if img is not None:
            y = y + upfirdn2d(img, self.resample_filter, up=2, pad=(2, 1), gain=4.0)
        return x, y


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // res, channel_max)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int,
                 channel_max: int):
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        self.const = nn.Parameter(torch.randn(channels_at(4, channel_base, channel_max), 4, 4))
        self.blocks = nn.ModuleDict()
        in_ch = channels_at(4, channel_base, channel_max)
        for res in self.resolutions:
            out_ch = channels_at(res, channel_base, channel_max)
            self.blocks[f"b{res}"] = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels)
            in_ch = out_ch
        # ToRGB of one block shares its w with the next block's first conv: 2*log2(res) - 2 styles.
        self.num_ws = 2 * log2 - 2
        self.num_layers = 2 * len(self.resolutions) - 1  # convolutions that take noise

    def layers(self) -> list[SynthesisLayer]:
        out = []
        for block in self.blocks.values():
            out += [block.conv1] if block.conv0 is None else [block.conv0, block.conv1]
        return out

    def make_noise(self, batch_size: int, *, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Fresh per-layer noise, [N, 1, res, res] each, drawn from `generator`."""
        device = self.const.device if device is None else device
        return [torch.randn(batch_size, 1, layer.resolution, layer.resolution, generator=generator,
                            device=device) for layer in self.layers()]

    def forward(self, ws: torch.Tensor, *, noise_mode: NoiseMode = "const",
                noise: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """ws: [N, num_ws, w_dim] -> images [N, img_channels, img_resolution, img_resolution] in about [-1, 1].

        noise: explicit per-layer tensors (broadcastable to [N, 1, res, res]) override noise_mode.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        layers = self.layers()
        if noise is None:
            if noise_mode == "const":
                noise = [layer.noise_const[None, None] for layer in layers]
            elif noise_mode == "random":
                noise = self.make_noise(ws.shape[0], generator=generator, device=ws.device)
            elif noise_mode == "none":
                noise = [None] * len(layers)
            else:
                raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        elif len(noise) != len(layers):
            raise ValueError(f"expected {len(layers)} noise tensors, got {len(noise)}")
        x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        img, w_idx, n_idx = None, 0, 0
        for block in self.blocks.values():
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise[n_idx:n_idx + block.num_conv])
            w_idx += block.num_conv
            n_idx += block.num_conv
        return img


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int = 256,            # Input latent (z) dimensionality.
        w_dim: int = 256,            # Intermediate latent (w) dimensionality.
        img_resolution: int = 32,    # Output resolution (a power of two).
        img_channels: int = 1,       # Number of output colour channels (1 or 3).
        mapping_layers: int = 8,     # Depth of the mapping network.
        mapping_lr_mul: float = 0.01,  # Learning-rate multiplier of the mapping network.
        channel_base: int = 4096,    # Overall multiplier for the number of channels (channels = base / res).
        channel_max: int = 128,      # Maximum number of channels in any layer.
    ):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr_mul,
                                channel_base=channel_base, channel_max=channel_max)
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                          channel_max=channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers, lr_mul=mapping_lr_mul)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: NoiseMode = "const", generator: torch.Generator | None = None) -> torch.Tensor:
        ws = self.mapping(z, psi=psi, truncation_cutoff=truncation_cutoff)  # [N, num_ws, w_dim]
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)


def style_mix(ws: torch.Tensor, ws2: torch.Tensor, *, prob: float, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """Style-mixing regularisation: from a random layer on, each sample takes (with `prob`) its second code."""
    N, num_ws, _ = ws.shape
    mix = torch.rand(N, generator=generator) < prob
    cutoff = torch.randint(1, num_ws, (N,), generator=generator)
    cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
    take2 = torch.arange(num_ws)[None, :] >= cutoff[:, None]  # [N, num_ws]
    return torch.where(take2[:, :, None].to(ws.device), ws2, ws)


# --------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, down=True, bias=False, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / SQRT2


class Discriminator(nn.Module):
    def __init__(
        self,
        img_resolution: int = 32,    # Input resolution (a power of two).
        img_channels: int = 1,       # Number of input colour channels.
        channel_base: int = 4096,    # Overall multiplier for the number of channels.
        channel_max: int = 128,      # Maximum number of channels in any layer.
        mbstd_group_size: int = 4,   # Group size of the minibatch standard-deviation layer.
        mbstd_num_channels: int = 1,  # Number of features the minibatch-stddev layer adds.
    ):
        super().__init__()
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels,
                                channel_base=channel_base, channel_max=channel_max,
                                mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels)
        log2 = int(math.log2(img_resolution))
        if img_resolution < 8 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        ch = lambda res: channels_at(res, channel_base, channel_max)  # noqa: E731
        self.fromrgb = Conv2dLayer(img_channels, ch(img_resolution), 1)
        self.blocks = nn.ModuleDict(
            {f"b{2**i}": DiscriminatorBlock(ch(2**i), ch(2 ** (i - 1))) for i in range(log2, 2, -1)})
        self.conv = Conv2dLayer(ch(4) + mbstd_num_channels, ch(4), 3)
        self.fc = FullyConnected(ch(4) * 16, ch(4), activation=True)
        self.out = FullyConnected(ch(4), 1)

    def minibatch_std(self, x: torch.Tensor, group_size: int) -> torch.Tensor:
        N, C, H, W = x.shape
        G = min(group_size, N)
        if N % G != 0:
            raise ValueError(f"batch of {N} is not divisible by the minibatch-stddev group size {G}; "
                             "use mbstd_group=1 for per-image evaluation")
        F_ = self.mbstd_num_channels
        y = x.reshape(G, -1, F_, C // F_, H, W)        # sample i is grouped with i + k*N/G
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [N/G, F, C/F, H, W]
        y = y.mean(dim=[2, 3, 4])                       # [N/G, F]
        y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor, *, mbstd_group: int | None = None, return_features: bool = False):
        """img: [N, C, H, W] in [-1, 1] -> logits [N] (and, on request, a dict of intermediate features).

        mbstd_group=1 makes each image's output independent of its batch mates (per-image mode).
        """
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"D expects [N, {self.img_channels}, {self.img_resolution}, {self.img_resolution}], "
                             f"got {list(img.shape)}")
        feats = {}
        x = self.fromrgb(img)
        for name, block in self.blocks.items():
            x = block(x)
            feats[name] = x
        x = self.minibatch_std(x, self.mbstd_group_size if mbstd_group is None else mbstd_group)
        x = self.conv(x)
        feats["conv4"] = x
        x = self.fc(x.flatten(1))
        feats["fc"] = x
        logits = self.out(x).squeeze(1)
        return (logits, feats) if return_features else logits
