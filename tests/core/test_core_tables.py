import importlib
import inspect
import json

import pytest

from benchmarks.__main__ import registered
from core.tables import Table, format_value, write_table


def test_write_table_markdown_json_png(tmp_path):
    table = Table(
        name="demo",
        title="Demo",
        columns=["method", "ours", "paper"],
        rows=[{"method": "a", "ours": 0.123456, "paper": 0.12}, {"method": "b", "ours": 2.0e-5}],
        notes="toy scale",
    )
    md = write_table(table, tmp_path, plot=lambda ax: ax.plot([0, 1], [1, 0]))
    text = md.read_text()
    assert "| a | 0.1235 | 0.12 |" in text and "| b | 2.000e-05 |  |" in text
    assert "![Demo](demo.png)" in text and (tmp_path / "demo.png").stat().st_size > 1000
    payload = json.loads((tmp_path / "demo.json").read_text())
    assert payload["rows"][0]["ours"] == 0.123456
    assert not list(tmp_path.glob(".*tmp"))


def test_write_table_with_panels_hands_the_plot_a_row_of_axes(tmp_path):
    table = Table(name="panels", title="Panels", columns=["a"], rows=[{"a": 1}])
    seen = []

    def plot(axes):
        seen.extend(axes)
        for i, ax in enumerate(axes):
            ax.plot([0, 1], [i, 0])

    write_table(table, tmp_path, plot=plot, panels=3)
    assert len(seen) == 3 and (tmp_path / "panels.png").stat().st_size > 1000
    assert seen[0].get_shared_y_axes().joined(seen[0], seen[2])
    seen.clear()
    write_table(table, tmp_path, plot=plot, panels=1)  # a list even of one
    assert len(seen) == 1
    with pytest.raises(ValueError, match="panels=0: expected None or a positive int"):
        write_table(table, tmp_path, plot=plot, panels=0)


def test_table_validation():
    with pytest.raises(ValueError, match=r"rows\[0\] has keys \['x'\]"):
        Table(name="t", title="t", columns=["a"], rows=[{"x": 1}])
    with pytest.raises(ValueError, match="name='a/b'"):
        Table(name="a/b", title="t", columns=["a"], rows=[])
    assert format_value(None) == "" and format_value(3) == "3" and format_value(float("nan")) == "nan"


def test_a_failing_plot_leaves_no_table(tmp_path):
    table = Table(name="broken", title="t", columns=["a"], rows=[{"a": 1}])

    def bad_plot(ax):
        raise RuntimeError("plot failed")

    with pytest.raises(RuntimeError):
        write_table(table, tmp_path, plot=bad_plot)
    assert not (tmp_path / "broken.md").exists() and not (tmp_path / "broken.json").exists()


def test_benchmark_registry_finds_importable_benchmarks():
    names = registered()
    assert names[:2] == ["core_demo", "core_loop"]
    for name in names:  # every registered module imports and exposes run(quick, results_dir)
        module = importlib.import_module(f"benchmarks.{name}")
        assert list(inspect.signature(module.run).parameters) == ["quick", "results_dir"], name
