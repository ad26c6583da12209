"""Pictures for ModelCharacteristics/: the loss graph and sample results."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no screen on servers
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure


def loss_graph(epochs: Sequence[int], train: Sequence[float], valid: Sequence[float]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, train, marker="o", label="Train")
    ax.plot(epochs, valid, marker="o", label="Validation")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.set_title("Training and validation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def show_results(
    images: Sequence[np.ndarray], truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray], colors: np.ndarray
) -> bytes:
    """Rows of validation chips: the image (first three bands stretched), ground truth, prediction."""
    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), dpi=100, squeeze=False)
    cmap = ListedColormap(colors / 255.0)
    for r, (image, truth, pred) in enumerate(zip(images, truths, predictions, strict=True)):
        axes[r][0].imshow(_display(image))
        axes[r][1].imshow(truth, cmap=cmap, vmin=0, vmax=len(colors) - 1, interpolation="nearest")
        axes[r][2].imshow(pred, cmap=cmap, vmin=0, vmax=len(colors) - 1, interpolation="nearest")
    for ax, title in zip(axes[0], ("Image", "Ground truth", "Prediction"), strict=True):
        ax.set_title(title)
    for ax in axes.flat:
        ax.axis("off")
    return _png(fig)


def _display(image: np.ndarray, stretch: tuple[float, float] | None = None) -> np.ndarray:
    """The first three bands (or the first, grey) stretched from their 2nd to 98th percentile, or ``stretch``."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    x = bands.astype(np.float64)
    low, high = stretch if stretch is not None else (np.percentile(x, 2), np.percentile(x, 98))
    return np.clip((x - low) / max(high - low, 1e-9), 0, 1).transpose(1, 2, 0)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def detection_results(
    images: Sequence[np.ndarray], truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray]
) -> bytes:
    """Validation chips side by side: ground-truth boxes, and the boxes the model found (score >= 0.5)."""
    from matplotlib.patches import Rectangle

    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 2, figsize=(5, 2.5 * rows), dpi=100, squeeze=False)
    for r, (image, truth, found) in enumerate(zip(images, truths, predictions, strict=True)):
        for ax, boxes, color in ((axes[r][0], truth, "lime"), (axes[r][1], found, "red")):
            ax.imshow(_display(image))
            for x0, y0, x1, y1 in boxes:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
    for ax, title in zip(axes[0], ("Ground truth", "Predictions"), strict=True):
        ax.set_title(title)
    for ax in axes.flat:
        ax.axis("off")
    return _png(fig)


def classification_results(images: Sequence[np.ndarray], truths: Sequence[str], predictions: Sequence[str]) -> bytes:
    """Validation chips titled with their class and the class the model gave them."""
    count = max(1, len(images))
    fig, axes = plt.subplots(1, count, figsize=(2.6 * count, 2.9), dpi=100, squeeze=False)
    for ax, image, truth, found in zip(axes[0], images, truths, predictions, strict=False):
        ax.imshow(_display(image))
        ax.set_title(f"{truth}\n→ {found}", fontsize=8, color="green" if truth == found else "red")
    for ax in axes.flat:
        ax.axis("off")
    return _png(fig)


def translation_results(
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    titles: tuple[str, str, str] = ("Input", "Output", "Target"),
    shared_stretch: bool = True,
) -> bytes:
    """Rows of validation chips: what the network was given, what it made, what it should have made (the
    first three bands of each; ``shared_stretch``: output and target stretched alike, so they compare)."""
    rows = max(1, len(inputs))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), dpi=100, squeeze=False)
    for r, (given, made, wanted) in enumerate(zip(inputs, outputs, targets, strict=True)):
        axes[r][0].imshow(_display(given))
        stretch = (np.percentile(wanted.astype(np.float64), 2), np.percentile(wanted.astype(np.float64), 98))
        axes[r][1].imshow(_display(made, stretch if shared_stretch else None))
        axes[r][2].imshow(_display(wanted, stretch if shared_stretch else None))
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    for ax in axes.flat:
        ax.axis("off")
    return _png(fig)
