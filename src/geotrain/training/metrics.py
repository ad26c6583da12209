"""Pixel-classification metrics from one confusion matrix, so every figure agrees with the others."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SegmentationMetrics:
    accuracy: float
    miou: float
    # per class index: precision, recall, f1, iou
    precision: list[float]
    recall: list[float]
    f1: list[float]
    iou: list[float]


def from_confusion(matrix: torch.Tensor) -> SegmentationMetrics:
    """``matrix[true, predicted]`` pixel counts."""
    m = matrix.double()
    tp = m.diag()
    predicted = m.sum(dim=0)
    actual = m.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(tp)
    )
    union = predicted + actual - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))
    present = union > 0  # classes neither in the truth nor predicted do not pull the mean down
    total = m.sum()
    return SegmentationMetrics(
        accuracy=float(tp.sum() / total) if total > 0 else 0.0,
        miou=float(iou[present].mean()) if present.any() else 0.0,
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        iou=iou.tolist(),
    )


def change_scores(matrix: torch.Tensor) -> tuple[float, float, float]:
    """Precision, recall and F1 of finding change: any class but index 0 (no change), whichever it is."""
    m = matrix.double()
    found = float(m[1:, 1:].sum())
    predicted, actual = float(m[:, 1:].sum()), float(m[1:, :].sum())
    precision = found / predicted if predicted else 0.0
    recall = found / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
