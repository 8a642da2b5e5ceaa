"""Time series from CSV files: loading, splitting, scaling fitted on the training part only,
sliding windows, and the honest baselines (last value, linear autoregression).

Every window's targets lie strictly after all of its inputs; a forecast for a test day uses
only real values before that day, which may come from the training period (as in the LSTM
stock-price tutorial, whose test windows start with the last 60 training days).
"""

import csv
import dataclasses
import datetime
import pathlib

import numpy as np

DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y", "%Y/%m/%d")
SCALINGS = ("minmax", "standard")
# What load_csv does with a missing value: stop naming it, drop its row, or interpolate it.
MISSING_POLICIES = ("error", "drop", "interpolate")
# Cell texts read as a missing value (exports write gaps in these ways).
MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "null", "none", "-"})


@dataclasses.dataclass
class Series:
    """``dates [N]`` (datetime64[D]) and ``values [N, F]`` float64 of named ``columns``."""

    dates: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]
    source: str
    # What the missing-value policy did: cells interpolated, rows dropped.
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)


def _parse_date(text: str, date_format: str | None, where: str) -> datetime.date:
    for fmt in (date_format,) if date_format else DATE_FORMATS:
        try:
            return datetime.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{where}: cannot read date {text!r} (formats tried: "
                     f"{', '.join((date_format,) if date_format else DATE_FORMATS)})")  # fmt: skip


def _parse_number(text: str, where: str) -> float:
    try:
        return float(text.strip().replace(",", ""))  # thousands separators: "7,380,500"
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None


def load_csv(
    path: str | pathlib.Path,
    columns: tuple[str, ...] | list[str],
    *,
    date_column: str = "Date",
    date_format: str | None = None,
    missing: str = "error",
) -> Series:
    """Reads ``date_column`` and the numeric ``columns`` of a CSV with a header row.

    A value cell that is empty or reads as missing (:data:`MISSING_TEXTS`, any case) is
    handled by ``missing``: ``error`` stops naming it; ``drop`` drops its row; ``interpolate``
    fills it linearly in time from the column's nearest values before and after, and drops the
    rows at the start or end of the file that have none on one side. The counts are in the
    result's ``repaired``.

    Raises:
      ValueError: naming file, row (line number) and column, for a missing file or column, a
        non-numeric cell, a missing value (``missing="error"``), an unreadable date, or dates
        not strictly increasing; or an unknown ``missing``.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(
            f"data.missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}"
        )
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"time-series file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (date_column, *columns):
            if column not in header:
                raise ValueError(f"{path}: no column {column!r}; columns: {', '.join(header)}")
        dates, values = [], []
        for row in reader:
            line = reader.line_num
            where = f"{path}, row {line}"
            date_where = f"{where}, column {date_column!r}"
            dates.append(_parse_date(row[date_column], date_format, date_where))
            values.append([_parse_cell(row[c], f"{where}, column {c!r}", missing) for c in columns])
            if len(dates) > 1 and dates[-1] <= dates[-2]:
                problem = "duplicate" if dates[-1] == dates[-2] else "out of order"
                raise ValueError(
                    f"{where}, column {date_column!r}: date {dates[-1]} is {problem} "
                    f"(previous row {dates[-2]}); dates must be strictly increasing"
                )
    if not dates:
        raise ValueError(f"{path}: no data rows")
    series = Series(
        np.array(dates, "datetime64[D]"), np.array(values, np.float64), tuple(columns), str(path)
    )
    return _repair(series, missing)


def _parse_cell(text: str | None, where: str, missing: str) -> float:
    if (text or "").strip().lower() in MISSING_TEXTS:
        if missing == "error":
            raise ValueError(
                f"{where}: missing value {text or ''!r}; set data.missing to drop or "
                "interpolate to repair gaps"
            )
        return np.nan
    return _parse_number(text, where)


def _repair(series: Series, missing: str) -> Series:
    """Drops or interpolates the NaN cells of ``series`` (``missing``: drop | interpolate)."""
    values, dates = series.values.copy(), series.dates
    gaps = np.isnan(values)
    repaired = {"cells_missing": int(gaps.sum()), "cells_interpolated": 0, "rows_dropped": 0}
    keep = ~gaps.any(axis=1)
    if missing == "interpolate" and gaps.any():
        days = dates.astype(np.int64).astype(np.float64)
        inside = np.ones(len(values), bool)
        for column in range(values.shape[1]):
            known = ~gaps[:, column]
            if not known.any():
                raise ValueError(f"{series.source}: column {series.columns[column]!r} is empty")
            first, last = np.flatnonzero(known)[[0, -1]]
            inside[:first] = inside[last + 1 :] = False
            values[~known, column] = np.interp(days[~known], days[known], values[known, column])
        repaired["cells_interpolated"] = int(gaps[inside].sum())
        keep = inside
    repaired["rows_dropped"] = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"{series.source}: no row is left after data.missing={missing}")
    return Series(dates[keep], values[keep], series.columns, series.source, repaired)


def concatenate(first: Series, second: Series) -> Series:
    """``first`` followed by ``second`` (e.g. the tutorial's separate train and test files)."""
    if first.columns != second.columns:
        raise ValueError(f"{second.source}: columns {second.columns} differ from {first.columns}")
    if second.dates[0] <= first.dates[-1]:
        raise ValueError(
            f"{second.source}: starts on {second.dates[0]}, not after {first.source} ends "
            f"({first.dates[-1]})"
        )
    return Series(
        np.concatenate([first.dates, second.dates]),
        np.concatenate([first.values, second.values]),
        first.columns,
        f"{first.source} + {second.source}",
        {k: first.repaired.get(k, 0) + second.repaired.get(k, 0)
         for k in first.repaired.keys() | second.repaired.keys()},
    )  # fmt: skip


@dataclasses.dataclass
class Scaler:
    """Min-max (to [0, 1]) or standard scaling per column, fitted on training values only."""

    kind: str
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> "Scaler":
        if kind == "minmax":
            low, high = values.min(0), values.max(0)
            return cls(kind, low, np.where(high > low, high - low, 1.0))
        if kind == "standard":
            std = values.std(0)
            return cls(kind, values.mean(0), np.where(std > 0, std, 1.0))
        raise ValueError(f"unknown scaling {kind!r}; available: {', '.join(SCALINGS)}")

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.offset) / self.scale

    def inverse(self, values: np.ndarray, column: int | None = None) -> np.ndarray:
        """Back to original units; ``column`` for arrays holding one column's values."""
        if column is None:
            return values * self.scale + self.offset
        return values * self.scale[column] + self.offset[column]


def windows(
    values: np.ndarray, window: int, horizon: int, target: int, *, every_step: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sliding windows over ``values [N, F]``.

    Returns:
      ``(inputs [M, window, F], targets, first_target_index [M])``: window m reads rows
      ``m .. m + window - 1`` and its targets are column ``target`` at rows
      ``m + window .. m + window + horizon - 1``, ``[M, horizon]``. With ``every_step`` the
      targets are ``[M, window, horizon]``: step i of the window predicts the ``horizon`` rows
      after row ``m + i`` (many-to-many training; its last step equals the plain target).
    """
    count = len(values) - window - horizon + 1
    if count < 1:
        raise ValueError(
            f"window {window} + horizon {horizon} is longer than the {len(values)} rows of data"
        )
    starts = np.arange(count)
    inputs = values[starts[:, None] + np.arange(window)]  # [M, window, F]
    column = values[:, target]
    if every_step:
        rows = starts[:, None, None] + np.arange(window)[:, None] + 1 + np.arange(horizon)
        targets = column[rows]  # [M, window, horizon]
    else:
        targets = column[starts[:, None] + window + np.arange(horizon)]  # [M, horizon]
    return inputs, targets, starts + window


def last_value_forecast(inputs: np.ndarray, horizon: int, target: int) -> np.ndarray:
    """ "Tomorrow = today": every horizon step predicts the window's last target value."""
    return np.repeat(inputs[:, -1, target][:, None], horizon, axis=1)


@dataclasses.dataclass
class LinearAutoregression:
    """Least-squares linear map from a window's flattened inputs (plus a bias) to its
    ``horizon`` targets, with a small ridge term for stability."""

    weights: np.ndarray

    @classmethod
    def fit(cls, inputs: np.ndarray, targets: np.ndarray, ridge: float = 1e-6):
        design = np.concatenate([inputs.reshape(len(inputs), -1), np.ones((len(inputs), 1))], 1)
        gram = design.T @ design + ridge * np.eye(design.shape[1])
        return cls(np.linalg.solve(gram, design.T @ targets))

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        design = np.concatenate([inputs.reshape(len(inputs), -1), np.ones((len(inputs), 1))], 1)
        return design @ self.weights


def errors(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and MAPE (%) over all entries, in the units given."""
    diff = predictions - targets
    return {
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "mae": float(np.mean(np.abs(diff))),
        "mape": float(100 * np.mean(np.abs(diff) / np.maximum(np.abs(targets), 1e-12))),
    }
