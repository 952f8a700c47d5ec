"""Task-aligned assignment and the YOLOv8-style detection loss (BCE + CIoU + DFL).

Ground truth comes padded to the batch's largest box count: ``labels [B, M]``,
``boxes [B, M, 4]`` xyxy in letterboxed input pixels and ``mask [B, M]`` marking real
boxes. Everything is vectorized over the batch, boxes and anchors (``[B, M, A]`` tensors).

Assignment (TOOD's task-aligned learning): an anchor is a candidate for a box when its
center lies inside the box; the alignment metric ``score^alpha * IoU^beta`` (score of the
box's class at the anchor, IoU of the anchor's predicted box) picks the top-k candidates
per box; an anchor claimed by several boxes keeps the one its prediction overlaps most.
Positives get soft class targets: the alignment metric normalized per box so that the
box's best anchor gets its best IoU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from camdet.detector.model import REG_MAX, STRIDES, dfl_expectation, distances_to_xyxy, make_anchors

_EPS = 1e-9


@dataclass(frozen=True)
class Assignment:
    """Per-anchor training targets of a batch.

    Attributes:
        fg_mask: ``[B, A]`` bool, anchors assigned to some box.
        boxes: ``[B, A, 4]`` float xyxy target box of each anchor, input pixels
            (meaningless where ``fg_mask`` is False).
        scores: ``[B, A, nc]`` float soft class targets in [0, 1] (zero on background).
        gt_index: ``[B, A]`` int64 index into the padded boxes of each anchor's box.
    """

    fg_mask: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    gt_index: torch.Tensor


@dataclass(frozen=True)
class LossWeights:
    """Gains of the three loss terms and the assigner's settings (YOLOv8's defaults)."""

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0


def pairwise_iou(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """IoU of every ground-truth box with every predicted box of the same image.

    Args:
        gt: ``[B, M, 4]`` xyxy boxes.
        pred: ``[B, A, 4]`` xyxy boxes, same units.

    Returns:
        ``[B, M, A]`` IoU in [0, 1].
    """
    # Per-coordinate broadcasting keeps the peak memory at a few [B, M, A] tensors
    # instead of a [B, M, A, 4] intermediate.
    g = [c.unsqueeze(2) for c in gt.unbind(-1)]
    p = [c.unsqueeze(1) for c in pred.unbind(-1)]
    inter_w = (torch.minimum(g[2], p[2]) - torch.maximum(g[0], p[0])).clamp(min=0)
    inter_h = (torch.minimum(g[3], p[3]) - torch.maximum(g[1], p[1])).clamp(min=0)
    inter = inter_w * inter_h
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    area_p = (p[2] - p[0]).clamp(min=0) * (p[3] - p[1]).clamp(min=0)
    return inter / (area_g + area_p - inter + _EPS)


def complete_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complete IoU (IoU minus center-distance and aspect-ratio penalties) of paired boxes.

    Args:
        a: ``[N, 4]`` xyxy boxes (predictions).
        b: ``[N, 4]`` xyxy boxes (targets), same units.

    Returns:
        ``[N]`` CIoU in [-1, 1].
    """
    w1, h1 = a[:, 2] - a[:, 0], (a[:, 3] - a[:, 1]).clamp(min=_EPS)
    w2, h2 = b[:, 2] - b[:, 0], (b[:, 3] - b[:, 1]).clamp(min=_EPS)
    inter_w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    inter_h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = inter_w * inter_h
    iou = inter / (w1 * h1 + w2 * h2 - inter + _EPS)
    enclose_w = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    enclose_h = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    diagonal2 = enclose_w**2 + enclose_h**2 + _EPS
    center2 = (
        (a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) ** 2 + (a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) ** 2
    ) / 4
    aspect = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        # clamp, not "+ eps": 1 + 1e-9 rounds to 1 in fp32, and 0 / 0 for identical boxes.
        trade_off = aspect / (aspect - iou + 1).clamp(min=_EPS)
    return iou - (center2 / diagonal2 + aspect * trade_off)


def anchors_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each anchor point lies strictly inside each box.

    Args:
        points: ``[A, 2]`` (x, y) anchor points, input pixels.
        boxes: ``[B, M, 4]`` xyxy boxes, input pixels.

    Returns:
        ``[B, M, A]`` bool.
    """
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (c.unsqueeze(-1) for c in boxes.unbind(-1))
    margin = torch.stack((x - x1, y - y1, x2 - x, y2 - y), dim=-1)
    return margin.amin(dim=-1) > _EPS


def _top_candidates(metric: torch.Tensor, candidates: torch.Tensor, topk: int) -> torch.Tensor:
    """Each box's ``topk`` candidate anchors by alignment metric, as a ``[B, M, A]`` mask."""
    # Non-candidates rank below every candidate, so a box with fewer than topk candidates
    # (or with all-zero metrics early in training) still gets all of its candidates.
    ranked = metric.masked_fill(~candidates, -1.0)
    index = ranked.topk(min(topk, metric.shape[-1]), dim=-1).indices
    chosen = torch.zeros_like(candidates).scatter_(-1, index, True)
    return chosen & candidates


def _resolve_conflicts(positive: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """Keep, for anchors claimed by several boxes, only the box of highest IoU among them."""
    claimed_by_many = positive.sum(dim=1, keepdim=True) > 1
    # -1 off the claimants so that an all-zero IoU column still picks a claimant.
    best = torch.where(positive, iou, -1.0).argmax(dim=1, keepdim=True)
    best_only = torch.zeros_like(positive).scatter_(1, best, True)
    return torch.where(claimed_by_many, best_only & positive, positive)


@torch.no_grad()
def assign(
    pred_scores: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    weights: LossWeights | None = None,
) -> Assignment:
    """Task-aligned assignment of anchors to ground-truth boxes.

    Args:
        pred_scores: ``[B, A, nc]`` predicted class probabilities (after sigmoid).
        pred_boxes: ``[B, A, 4]`` predicted xyxy boxes, input pixels.
        points: ``[A, 2]`` anchor points (cell centers), input pixels.
        gt_labels: ``[B, M]`` int64 class of each padded box.
        gt_boxes: ``[B, M, 4]`` xyxy boxes, input pixels.
        gt_mask: ``[B, M]`` bool, real (not padding) boxes.
        weights: Assigner settings (topk, alpha, beta).

    Returns:
        The per-anchor targets.
    """
    weights = weights or LossWeights()
    batch, anchors, num_classes = pred_scores.shape
    if gt_boxes.shape[1] == 0:
        return Assignment(
            fg_mask=torch.zeros(batch, anchors, dtype=torch.bool, device=pred_scores.device),
            boxes=torch.zeros_like(pred_boxes),
            scores=torch.zeros_like(pred_scores),
            gt_index=torch.zeros(batch, anchors, dtype=torch.long, device=pred_scores.device),
        )
    candidates = anchors_in_boxes(points, gt_boxes) & gt_mask.unsqueeze(-1)
    iou = pairwise_iou(gt_boxes, pred_boxes) * candidates
    class_index = gt_labels.clamp(min=0).unsqueeze(-1).expand(-1, -1, anchors)
    class_score = pred_scores.transpose(1, 2).gather(1, class_index)
    metric = class_score.pow(weights.alpha) * iou.pow(weights.beta) * candidates

    positive = _top_candidates(metric, candidates, weights.topk)
    positive = _resolve_conflicts(positive, iou)

    fg_mask = positive.any(dim=1)
    gt_index = positive.to(torch.uint8).argmax(dim=1)
    labels = gt_labels.gather(1, gt_index).clamp(min=0)
    boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))

    metric = metric * positive
    best_metric = metric.amax(dim=-1, keepdim=True)
    best_iou = (iou * positive).amax(dim=-1, keepdim=True)
    quality = (metric * best_iou / (best_metric + _EPS)).amax(dim=1)
    scores = F.one_hot(labels, num_classes).to(pred_scores.dtype)
    scores = scores * (quality * fg_mask).unsqueeze(-1)
    return Assignment(fg_mask=fg_mask, boxes=boxes, scores=scores, gt_index=gt_index)


def dfl_loss(
    box_logits: torch.Tensor, target: torch.Tensor, reg_max: int = REG_MAX
) -> torch.Tensor:
    """Distribution Focal Loss: cross-entropy on the two bins around each target distance.

    Args:
        box_logits: ``[N, 4, reg_max]`` logits of the four side distributions.
        target: ``[N, 4]`` ltrb distances in grid units, within ``[0, reg_max - 1)``.
        reg_max: Bins per side.

    Returns:
        ``[N]`` loss per anchor, averaged over the four sides.
    """
    left = target.long()
    right = left + 1
    weight_left = right.to(target.dtype) - target
    flat = box_logits.reshape(-1, reg_max)
    ce_left = F.cross_entropy(flat, left.reshape(-1), reduction="none").view_as(target)
    ce_right = F.cross_entropy(flat, right.reshape(-1), reduction="none").view_as(target)
    return (ce_left * weight_left + ce_right * (1 - weight_left)).mean(dim=-1)


class DetectionLoss(nn.Module):
    """YOLOv8-style loss on the raw level maps of :class:`camdet.detector.model.Detector`.

    Terms, each normalized by the sum of the soft class targets of the batch:
    BCE on all class logits, ``1 - CIoU`` and DFL on positives (weighted by their target).
    """

    def __init__(
        self, num_classes: int, reg_max: int = REG_MAX, weights: LossWeights | None = None
    ) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.weights = weights or LossWeights()

    def forward(
        self,
        levels: list[torch.Tensor],
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss of one batch.

        Args:
            levels: Raw head maps, one ``[B, 4 * reg_max + nc, H / s, W / s]`` per stride.
            gt_labels: ``[B, M]`` int64 class ids of the padded boxes.
            gt_boxes: ``[B, M, 4]`` float xyxy boxes in letterboxed input pixels.
            gt_mask: ``[B, M]`` bool, real boxes.

        Returns:
            ``(total, parts)``: the weighted sum (scalar) and the detached unweighted
            ``box``, ``cls`` and ``dfl`` terms.
        """
        batch = levels[0].shape[0]
        flat = torch.cat([level.float().flatten(2) for level in levels], dim=2)
        box_logits, cls_logits = flat.split((4 * self.reg_max, self.num_classes), dim=1)
        cls_logits = cls_logits.transpose(1, 2)
        shapes = [(level.shape[2], level.shape[3]) for level in levels]
        points, strides = make_anchors(shapes, STRIDES, flat.device)
        # Boxes in grid units of each anchor's level, where DFL distances live.
        pred_boxes = distances_to_xyxy(
            dfl_expectation(box_logits, self.reg_max).transpose(1, 2), points
        )

        target = assign(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach() * strides,
            points * strides,
            gt_labels,
            gt_boxes.float(),
            gt_mask,
            self.weights,
        )
        normalizer = target.scores.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, target.scores, reduction="sum")

        fg = target.fg_mask
        weight = target.scores.sum(dim=-1)[fg]
        target_grid = target.boxes / strides
        loss_box = ((1 - complete_iou(pred_boxes[fg], target_grid[fg])) * weight).sum()
        ltrb = torch.cat((points - target_grid[..., :2], target_grid[..., 2:] - points), dim=-1)
        side_logits = box_logits.view(batch, 4, self.reg_max, -1).permute(0, 3, 1, 2)[fg]
        ltrb = ltrb[fg].clamp(0, self.reg_max - 1 - 0.01)
        loss_dfl = (dfl_loss(side_logits, ltrb, self.reg_max) * weight).sum()

        parts = {
            "box": loss_box / normalizer,
            "cls": loss_cls / normalizer,
            "dfl": loss_dfl / normalizer,
        }
        w = self.weights
        total = w.box * parts["box"] + w.cls * parts["cls"] + w.dfl * parts["dfl"]
        return total, {name: value.detach() for name, value in parts.items()}
