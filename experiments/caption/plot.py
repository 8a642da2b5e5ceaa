"""The captioning experiment's figures: test strips with their captions, and the learning
curve."""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recur.data.captions import SIDE  # noqa: E402


def samples(path: pathlib.Path, images, references, predicted, num_digits, columns=3) -> None:
    """A grid of strips, each titled with the predicted caption (red and with the true one
    beneath where it is wrong)."""
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, want, got, k in zip(axes.flat, images, references, predicted, num_digits,
                                       strict=False):  # fmt: skip
        ax.imshow(image[:, : SIDE * int(k)], cmap="gray", vmin=0, vmax=255)
        ax.set_xlim(-0.5, image.shape[1] - 0.5)
        right = got == want
        title = " ".join(got) or "(empty)"
        if not right:
            title = f"✗ {title}\n(true: {' '.join(want)})"
        ax.set_title(title, fontsize=8, color="black" if right else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def learning_curve(path: pathlib.Path, metric_rows: list[dict], valid_rows: list[dict]) -> None:
    """Training and validation per-token loss, and validation exact-match accuracy."""
    fig, (ax_loss, ax_exact) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("train", "C0-"), ("eval", "C3-o")):
        rows = [r for r in metric_rows if r.get("split") == split and "loss" in r]
        if rows:
            label = "validation" if split == "eval" else split
            ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], style,
                         markersize=3, label=label)  # fmt: skip
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("per-token loss (nats)")
    ax_loss.legend(fontsize=8)
    if valid_rows:
        steps = [r["step"] for r in valid_rows]
        ax_exact.plot(steps, np.array([r["exact_match"] for r in valid_rows]) * 100, "C3-o",
                      markersize=3, label="exact match")  # fmt: skip
        ax_exact.plot(steps, np.array([r["word_accuracy"] for r in valid_rows]) * 100, "C2--o",
                      markersize=3, label="word accuracy")  # fmt: skip
    ax_exact.set_xlabel("step")
    ax_exact.set_ylabel("validation, greedy (%)")
    ax_exact.set_ylim(0, 100)
    ax_exact.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
