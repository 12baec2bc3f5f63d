"""StyleGAN2 training loop: non-saturating logistic loss, lazy R1, EMA of G, style mixing, optional path length.

`train()` is resumable and reproducible: every random draw of step `s` comes from a generator seeded by
(seed, s), the data order is a seeded permutation per epoch, and the checkpoint holds the optimizer
states; a run killed and restarted continues from its last checkpoint exactly as if never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import BundleError, atomic_save, bundle_dict, read_checkpoint
from .data import ImageDataset, save_grid, to_float
from .networks import Discriminator, Generator, style_mix


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    total_kimg: float = 500.0
    lr_G: float = 0.0025
    lr_D: float = 0.0025
    r1_gamma: float = 0.05           # R1 weight (gamma / 2 * |grad D(real)|^2)
    r1_interval: int = 16            # lazy regularisation: R1 every this many steps
    pl_weight: float = 0.0           # path-length regularisation weight (0 disables it)
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0           # half-life of the G_ema average, in thousands of images
    ema_rampup: float | None = 0.05  # EMA half-life grows with training progress early on
    w_avg_beta: float = 0.995        # decay of the running mean of w used for truncation
    checkpoint_kimg: float = 10.0    # checkpoint + sample grid interval
    tick_kimg: float = 1.0           # metrics/log interval
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_kimg * 1000 / self.batch_size)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class EpochSampler:
    """Indices for step s: positions s*B .. s*B+B-1 of an endless sequence of seeded epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, None

    def _perm_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        out = torch.empty_like(pos)
        for epoch in pos.div(self.n, rounding_mode="floor").unique().tolist():
            sel = pos.div(self.n, rounding_mode="floor") == epoch
            out[sel] = self._perm_of(epoch)[pos[sel] % self.n]
        return out


def _lr_betas(lr: float, interval: int, active: bool) -> dict:
    c = interval / (interval + 1) if active else 1.0  # lazy regularisation correction
    return {"lr": lr * c, "betas": (0.0, 0.99**c)}


def _check_resume(obj: dict, cfg: TrainConfig, data_info: dict, path: Path) -> None:
    saved = obj.get("train_state", {}).get("config")
    if saved is None:
        raise BundleError(f"{path}: not a training checkpoint (no train_state); cannot resume from it")
    now = dataclasses.asdict(cfg)
    diff = {k: (saved.get(k), v) for k, v in now.items() if k != "total_kimg" and saved.get(k) != v}
    if diff:
        raise BundleError(f"{path}: checkpoint was trained with a different config {diff}; use a new run folder")
    if obj["data"].get("fingerprint") != data_info["fingerprint"]:
        raise BundleError(f"{path}: checkpoint was trained on other data ({obj['data'].get('name')}); "
                          "use a new run folder")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
        if len(keep) != len(rows):
            path.write_text("".join(line + "\n" for line in keep))


class _Run:
    """One training run's networks, optimizers and counters, and the parts of a step (`train` drives them)."""

    def __init__(self, run_dir: Path, dataset: ImageDataset, *, G_kwargs: dict, D_kwargs: dict, cfg: TrainConfig,
                 device: torch.device):
        self.run_dir, self.cfg, self.device, self.dataset = run_dir, cfg, device, dataset
        self.ckpt_path = run_dir / "checkpoint.pt"
        self.data_info = dataset.info()
        torch.manual_seed(cfg.seed)
        self.G = Generator(**G_kwargs).to(device).train()
        self.D = Discriminator(**D_kwargs).to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), **_lr_betas(cfg.lr_G, cfg.pl_interval, cfg.pl_weight > 0))
        self.opt_D = torch.optim.Adam(self.D.parameters(), **_lr_betas(cfg.lr_D, cfg.r1_interval, cfg.r1_gamma > 0))
        self.step, self.pl_mean, self.elapsed0 = 0, torch.zeros([], device=device), 0.0
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.t_start = time.time()
        self.grid_z = torch.randn(64, self.G.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 123)).to(device)

    def resume(self) -> None:
        """Continue from the run folder's checkpoint, when there is one."""
        if not self.ckpt_path.exists():
            return
        obj = read_checkpoint(self.ckpt_path)
        _check_resume(obj, self.cfg, self.data_info, self.ckpt_path)
        if obj["arch"] != {"G": self.G.init_kwargs, "D": self.D.init_kwargs}:
            raise BundleError(f"{self.ckpt_path}: checkpoint architecture {obj['arch']} differs from the requested one")
        self.G.load_state_dict(obj["G"])
        self.G_ema.load_state_dict(obj["G_ema"])
        self.D.load_state_dict(obj["D"])
        for net in (self.G, self.G_ema):
            net.mapping.w_avg.copy_(obj["w_avg"])
        ts = obj["train_state"]
        self.opt_G.load_state_dict(ts["opt_G"])
        self.opt_D.load_state_dict(ts["opt_D"])
        self.step, self.elapsed0 = ts["step"], ts.get("elapsed_s", 0.0)
        self.pl_mean = ts["pl_mean"].to(self.device)
        _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    def record(self, **kv) -> None:
        # Kept on the device and averaged once per tick: no host sync per step.
        for k, v in kv.items():
            self.stats.setdefault(k, []).append(v.detach().float())

    def save(self) -> None:
        cfg, step = self.cfg, self.step
        kimg = step * cfg.batch_size / 1000
        meta = {"source": "resynth train", "train_config": dataclasses.asdict(cfg), "device": str(self.device)}
        obj = bundle_dict(G_ema=self.G_ema, G=self.G, D=self.D, progress={"kimg": kimg, "step": step},
                          data=self.data_info, meta=meta)
        obj["train_state"] = {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "step": step,
                              "pl_mean": self.pl_mean.detach().cpu(), "config": dataclasses.asdict(cfg),
                              "elapsed_s": self.elapsed0 + time.time() - self.t_start}
        atomic_save(obj, self.ckpt_path)
        with torch.no_grad():
            save_grid(self.G_ema(self.grid_z, noise_mode="const"),
                      self.run_dir / "samples" / f"fakes_{round(kimg):06d}.png", nrow=8)

    def drawn_noise(self, gen: torch.Generator, n: int) -> list[torch.Tensor]:
        return [x.to(self.device) for x in self.G.synthesis.make_noise(n, generator=gen, device="cpu")]

    def mapped_ws(self, gen: torch.Generator, n: int) -> torch.Tensor:
        z = torch.randn(n, self.G.z_dim, generator=gen).to(self.device)
        z2 = torch.randn(n, self.G.z_dim, generator=gen).to(self.device)
        return style_mix(self.G.mapping(z), self.G.mapping(z2), prob=self.cfg.style_mixing_prob, generator=gen)

    def d_step(self, fakes: torch.Tensor, reals: torch.Tensor) -> None:
        """D: logistic loss on fakes and reals, lazy R1 on reals."""
        cfg, D = self.cfg, self.D
        D.requires_grad_(True)
        do_r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0
        reals.requires_grad_(do_r1)
        logits_fake, logits_real = D(fakes.detach()), D(reals)
        loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        total_D = loss_D
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), reals, create_graph=True)
            r1 = grad.square().sum([1, 2, 3]).mean()
            total_D = total_D + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            self.record(r1_penalty=r1)
        self.opt_D.zero_grad(set_to_none=True)
        total_D.backward()
        self.opt_D.step()
        self.record(loss_D=loss_D, D_real=logits_real.mean(), D_fake=logits_fake.mean())

    def g_step(self, fakes: torch.Tensor, ws: torch.Tensor, gen: torch.Generator) -> None:
        """G: non-saturating loss, optional path-length regularisation, w_avg tracking."""
        cfg, G, B = self.cfg, self.G, self.cfg.batch_size
        self.D.requires_grad_(False)
        loss_G = F.softplus(-self.D(fakes)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.record(loss_G=loss_G)
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            n = max(1, B // cfg.pl_batch_shrink)
            ws_pl = self.mapped_ws(gen, n)
            img = G.synthesis(ws_pl, noise=self.drawn_noise(gen, n))
            y = torch.randn(img.shape, generator=gen).to(self.device) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * y).sum(), ws_pl, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            self.pl_mean = self.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
            pl_penalty = (lengths - self.pl_mean).square().mean()
            (pl_penalty * cfg.pl_weight * cfg.pl_interval).backward()
            self.record(pl_penalty=pl_penalty)
        self.opt_G.step()
        with torch.no_grad():
            G.mapping.w_avg.copy_(ws[:, 0].mean(0).lerp(G.mapping.w_avg, cfg.w_avg_beta))

    @torch.no_grad()
    def ema_step(self) -> None:
        """G_ema follows G with a half-life of `ema_kimg` (ramped up early on)."""
        cfg, B = self.cfg, self.cfg.batch_size
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.step * B * cfg.ema_rampup)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        # Multi-tensor ops: one launch for all parameters instead of one per tensor.
        torch._foreach_lerp_(list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()], 1.0 - beta)
        torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    def one_step(self, sampler: EpochSampler) -> None:
        gen = _step_generator(self.cfg.seed, self.step)
        reals = to_float(self.dataset.get_batch(sampler.indices(self.step))).to(self.device)
        # One batch of fakes per step: it trains D (detached), then G through the updated D.
        self.G.requires_grad_(True)
        ws = self.mapped_ws(gen, self.cfg.batch_size)
        fakes = self.G.synthesis(ws, noise=self.drawn_noise(gen, self.cfg.batch_size))
        self.d_step(fakes, reals)
        self.g_step(fakes, ws, gen)
        self.step += 1
        self.ema_step()

    def log_tick(self, tick_t: float, tick_step: int, bar) -> None:
        now, B = time.time(), self.cfg.batch_size
        row = {"step": self.step, "kimg": round(self.step * B / 1000, 3),
               "img_per_s": round((self.step - tick_step) * B / max(now - tick_t, 1e-9), 2),
               "elapsed_s": round(self.elapsed0 + now - self.t_start, 1)}
        row.update({k: round(torch.stack(v).mean().item(), 5) for k, v in self.stats.items()})
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        bar.set_postfix(kimg=row["kimg"], img_s=row["img_per_s"], G=row.get("loss_G"), D=row.get("loss_D"))
        self.stats.clear()


def train(
    run_dir: str | Path,
    dataset: ImageDataset,
    *,
    G_kwargs: dict,
    D_kwargs: dict,
    cfg: TrainConfig = TrainConfig(),
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a StyleGAN2 in `run_dir`; returns the path of the latest checkpoint.

    Writes `checkpoint.pt` (bundle + optimizer state), `metrics.jsonl` and `samples/fakes_KKKKKK.png`.
    `max_steps` stops early after that many steps of this call, `max_seconds` after the first step that ends
    past that much wall-clock time; either way the run ends on a checkpoint and stays resumable.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dataset.resolution != G_kwargs.get("img_resolution", 32) or dataset.channels != G_kwargs.get("img_channels", 1):
        raise ValueError(f"dataset is {dataset.channels}x{dataset.resolution}^2 but G makes "
                         f"{G_kwargs.get('img_channels', 1)}x{G_kwargs.get('img_resolution', 32)}^2")
    run = _Run(run_dir, dataset, G_kwargs=G_kwargs, D_kwargs=D_kwargs, cfg=cfg, device=torch.device(device))
    run.resume()
    sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed)
    steps_per_ckpt = max(1, round(cfg.checkpoint_kimg * 1000 / cfg.batch_size))
    steps_per_tick = max(1, round(cfg.tick_kimg * 1000 / cfg.batch_size))
    end_step = cfg.total_steps if max_steps is None else min(cfg.total_steps, run.step + max_steps)
    run.t_start = time.time()
    tick_t, tick_step = time.time(), run.step
    bar = tqdm(total=end_step, initial=run.step, disable=not progress, unit="step", dynamic_ncols=True)
    while run.step < end_step:
        run.one_step(sampler)
        if run.step % steps_per_tick == 0 or run.step == end_step:
            run.log_tick(tick_t, tick_step, bar)
            tick_t, tick_step = time.time(), run.step
        out_of_time = max_seconds is not None and time.time() - run.t_start >= max_seconds
        if run.step % steps_per_ckpt == 0 or run.step == end_step or out_of_time:
            run.save()
        bar.update(1)
        if out_of_time:
            break
    bar.close()
    if not run.ckpt_path.exists():
        run.save()
    return run.ckpt_path
