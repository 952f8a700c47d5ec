"""Time-budgeted training of the demo detector on synthetic frames.

    python -m camdet.detector.train --out DIR --minutes 7 --batch 64 --seed 0

AdamW with linear warmup then a cosine decay over the time budget (not over a step
count, so the schedule finishes whatever the throughput), bf16 autocast on CUDA, an EMA of
the weights (what gets saved and validated), gradient-norm clipping. Writes
``DIR/last.pt`` and ``DIR/best.pt`` (EMA weights, fp16, lowest validation loss for best),
``DIR/run.json`` (command, seeds, machine, throughput, losses) and ``DIR/train.log``.

Importable without rich, onnxruntime or tritonclient, so it runs with a bare PyTorch
install plus typer (the GPU machine's).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from torch import nn
from torch.utils.data import DataLoader

from camdet import scenes
from camdet.detector.data import (
    Batch,
    TrainingFrames,
    ValidationFrames,
    collate,
    recommended_workers,
    worker_init,
)
from camdet.detector.loss import DetectionLoss
from camdet.detector.model import (
    Detector,
    DetectorConfig,
    count_gflops,
    count_parameters,
    load_weights,
    save_weights,
)
from camdet.geometry import INPUT_SIZE, PIXEL_SCALE

logger = logging.getLogger(__name__)


def scenes_digest() -> str:
    """SHA-256 over the modules of :mod:`camdet.scenes` in name order (hex)."""
    digest = hashlib.sha256()
    for path in sorted(Path(scenes.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all recorded in ``run.json``).

    Attributes:
        out: Output folder.
        minutes: Wall-clock budget of the training loop, minutes.
        batch: Frames per step.
        seed: Seed of torch, numpy, Python and the training frames.
        workers: Data-loader processes.
        lr: Peak AdamW learning rate.
        weight_decay: Decoupled weight decay of convolution weights (not BN or biases).
        warmup_steps: Steps of linear learning-rate warmup.
        final_lr_fraction: Learning rate at the end of the cosine, relative to ``lr``.
        ema_decay: Asymptotic EMA decay.
        ema_tau: Steps over which the EMA decay ramps up to ``ema_decay``.
        grad_clip: Gradient-norm clipping threshold.
        val_batches: Validation batches (of ``batch`` frames) rendered at the start.
        val_every_s: Seconds between validations of the EMA weights.
        log_every: Steps between log lines.
        init: Weights to start from (a file written by ``save_weights``), or None.
        imgsz_check: Check the export layout at the production input size before and after.
        device: ``cuda``, ``cpu`` or None for CUDA when available.
    """

    out: Path
    minutes: float
    batch: int = 64
    seed: int = 0
    workers: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 300
    final_lr_fraction: float = 0.02
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    grad_clip: float = 10.0
    val_batches: int = 4
    val_every_s: float = 60.0
    log_every: int = 50
    init: Path | None = None
    imgsz_check: bool = False
    device: str | None = None


class ModelEma:
    """Exponential moving average of a model's floating-point state (weights and BN stats)."""

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0
        self._ema = [v for v in self.module.state_dict().values() if v.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current state in; early updates weigh more (ramped decay)."""
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / self.tau))
        current = [v.detach() for v in model.state_dict().values() if v.is_floating_point()]
        torch._foreach_lerp_(self._ema, current, 1 - decay)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on convolution weights only (BN and biases are not decayed)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=torch.cuda.is_available())


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warmup by step, cosine by elapsed time.

    Args:
        step: Optimizer steps done so far.
        progress: Elapsed share of the time budget, in [0, 1].
        cfg: The run settings.

    Returns:
        Factor on ``cfg.lr``.
    """
    warmup = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return warmup * (cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * cosine)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, S, S]`` uint8 -> float32 in [0, 1], channels-last for faster convolutions."""
    return (images.float() * PIXEL_SCALE).contiguous(memory_format=torch.channels_last)


def render_validation(cfg: TrainConfig) -> list[Batch]:
    """Render the fixed validation batches with the loader's workers."""
    frames = ValidationFrames(cfg.seed, cfg.val_batches * cfg.batch)
    loader = DataLoader(
        frames,
        batch_size=cfg.batch,
        num_workers=cfg.workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
    )
    return list(loader)


@torch.no_grad()
def validation_loss(
    model: Detector, loss_fn: DetectionLoss, batches: list[Batch], device: torch.device
) -> dict[str, float]:
    """Mean loss terms of ``model`` (eval mode, running BN stats) over ``batches``."""
    totals: dict[str, float] = {"total": 0.0, "box": 0.0, "cls": 0.0, "dfl": 0.0}
    model.eval()
    for batch in batches:
        batch = batch.to(device)
        with _autocast(device):
            levels = model.forward_levels(to_input(batch.images))
        total, parts = loss_fn(levels, batch.labels, batch.boxes, batch.mask)
        totals["total"] += total.item() / len(batches)
        for name, value in parts.items():
            totals[name] += value.item() / len(batches)
    return totals


def _autocast(device: torch.device) -> torch.autocast:
    # bf16 needs no loss scaling; on CPU the smoke runs stay in fp32.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def check_export_layout(model: Detector, device: torch.device) -> None:
    """Assert the eval-mode output is ``[1, 4 + nc, 8400]`` at the production input size.

    Raises:
        RuntimeError: If the layout differs.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device=device))
    model.train(was_training)
    expected = (1, 4 + model.num_classes, 8400)
    if tuple(out.shape) != expected:
        raise RuntimeError(f"export layout {tuple(out.shape)}, expected {expected}")
    logger.info("export layout check: %s", expected)


def machine_facts(device: torch.device) -> dict[str, object]:
    """Device, library versions and host facts for the run record."""
    facts: dict[str, object] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


class Trainer:
    """One training run: model, EMA, optimizer, loss and the time-budgeted loop."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        seed_everything(cfg.seed)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        model = load_weights(cfg.init).train() if cfg.init else Detector(DetectorConfig())
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.ema = ModelEma(self.model, cfg.ema_decay, cfg.ema_tau)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.loss_fn = DetectionLoss(self.model.num_classes)
        self.history: list[dict[str, float]] = []
        self.best_val = math.inf
        self.seen = 0
        self.step = 0

    def run(self) -> dict[str, object]:
        """Train until the budget is spent; save weights; return the run record."""
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        if cfg.imgsz_check:
            check_export_layout(self.model, self.device)
        if Path("/dev/shm").is_dir():
            # Finished batches cross from the workers through /dev/shm (about 80 MB each).
            logger.info("/dev/shm free: %.1f GB", shutil.disk_usage("/dev/shm").free / 1e9)
        val_batches = render_validation(cfg)
        loader = DataLoader(
            TrainingFrames(cfg.seed, cfg.batch),
            batch_size=None,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=worker_init,
            prefetch_factor=2 if cfg.workers else None,
            persistent_workers=False,
        )
        start = time.perf_counter()
        budget = cfg.minutes * 60
        self._loop(loader, val_batches, start, budget)
        elapsed = time.perf_counter() - start
        final = self._validate(val_batches, elapsed)
        if cfg.imgsz_check:
            check_export_layout(self.ema.module, self.device)
        return self._record(elapsed, final)

    def _loop(
        self, loader: DataLoader, val_batches: list[Batch], start: float, budget: float
    ) -> None:
        cfg = self.cfg
        window_start, window_seen, wait = start, 0, 0.0
        running = torch.zeros(4, device=self.device)
        next_val = start + cfg.val_every_s
        fetched = time.perf_counter()
        for batch in loader:
            now = time.perf_counter()
            wait += now - fetched
            if now - start >= budget:
                break
            running += self._train_step(batch, lr_factor(self.step, (now - start) / budget, cfg))
            window_seen += batch.images.shape[0]
            if self.step % cfg.log_every == 0:
                now = time.perf_counter()
                self._log(
                    running / cfg.log_every,
                    window_seen / (now - window_start),
                    wait / (now - window_start),
                )
                running.zero_()
                window_start, window_seen, wait = now, 0, 0.0
            if time.perf_counter() >= next_val:
                self._validate(val_batches, time.perf_counter() - start)
                next_val = time.perf_counter() + cfg.val_every_s
            fetched = time.perf_counter()

    def _train_step(self, batch: Batch, factor: float) -> torch.Tensor:
        """One optimizer step; returns ``[total, box, cls, dfl]`` (on device, no sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor
        batch = batch.to(self.device)
        with _autocast(self.device):
            levels = self.model(to_input(batch.images))
        total, parts = self.loss_fn(levels, batch.labels, batch.boxes, batch.mask)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.seen += batch.images.shape[0]
        self.step += 1
        return torch.stack((total.detach(), parts["box"], parts["cls"], parts["dfl"]))

    def _log(self, losses: torch.Tensor, images_per_s: float, wait_share: float) -> None:
        total, box, cls, dfl = losses.tolist()
        if not math.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {self.step}")
        logger.info(
            "step %d seen %d | %.0f img/s, loader wait %.0f%% | "
            "loss %.3f box %.3f cls %.3f dfl %.3f | lr %.2e",
            self.step,
            self.seen,
            images_per_s,
            100 * wait_share,
            total,
            box,
            cls,
            dfl,
            self.optimizer.param_groups[0]["lr"],
        )

    def _validate(self, val_batches: list[Batch], elapsed: float) -> dict[str, float]:
        """Validate the EMA weights; save ``last.pt`` and, when it improved, ``best.pt``."""
        losses = validation_loss(self.ema.module, self.loss_fn, val_batches, self.device)
        losses.update(step=self.step, seen=self.seen, elapsed_s=round(elapsed, 1))
        self.history.append(losses)
        meta = {"step": self.step, "seen": self.seen, "val_loss": losses["total"]}
        save_weights(self.ema.module, self.cfg.out / "last.pt", meta)
        if losses["total"] < self.best_val:
            self.best_val = losses["total"]
            save_weights(self.ema.module, self.cfg.out / "best.pt", meta)
        logger.info("validation (EMA) at step %d: %s", self.step, _fmt(losses))
        return losses

    def _record(self, elapsed: float, final: dict[str, float]) -> dict[str, object]:
        model = self.ema.module
        return {
            "command": " ".join(
                [Path(sys.executable).name, "-m", "camdet.detector.train", *sys.argv[1:]]
            ),
            "config": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()
            },
            "machine": machine_facts(self.device),
            # The scene generator defines the data; its hash pins which version trained.
            "scenes_sha256": scenes_digest(),
            "params": count_parameters(model),
            "gflops_640": round(count_gflops(model), 3),
            "steps": self.step,
            "images_seen": self.seen,
            "train_seconds": round(elapsed, 1),
            "images_per_s": round(self.seen / elapsed, 1),
            "final_val": final,
            "best_val_loss": self.best_val,
            "val_history": self.history,
        }


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())


def train(cfg: TrainConfig) -> dict[str, object]:
    """Run one training and write its record to ``cfg.out / 'run.json'``.

    Args:
        cfg: The run settings.

    Returns:
        The run record.
    """
    record = Trainer(cfg).run()
    (cfg.out / "run.json").write_text(json.dumps(record, indent=2))
    return record


_DEFAULTS = TrainConfig(out=Path("."), minutes=0.0)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet detector train`` alone, for ``python -m camdet.detector.train``."""


@app.command()
def train_command(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    minutes: Annotated[
        float, typer.Option(help="Wall-clock budget of the training loop, minutes.")
    ],
    batch: Annotated[int, typer.Option(help="Frames per step.")] = _DEFAULTS.batch,
    seed: Annotated[
        int, typer.Option(help="Seed of torch, numpy, Python and the training frames.")
    ] = (_DEFAULTS.seed),
    workers: Annotated[
        int | None, typer.Option(help="Data-loader processes.", show_default="CPU cores - 1")
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = _DEFAULTS.lr,
    weight_decay: Annotated[
        float, typer.Option(help="Weight decay of convolution weights (not BN or biases).")
    ] = (_DEFAULTS.weight_decay),
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear learning-rate warmup.")] = (
        _DEFAULTS.warmup_steps
    ),
    val_batches: Annotated[
        int, typer.Option(help="Validation batches (of --batch frames), rendered at the start.")
    ] = (_DEFAULTS.val_batches),
    val_every_s: Annotated[
        float, typer.Option(help="Seconds between validations of the EMA weights.")
    ] = (_DEFAULTS.val_every_s),
    log_every: Annotated[int, typer.Option(help="Steps between log lines.")] = (
        _DEFAULTS.log_every
    ),
    init: Annotated[
        Path | None, typer.Option(help="Start from these weights (a file written by save_weights).")
    ] = None,
    imgsz_check: Annotated[
        bool, typer.Option("--imgsz-check", help="Check the [1, 4+nc, 8400] layout at 640.")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu.", show_default="cuda if available")
    ] = None,
) -> None:
    """Time-budgeted training of the demo detector on synthetic frames."""
    cfg = TrainConfig(
        out=out,
        minutes=minutes,
        batch=batch,
        seed=seed,
        workers=recommended_workers(os.cpu_count()) if workers is None else workers,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        val_batches=val_batches,
        val_every_s=val_every_s,
        log_every=log_every,
        init=init,
        imgsz_check=imgsz_check,
        device=device,
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(cfg.out / "train.log")],
    )
    record = train(cfg)
    logger.info(
        "done: %d steps, %d images in %.0f s (%.0f img/s), final val loss %.4f",
        record["steps"],
        record["images_seen"],
        record["train_seconds"],
        record["images_per_s"],
        record["final_val"]["total"],  # type: ignore[index]
    )


if __name__ == "__main__":
    app(prog_name="python -m camdet.detector.train")
