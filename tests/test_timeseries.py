"""Time series: windows without look-ahead, train-only scaling, baselines, errors, smoke run."""

import json
import pathlib

import numpy as np
import pytest
from test_train import run_module

from experiments.timeseries import config as ts_config
from experiments.timeseries import train as ts_train
from recur.data import timeseries

SHARED_STOCK = pathlib.Path(__file__).parents[1] / "../shared/data/google_stock"


def write_csv(path, rows, header="Date,Open,Volume"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def daily_rows(values, start_day=1):
    return [f'1/{start_day + i}/2020,{v},"1,000"' for i, v in enumerate(values)]


@pytest.mark.parametrize("every_step", [False, True])
def test_windows_and_targets_line_up_without_look_ahead(every_step):
    values = np.arange(20, dtype=float)[:, None] * np.array([[1.0, 10.0]])  # row i: (i, 10 i)
    inputs, targets, first = timeseries.windows(values, 5, 3, 0, every_step=every_step)
    assert inputs.shape == (13, 5, 2) and len(first) == 13
    for m in range(13):
        np.testing.assert_array_equal(inputs[m, :, 0], np.arange(m, m + 5))
        final = targets[m, -1] if every_step else targets[m]
        np.testing.assert_array_equal(final, np.arange(m + 5, m + 8))  # rows after the window
        assert first[m] == m + 5 and final.min() > inputs[m, :, 0].max()
        if every_step:
            for i in range(5):  # step i predicts the rows after row m + i
                np.testing.assert_array_equal(targets[m, i], np.arange(m + i + 1, m + i + 4))
    with pytest.raises(ValueError, match="window 18 \\+ horizon 3 is longer than the 20 rows"):
        timeseries.windows(values, 18, 3, 0)


def test_scaler_fitted_on_train_only_and_round_trip():
    train = np.array([[1.0, 5.0], [3.0, 7.0], [2.0, 9.0]])
    test = np.array([[5.0, 11.0]])
    for kind in ("minmax", "standard"):
        scaler = timeseries.Scaler.fit(kind, train)
        np.testing.assert_allclose(scaler.inverse(scaler.transform(test)), test)
        np.testing.assert_allclose(scaler.inverse(scaler.transform(train)[:, 1], 1), train[:, 1])
    minmax = timeseries.Scaler.fit("minmax", train)
    np.testing.assert_allclose(minmax.transform(train).min(0), 0.0)
    np.testing.assert_allclose(minmax.transform(test), [[2.0, 1.5]])  # test beyond train: > 1
    with pytest.raises(ValueError, match="unknown scaling 'robust'"):
        timeseries.Scaler.fit("robust", train)


def test_prepare_fits_the_scaler_on_the_training_part_only(tmp_path):
    values = list(range(100, 160))
    path = tmp_path / "s.csv"
    path.write_text("Date,Open,Volume\n" + "".join(
        f"{np.datetime64('2020-01-01') + i},{v},1\n" for i, v in enumerate(values)))  # fmt: skip
    config = ts_config.get_config("smoke")
    config.data.train_path, config.data.test_path = str(path), ""
    config.data.window, config.data.test_fraction, config.data.valid_fraction = 5, 0.2, 0.25
    prepared = ts_train.prepare(config)
    # 60 rows: test = last 12, valid = 12 of the first 48, train = first 36 (values 100..135).
    assert prepared.scaler.offset[0] == 100 and prepared.scaler.scale[0] == 35
    test = prepared.splits["test"]
    assert len(test["inputs"]) == 12
    np.testing.assert_allclose(prepared.scaler.inverse(test["targets"][:, 0], 0), values[48:])
    train_targets = prepared.scaler.inverse(prepared.splits["train"]["targets"], 0)
    assert train_targets.max() == 135  # no training target from the held-out parts
    config.data.test_start = "2020-02-20"  # day 50: the same split by date, 10 test rows
    by_date = ts_train.prepare(config)
    assert len(by_date.splits["test"]["inputs"]) == 10
    assert str(by_date.dates["test"][0]) == "2020-02-20"


def test_baselines_on_a_hand_made_series():
    values = np.arange(30, dtype=float)[:, None]  # a straight line
    inputs, targets, _ = timeseries.windows(values, 4, 2, 0)
    last = timeseries.last_value_forecast(inputs, 2, 0)
    np.testing.assert_array_equal(last[:, 0], targets[:, 0] - 1)  # tomorrow = today
    errors = timeseries.errors(last, targets)
    assert errors["rmse"] == pytest.approx(np.sqrt((1 + 4) / 2)) and errors["mae"] == 1.5
    linear = timeseries.LinearAutoregression.fit(inputs[:20], targets[:20])
    np.testing.assert_allclose(linear.predict(inputs[20:]), targets[20:], atol=1e-3)
    assert timeseries.errors(np.array([[110.0]]), np.array([[100.0]]))["mape"] == pytest.approx(10)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (['1/1/2020,1.5,"1,000"', "1/2/2020,abc,7"], r"row 3, column 'Open': not a number: 'abc'"),
        (
            ["1/2/2020,1,1", "1/1/2020,2,2"],
            r"row 3, column 'Date': date 2020-01-01 is out of order",
        ),
        (["1/2/2020,1,1", "1/2/2020,2,2"], r"row 3, column 'Date': date 2020-01-02 is duplicate"),
        (["2020-13-45,1,1"], r"row 2, column 'Date': cannot read date '2020-13-45'"),
        ([], "no data rows"),
    ],
)
def test_bad_csv_errors_name_file_row_and_column(tmp_path, rows, match):
    path = write_csv(tmp_path / "prices.csv", rows)
    with pytest.raises(ValueError, match=match) as error:
        timeseries.load_csv(path, ["Open"])
    assert str(path) in str(error.value)


def test_missing_file_and_column(tmp_path):
    with pytest.raises(ValueError, match="time-series file .*nope.csv does not exist"):
        timeseries.load_csv(tmp_path / "nope.csv", ["Open"])
    path = write_csv(tmp_path / "p.csv", daily_rows([1, 2]))
    with pytest.raises(ValueError, match="no column 'Close'; columns: Date, Open, Volume"):
        timeseries.load_csv(path, ["Close"])
    series = timeseries.load_csv(path, ["Open", "Volume"])
    np.testing.assert_array_equal(series.values[:, 1], 1000.0)  # thousands separator


def test_missing_values_error_drop_or_interpolate(tmp_path):
    # Jan 1-7; Open missing on the 1st (no value before it), the 3rd and the 6th; Volume on the 4th.
    rows = ["1/1/2020,,1", "1/2/2020,10,2", "1/3/2020,null,3", "1/4/2020,14,",
            "1/5/2020,16,5", "1/6/2020, NaN ,6", "1/7/2020,22,7"]  # fmt: skip
    path = write_csv(tmp_path / "gaps.csv", rows)
    with pytest.raises(ValueError, match=r"gaps.csv, row 2, column 'Open': missing value ''; set "
                                         r"data.missing to drop or interpolate"):  # fmt: skip
        timeseries.load_csv(path, ["Open", "Volume"])
    dropped = timeseries.load_csv(path, ["Open", "Volume"], missing="drop")
    assert [str(d) for d in dropped.dates] == ["2020-01-02", "2020-01-05", "2020-01-07"]
    np.testing.assert_array_equal(dropped.values, [[10, 2], [16, 5], [22, 7]])
    assert dropped.repaired == {"cells_missing": 4, "cells_interpolated": 0, "rows_dropped": 4}
    filled = timeseries.load_csv(path, ["Open", "Volume"], missing="interpolate")
    assert str(filled.dates[0]) == "2020-01-02"  # Jan 1 has no Open before it: dropped
    np.testing.assert_allclose(filled.values[:, 0], [10, 12, 14, 16, 19, 22])
    np.testing.assert_allclose(filled.values[:, 1], [2, 3, 4, 5, 6, 7])
    assert filled.repaired == {"cells_missing": 4, "cells_interpolated": 3, "rows_dropped": 1}
    with pytest.raises(ValueError, match="data.missing must be one of error, drop, interpolate"):
        timeseries.load_csv(path, ["Open"], missing="zero")
    # The experiment applies it before windowing and reports the counts.
    config = ts_config.get_config("smoke")
    many = [
        f"{np.datetime64('2020-01-01') + i},{'' if i % 7 == 3 else 100 + i},1" for i in range(60)
    ]  # fmt: skip  (day 59 is missing: the last row, dropped)
    config.data.train_path = str(write_csv(tmp_path / "many.csv", many))
    config.data.test_path, config.data.window, config.data.missing = "", 5, "interpolate"
    prepared = ts_train.prepare(config)
    assert "data.missing=interpolate: 9 missing cells; 8 interpolated, 1 rows dropped" in (
        prepared.notes
    )
    window = prepared.scaler.inverse(prepared.splits["train"]["inputs"][0, :, 0], 0)
    np.testing.assert_allclose(window, [100, 101, 102, 103, 104])  # day 3 interpolated


@pytest.mark.skipif(not SHARED_STOCK.is_dir(), reason="../shared/data/google_stock is not present")
def test_google_stock_files():
    train = timeseries.load_csv(SHARED_STOCK / "Google_Stock_Price_Train.csv", ["Open", "Volume"])
    test = timeseries.load_csv(SHARED_STOCK / "Google_Stock_Price_Test.csv", ["Open"])
    assert len(train.values) == 1258 and len(test.values) == 20
    assert train.values[:, 0].min() == 279.12 and train.values[:, 0].max() == 816.68
    assert train.values[0, 1] == 7_380_500 and str(train.dates[0]) == "2012-01-03"
    assert str(test.dates[-1]) == "2017-01-31"


@pytest.mark.parametrize("head", ["last", "every_step"])
def test_smoke_run_writes_metrics_and_plot(tmp_path, head):
    path = tmp_path / "series.csv"
    days = np.datetime64("2020-01-01") + np.arange(150)
    prices = 100 + np.cumsum(np.random.default_rng(0).normal(size=150))
    path.write_text(
        "Date,Open\n" + "".join(f"{d},{p:.2f}\n" for d, p in zip(days, prices, strict=True))
    )
    result = run_module(
        "experiments.timeseries.main",
        f"--config=experiments/timeseries/config.py:smoke,head={head},horizon=2",
        f"--config.data.train_path={path}",
        "--config.data.test_path=",
        f"--workdir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test RMSE / MAE / MAPE (original units): model" in result.stdout
    record = json.loads((tmp_path / "run/results.json").read_text())
    assert set(record["test"]) == {"model", "last_value", "linear"}
    assert len(record["test_truth"]) == 14 and len(record["test_truth"][0]) == 2
    assert (tmp_path / "run/forecast.png").stat().st_size > 0


def test_window_longer_than_the_data_is_one_clear_line(tmp_path):
    path = write_csv(tmp_path / "short.csv", daily_rows(range(11)))
    result = run_module(
        "experiments.timeseries.main",
        "--config=experiments/timeseries/config.py:smoke",
        f"--config.data.train_path={path}",
        "--config.data.test_path=",
        f"--workdir={tmp_path / 'run'}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {path}: window 10 + horizon 1 is longer than the 10 rows")
