"""Notebooks and pictures: DataFrames with the JSON report's columns, Jupyter's HTML view, and
`qdebug plot` / `report --chart`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qdebug
from qdebug.output.report_json import report_dict

ROOT = Path(__file__).resolve().parents[2]



def test_dataframe_columns_equal_the_json_reports(fixture_trace: Path) -> None:
    pytest.importorskip("pandas", reason="pandas is not installed")
    with qdebug.open(fixture_trace) as tr:
        df = tr.to_dataframe()
        rep = report_dict(tr)
    assert list(df.columns) == list(rep["layers"][0])
    assert len(df) == len(rep["layers"])
    assert df["name"].tolist() == [r["name"] for r in rep["layers"]]



def test_repr_html_names_the_layers_without_reading_activations(fixture_trace: Path,
                                                                monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with qdebug.open(fixture_trace) as tr:
        def refuse(*a, **k):  # type: ignore[no-untyped-def]
            raise AssertionError("activations read")

        monkeypatch.setattr(tr, "activation", refuse)
        page = tr._repr_html_()
        names = [r.name for r in tr.layers]
    assert page.startswith("<div>") and "<table>" in page
    assert all(n in page for n in names)



def test_plot_written_and_not_empty(fixture_trace: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    for name in ("chart.svg", "chart.png"):
        res = subprocess.run([sys.executable, "-m", "qdebug", "plot", str(fixture_trace),
                              "--out", str(tmp_path / name)], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / name).stat().st_size > 5000
    svg = (tmp_path / "chart.svg").read_text()
    assert "<svg" in svg and "accumulated SQNR" in svg and "relu1" in svg
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_markdown_report_links_the_chart(fixture_trace: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    res = subprocess.run([sys.executable, "-m", "qdebug", "report", str(fixture_trace),
                          "--format", "markdown", "--chart", "chart.png"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "![error by depth](chart.png)" in res.stdout.splitlines()[2]
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn



def test_without_pandas_a_clear_message(fixture_trace: Path) -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pandas', 'matplotlib'):\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import json, qdebug\n"
        f"t = qdebug.open({str(fixture_trace)!r})\n"
        "out = []\n"
        "from qdebug.output.plot import plot_trace\n"
        "for f in (t.to_dataframe, lambda: plot_trace(t, 'a.png')):\n"
        "    try:\n"
        "        f()\n"
        "    except Exception as e:\n"
        "        out.append(str(e))\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    msgs = json.loads(res.stdout.strip().splitlines()[-1])
    assert "pandas is not installed" in msgs[0] and "pip install" in msgs[0]
    assert "matplotlib is not installed" in msgs[1]

