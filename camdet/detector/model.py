"""A YOLOv8-style anchor-free detector written from the published architecture.

Backbone (Conv-BN-SiLU stem, C2f stages, SPPF), PAN-FPN neck and a decoupled head with
Distribution Focal Loss box regression, at strides 8/16/32. With the default ``n`` scale
(width 0.25, depth 0.33) it has the size and compute of YOLOv8n.

In training mode :class:`Detector` returns the raw per-level maps the loss consumes. In
eval mode it returns ultralytics' ONNX export layout ``[B, 4 + nc, A]`` (A = 8400 at 640):
rows 0-3 are cx, cy, w, h in letterboxed input pixels, rows 4.. the per-class sigmoid
scores, anchors ordered level by level (stride 8 first), row-major within a level, so the
exported model is a drop-in for an ultralytics export as
``camdet.steps.postprocess.detections`` reads it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from camdet.geometry import INPUT_SIZE

STRIDES: tuple[int, int, int] = (8, 16, 32)
"""Downsampling factor of each output level (P3, P4, P5)."""

REG_MAX: int = 16
"""Bins of the DFL distance distribution; distances cover 0 .. REG_MAX - 1 strides."""

NUM_CLASSES: int = 4
"""Classes of the demo detector (``camdet.scenes.CLASSES``)."""

DEMO_WEIGHTS: Path = Path(__file__).parent / "weights" / "demo.pt"
"""The trained demo detector (fp16 state_dict, see MODEL_CARD.md); :func:`load_weights` reads it."""

# BatchNorm settings of the YOLO family: a larger eps and slower running statistics
# than torch's defaults keep fp16 inference stable and smooth noisy small-batch stats.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.03


@dataclass(frozen=True)
class DetectorConfig:
    """Size of a :class:`Detector`.

    Attributes:
        num_classes: Number of object classes.
        width: Channel multiplier on the YOLOv8 base widths (64 .. 1024).
        depth: Block-count multiplier on the YOLOv8 base depths (3, 6, 6, 3).
        max_channels: Cap on any stage's channels before the width multiplier.
        reg_max: DFL bins per box side.
    """

    num_classes: int = NUM_CLASSES
    width: float = 0.25
    depth: float = 0.33
    max_channels: int = 1024
    reg_max: int = REG_MAX

    def channels(self, base: int) -> int:
        """Channels of a stage whose YOLOv8 base width is ``base``, rounded up to 8."""
        return math.ceil(min(base, self.max_channels) * self.width / 8) * 8

    def blocks(self, base: int) -> int:
        """Bottlenecks of a C2f whose YOLOv8 base depth is ``base`` (at least one)."""
        return max(round(base * self.depth), 1)


class ConvBnAct(nn.Module):
    """Conv2d without bias, BatchNorm, SiLU; ``same`` padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c_in, H, W]`` -> ``[B, c_out, H / stride, W / stride]``."""
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (eval mode only)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn_eval(self.conv, self.bn)
            self.bn = nn.Identity()


class Bottleneck(nn.Module):
    """Two 3x3 convolutions with an optional residual connection."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBnAct(channels, channels, 3)
        self.cv2 = ConvBnAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP block with two convolutions whose every bottleneck output is concatenated."""

    def __init__(self, c_in: int, c_out: int, blocks: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBnAct(c_in, 2 * self.hidden, 1)
        self.cv2 = ConvBnAct((2 + blocks) * self.hidden, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c_in, H, W]`` -> ``[B, c_out, H, W]``."""
        parts = list(self.cv1(x).split(self.hidden, dim=1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools concatenated."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBnAct(c_in, hidden, 1)
        self.cv2 = ConvBnAct(4 * hidden, c_out, 1)
        self.pool = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c_in, H, W]`` -> ``[B, c_out, H, W]``."""
        x = self.cv1(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.cv2(torch.cat((x, p1, p2, self.pool(p2)), dim=1))


class Backbone(nn.Module):
    """Stem and four downsampling C2f stages ending in SPPF; returns P3, P4, P5."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(ConvBnAct(3, c(64), 3, 2), ConvBnAct(c(64), c(128), 3, 2))
        self.stage2 = C2f(c(128), c(128), cfg.blocks(3), shortcut=True)
        self.stage3 = nn.Sequential(
            ConvBnAct(c(128), c(256), 3, 2), C2f(c(256), c(256), cfg.blocks(6), shortcut=True)
        )
        self.stage4 = nn.Sequential(
            ConvBnAct(c(256), c(512), 3, 2), C2f(c(512), c(512), cfg.blocks(6), shortcut=True)
        )
        self.stage5 = nn.Sequential(
            ConvBnAct(c(512), c(1024), 3, 2),
            C2f(c(1024), c(1024), cfg.blocks(3), shortcut=True),
            SPPF(c(1024), c(1024)),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` -> feature maps at strides 8, 16 and 32."""
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        return p3, p4, self.stage5(p4)


class Neck(nn.Module):
    """PAN-FPN: a top-down pass (upsample + C2f) then a bottom-up pass (stride-2 conv + C2f)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        c, n = cfg.channels, cfg.blocks(3)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top_down4 = C2f(c(1024) + c(512), c(512), n, shortcut=False)
        self.top_down3 = C2f(c(512) + c(256), c(256), n, shortcut=False)
        self.down3 = ConvBnAct(c(256), c(256), 3, 2)
        self.bottom_up4 = C2f(c(256) + c(512), c(512), n, shortcut=False)
        self.down4 = ConvBnAct(c(512), c(512), 3, 2)
        self.bottom_up5 = C2f(c(512) + c(1024), c(1024), n, shortcut=False)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Fuse backbone P3/P4/P5 into the three maps the head reads (same strides)."""
        p3, p4, p5 = feats
        t4 = self.top_down4(torch.cat((self.up(p5), p4), dim=1))
        n3 = self.top_down3(torch.cat((self.up(t4), p3), dim=1))
        n4 = self.bottom_up4(torch.cat((self.down3(n3), t4), dim=1))
        n5 = self.bottom_up5(torch.cat((self.down4(n4), p5), dim=1))
        return [n3, n4, n5]


class Head(nn.Module):
    """Decoupled head: per level a box branch (4 x reg_max DFL logits) and a class branch."""

    def __init__(self, cfg: DetectorConfig, in_channels: list[int]) -> None:
        super().__init__()
        self.num_classes, self.reg_max = cfg.num_classes, cfg.reg_max
        box_hidden = max(16, in_channels[0] // 4, 4 * cfg.reg_max)
        cls_hidden = max(in_channels[0], min(cfg.num_classes, 100))
        self.box = nn.ModuleList(self._branch(c, box_hidden, 4 * cfg.reg_max) for c in in_channels)
        self.cls = nn.ModuleList(self._branch(c, cls_hidden, cfg.num_classes) for c in in_channels)

    @staticmethod
    def _branch(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            ConvBnAct(c_in, hidden, 3), ConvBnAct(hidden, hidden, 3), nn.Conv2d(hidden, c_out, 1)
        )

    def init_biases(self, image_size: int = INPUT_SIZE) -> None:
        """Start near the trained regime so early losses do not swamp the backbone.

        Box logits start at 1.0 (a flat DFL distribution); class logits at the prior of
        about 5 objects per image spread over the cells of each level.
        """
        for box, cls, stride in zip(self.box, self.cls, STRIDES, strict=True):
            nn.init.constant_(box[-1].bias, 1.0)
            prior = 5 / self.num_classes / (image_size / stride) ** 2
            nn.init.constant_(cls[-1].bias, math.log(prior))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``[B, C, H, W]`` -> ``[B, 4 * reg_max + nc, H, W]`` (box logits first)."""
        return [
            torch.cat((box(x), cls(x)), dim=1)
            for x, box, cls in zip(feats, self.box, self.cls, strict=True)
        ]


def make_anchors(
    shapes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-center anchor points of all levels, flattened in the head's anchor order.

    Args:
        shapes: ``(H, W)`` of each level's feature map.
        strides: Stride of each level in input pixels.
        device: Where to build the tensors.

    Returns:
        ``(points [A, 2]`` (x, y) in grid units of their own level, i.e. ``cell + 0.5``,
        ``strides [A, 1]`` input pixels per grid unit).
    """
    points, stride_rows = [], []
    for (height, width), stride in zip(shapes, strides, strict=True):
        ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
        xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 2))
        stride_rows.append(torch.full((height * width, 1), float(stride), device=device))
    return torch.cat(points), torch.cat(stride_rows)


def dfl_expectation(box_logits: torch.Tensor, reg_max: int = REG_MAX) -> torch.Tensor:
    """Expected distance of each DFL distribution.

    Args:
        box_logits: ``[B, 4 * reg_max, A]`` logits, sides ordered left, top, right, bottom.
        reg_max: Bins per side.

    Returns:
        ``[B, 4, A]`` distances from the anchor in grid units of the anchor's level.
    """
    batch, _, anchors = box_logits.shape
    probs = box_logits.view(batch, 4, reg_max, anchors).softmax(dim=2)
    bins = torch.arange(reg_max, device=box_logits.device, dtype=probs.dtype)
    return (probs * bins.view(1, 1, reg_max, 1)).sum(dim=2)


def distances_to_xyxy(distances: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Turn (left, top, right, bottom) distances around anchor points into corner boxes.

    Args:
        distances: ``[..., 4]`` ltrb distances.
        points: ``[..., 2]`` (x, y) anchor points, broadcastable, same units.

    Returns:
        ``[..., 4]`` (x1, y1, x2, y2).
    """
    return torch.cat((points - distances[..., :2], points + distances[..., 2:]), dim=-1)


class Detector(nn.Module):
    """YOLOv8-style detector; see the module docstring for the two output modes."""

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DetectorConfig()
        self.backbone = Backbone(self.cfg)
        self.neck = Neck(self.cfg)
        c = self.cfg.channels
        self.head = Head(self.cfg, [c(256), c(512), c(1024)])
        self.head.init_biases()
        # Anchors of the last input shape seen in eval mode; kept off the state_dict.
        self._anchor_key: tuple[tuple[int, int], ...] = ()
        self.register_buffer("_points", torch.empty(0, 2), persistent=False)
        self.register_buffer("_strides", torch.empty(0, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        """Number of class score rows in the output."""
        return self.cfg.num_classes

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw head maps, the training output.

        Args:
            images: ``[B, 3, H, W]`` float RGB in [0, 1], H and W multiples of 32.

        Returns:
            One ``[B, 4 * reg_max + nc, H / s, W / s]`` map per stride s in (8, 16, 32).
        """
        return self.head(self.neck(self.backbone(images)))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """Raw level maps in training mode; the ultralytics export layout in eval mode.

        Args:
            images: ``[B, 3, H, W]`` float RGB in [0, 1] (letterboxed, 640 x 640 in
                production), H and W multiples of 32.

        Returns:
            Training: see :meth:`forward_levels`. Eval: ``[B, 4 + nc, A]`` with cx, cy, w, h
            in input pixels and per-class sigmoid scores (A = 8400 at 640 x 640).
        """
        levels = self.forward_levels(images)
        return levels if self.training else self.decode(levels)

    def decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Turn raw level maps into the export layout ``[B, 4 + nc, A]`` (see :meth:`forward`)."""
        flat = torch.cat([level.flatten(2) for level in levels], dim=2)
        box_logits, cls_logits = flat.split((4 * self.cfg.reg_max, self.num_classes), dim=1)
        points, strides = self._anchors(levels)
        distances = dfl_expectation(box_logits, self.cfg.reg_max)
        # Channel-major arithmetic (no transposes) keeps the exported graph short.
        lt, rb = distances.split(2, dim=1)
        center = (points.T + (rb - lt) / 2) * strides.T
        size = (lt + rb) * strides.T
        return torch.cat((center, size, cls_logits.sigmoid()), dim=1)

    def _anchors(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple((level.shape[2], level.shape[3]) for level in levels)
        if key != self._anchor_key or self._points.device != levels[0].device:
            self._points, self._strides = make_anchors(list(key), STRIDES, levels[0].device)
            self._anchor_key = key
        return self._points.to(levels[0].dtype), self._strides.to(levels[0].dtype)

    def fuse(self) -> Detector:
        """Fold every BatchNorm into its convolution for inference; returns ``self``."""
        self.eval()
        for module in self.modules():
            if isinstance(module, ConvBnAct):
                module.fuse()
        return self


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases, BatchNorm included)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: Detector, image_size: int = INPUT_SIZE) -> float:
    """Forward compute of one image, in GFLOPs (a multiply-add counts as 2 FLOPs).

    Args:
        model: The detector (left in the training/eval mode it had).
        image_size: Side of the square input in pixels.

    Returns:
        Convolution and matmul FLOPs of one ``[1, 3, size, size]`` forward, / 1e9.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def save_weights(model: Detector, path: str | Path, meta: dict[str, object] | None = None) -> None:
    """Save an fp16 state_dict with the config that rebuilds the model (about 6 MB for n).

    Args:
        model: The detector to save.
        path: Destination file (``.pt``).
        meta: JSON-like facts about the run to store beside the weights.
    """
    state = {
        k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.cpu()
        for k, v in model.state_dict().items()
    }
    torch.save({"config": asdict(model.cfg), "state_dict": state, "meta": meta or {}}, path)


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> Detector:
    """Rebuild a detector saved by :func:`save_weights`, in fp32 and eval mode.

    Args:
        path: A file written by :func:`save_weights`.
        device: Where to put the model.

    Returns:
        The detector, eval mode (export layout output).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = Detector(DetectorConfig(**checkpoint["config"]))
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    )
    return model.to(device).eval()
