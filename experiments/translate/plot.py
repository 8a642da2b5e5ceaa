"""Attention heatmaps: output words down, source words across."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def attention(path, source_words: list[str], output_words: list[str], weights) -> None:
    """Writes ``path``: ``weights [len(output_words), >= len(source_words)]``."""
    weights = np.asarray(weights)[: len(output_words), : len(source_words)]
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(source_words), 1 + 0.45 * len(output_words)))
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source_words)), source_words, rotation=60, ha="right")
    ax.set_yticks(range(len(output_words)), output_words)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
