"""The forecast figure: the test period (real vs predicted, with both baselines) and the
training fit, like the tutorial's figure."""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def forecast(workdir, config, prepared, truth, predictions, train_fit) -> None:
    """Writes ``forecast.png``: first-step-ahead values of each window."""
    fig, (ax_test, ax_train) = plt.subplots(1, 2, figsize=(12, 3.8),
                                            gridspec_kw={"width_ratios": [1, 2]})  # fmt: skip
    dates = prepared.dates["test"]
    ax_test.plot(dates, truth[:, 0], "k-o", markersize=3, label="real")
    styles = {"model": "C3-o", "last_value": "C0--", "linear": "C2:"}
    for name, values in predictions.items():
        label = config.model.cell.upper() if name == "model" else name.replace("_", " ")
        ax_test.plot(dates, values[:, 0], styles[name], markersize=3, label=label)
    ax_test.set_title(f"test: {config.data.target}, {config.data.horizon}-step forecast, step 1")
    ax_test.legend(fontsize=8)
    ax_test.tick_params(axis="x", rotation=45)
    train = prepared.splits["train"]
    real = prepared.scaler.inverse(train["targets"], prepared.target)
    real = real[:, -1, 0] if real.ndim == 3 else real[:, 0]
    ax_train.plot(prepared.dates["train"], real, "k-", linewidth=0.8, label="real")
    ax_train.plot(prepared.dates["train"], train_fit[:, 0], "C3-", linewidth=0.8,
                  label=f"{config.model.cell.upper()} (in-sample)")  # fmt: skip
    ax_train.set_title("training period fit")
    ax_train.legend(fontsize=8)
    for ax in (ax_test, ax_train):
        ax.set_ylabel(config.data.target)
    fig.tight_layout()
    fig.savefig(pathlib.Path(workdir) / "forecast.png", dpi=110)
    plt.close(fig)
