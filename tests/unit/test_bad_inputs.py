"""The bad-input catalogue: every command, every kind of bad input. Each answer is one line on
stderr naming the thing and the fix, exit code 2, no traceback (``--debug`` shows it), and no
file left behind.

Most cases run the command line in-process (click's runner); the two that need the operating
system to refuse a write (a full disk) run it in a subprocess whose file-size limit
(``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) makes every write past a few KiB fail with EFBIG,
as a full disk fails with ENOSPC: no root, no tmpfs, no monkeypatching.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, invoke, left_behind
from synthetic_traces import make_trace
from tui_traces import copy_trace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5"


@pytest.fixture(scope="module")
def tf_free(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("traces")
    shutil.copy(FIXTURE, d / "good.h5")
    (d / "empty.h5").write_bytes(b"")
    (d / "text.h5").write_text("this is not HDF5\n")
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = [1, 2, 3]
    shutil.copy(FIXTURE, d / "newer.h5")
    with h5py.File(d / "newer.h5", "a") as f:
        f.attrs["schema_version"] = "2.0"
    data = FIXTURE.read_bytes()
    (d / "truncated.h5").write_bytes(data[: len(data) // 3])
    corrupt = bytearray(data)
    corrupt[8:200] = b"\xff" * 192  # the superblock after the signature
    (d / "corrupt.h5").write_bytes(bytes(corrupt))
    shutil.copy(FIXTURE, d / "damaged.h5")
    with h5py.File(d / "damaged.h5", "a") as f:
        del f["metrics/layers/pooled/sqnr_db"]
        f["metrics/layers/pooled/sqnr_db"] = np.zeros(3)  # width ≠ number of layers
    copy_trace(d / "culprits.h5", culprits=[12, 5])  # the fixture's model is healthy: none
    with h5py.File(d / "culprits.h5", "a") as f:
        n = len(f["analysis/culprits/index"])
        del f["analysis/culprits/index"]
        f["analysis/culprits/index"] = np.full(n, 999, dtype=np.int64)  # no such layer
    shutil.copy(FIXTURE, d / "partial.h5")
    with h5py.File(d / "partial.h5", "a") as f:
        f.attrs["complete"] = False
    make_trace(d / "other.h5", layers=5, names=["in", "a", "b", "c", "out"], model_name="other")
    make_trace(d / "nostore.h5", store=0)
    (d / "folder.h5").mkdir()
    (d / "afile").write_text("x")
    (d / "exists.tflite").write_text("keep me")
    (d / "exists.png").write_text("keep me")
    (d / "folder.png").mkdir()
    return d


TF_FREE_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("report missing", ["report", "{d}/missing.h5"], ("missing.h5", "no such file")),
    ("report empty file", ["report", "{d}/empty.h5"], ("empty.h5", "not an HDF5 file")),
    ("report non-HDF5 .h5", ["report", "{d}/text.h5"], ("text.h5", "not an HDF5 file")),
    ("report HDF5 not a trace", ["report", "{d}/plain.h5"], ("plain.h5", "not a qdebug trace")),
    ("report newer schema", ["report", "{d}/newer.h5"], ("schema 2.0", "Upgrade qdebug")),
    ("report truncated", ["report", "{d}/truncated.h5", "--format", "json"],
     ("truncated.h5", "trace")),
    ("report corrupt", ["report", "{d}/corrupt.h5", "--format", "csv"], ("corrupt.h5",)),
    ("report damaged table", ["report", "{d}/damaged.h5", "--format", "markdown"],
     ("damaged.h5", "damaged trace", "sqnr_db", "Re-create it")),
    ("report incomplete", ["report", "{d}/partial.h5"], ("partial.h5", "incomplete")),
    ("report folder", ["report", "{d}/folder.h5"], ("folder.h5", "folder")),
    ("view missing", ["view", "{d}/missing.h5"], ("missing.h5", "no such file")),
    ("view not a trace", ["view", "{d}/plain.h5"], ("plain.h5", "not a qdebug trace")),
    ("view bad culprits", ["view", "{d}/culprits.h5"], ("culprits.h5", "culprits")),
    ("view second corrupt", ["view", "{d}/good.h5", "{d}/corrupt.h5"], ("corrupt.h5",)),
    ("diff base missing", ["diff", "{d}/missing.h5", "{d}/good.h5"], ("missing.h5",)),
    ("diff new truncated", ["diff", "{d}/good.h5", "{d}/truncated.h5"], ("truncated.h5",)),
    ("diff different models", ["diff", "{d}/good.h5", "{d}/other.h5"],
     ("different models", "Diff compares two traces of one model")),
    ("diff damaged", ["diff", "{d}/good.h5", "{d}/damaged.h5"], ("damaged.h5", "sqnr_db")),
    ("export corrupt trace", ["export", "{d}/corrupt.h5", "--tflite", "{d}/o/m.tflite"],
     ("corrupt.h5",)),
    ("export into a file", ["export", "{d}/good.h5", "--tflite", "{d}/afile/m.tflite"],
     ("afile", "is a file, not a folder")),
    ("export over a file", ["export", "{d}/good.h5", "--tflite", "{d}/exists.tflite"],
     ("exists.tflite", "--force")),
    ("export no stored inputs", ["export", "{d}/nostore.h5", "--inputs", "{d}/i.npz"],
     ("stores no samples", "--store-samples")),
    ("export nothing", ["export", "{d}/good.h5"], ("nothing to export", "--tflite")),
    ("plot into a missing folder", ["plot", "{d}/good.h5", "--out", "{d}/nowhere/c.png"],
     ("nowhere", "does not exist")),
    ("plot under a file", ["plot", "{d}/good.h5", "--out", "{d}/afile/c.png"],
     ("afile", "is a file, not a folder")),
    ("plot on a folder", ["plot", "{d}/good.h5", "--out", "{d}/folder.png"],
     ("folder.png", "is a folder")),
    ("plot over a file", ["plot", "{d}/good.h5", "--out", "{d}/exists.png"],
     ("exists.png", "--force")),
    ("check missing model", ["check", "{d}/missing.keras"], ("missing.keras", "no such file")),
    ("check missing data", ["check", "{d}/good.h5", "--data", "{d}/missing.npy"],
     ("missing.npy", "no such file")),
    ("fix no target", ["fix", "{d}/m.keras", "--data", "{d}/x.npy"], ("no target", "--target")),
    ("fix missing model", ["fix", "{d}/missing.keras", "--data", "{d}/x.npy",
                           "--target-top1", "0.9"], ("missing.keras", "no such file")),
]


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in TF_FREE_CASES],
                         ids=[c[0] for c in TF_FREE_CASES])
def test_trace_readers_refuse_bad_input(
    tf_free: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    before = left_behind(tf_free)
    code, _, err = invoke([a.format(d=tf_free) for a in args])
    assert_one_line_error(code, err, *needles)
    assert left_behind(tf_free) == before


def test_debug_shows_the_traceback_for_a_bad_trace(tf_free: Path) -> None:
    code, _, err = invoke(["--debug", "report", str(tf_free / "damaged.h5")])
    assert code == 2 and "Traceback" in err and "damaged trace" in err


def _limited_writes(limit: int) -> Callable[[], None]:
    def pre() -> None:  # runs in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _qdebug_limited(args: list[str], limit: int, timeout: float = 120) -> tuple[int, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-m", "qdebug", *args], capture_output=True, text=True,
                       preexec_fn=_limited_writes(limit), env=env, timeout=timeout)
    return p.returncode, p.stderr


def test_export_to_a_full_disk_fails_cleanly(tf_free: Path, tmp_path: Path) -> None:
    code, err = _qdebug_limited(["export", str(tf_free / "good.h5"), "--tflite",
                                 str(tmp_path / "m.tflite")], limit=4096)
    assert_one_line_error(code, err, "m.tflite", "cannot write")
    assert left_behind(tmp_path) == []


def test_markup_and_control_characters_in_layer_names(tmp_path: Path) -> None:
    names = ["in[bold]", "[red]evil[/red]", "bell\x07esc\x1b[31m", "cr\rlf\ntab\t", "pipe|`x`",
             "out"]
    path = make_trace(tmp_path / "t.h5", layers=len(names), names=names)
    for fmt in ("text", "markdown"):  # for people: control characters shown as escapes
        code, out, err = invoke(["report", str(path), "--format", fmt])
        assert code == 0, err
        assert not any(c in out for c in "\x07\x1b\r"), (fmt, out)
        assert "\\x1b" in out and "[red]evil[/red]" in out  # markup printed, not applied
    # for scripts: the names exactly as the model has them
    code, out, _ = invoke(["report", str(path), "--format", "json"])
    assert [la["name"] for la in json.loads(out)["layers"]] == names
    code, out, _ = invoke(["report", str(path), "--format", "csv"])
    rows = [row["layer"] for row in csv.DictReader(io.StringIO(out))]
    assert len(rows) == len(names) and rows[3] == names[3]  # (click drops ANSI sequences)
    code, out, _ = invoke(["report", str(path), "--format", "markdown"])
    rows = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert rows and all(ln.rstrip().endswith("|") for ln in rows)  # no row broken by a name


def _qdebug_proc(args: list[str], *, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real command line in a process of its own, with its output as bytes."""
    return subprocess.run([sys.executable, "-m", "qdebug", *args], capture_output=True,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec, cwd=cwd,
                          timeout=120)


STREAM_COMMANDS = [
    ["report", str(FIXTURE)],
    ["report", str(FIXTURE), "--format", "markdown"],
    ["report", str(FIXTURE), "--format", "csv"],
    ["view", str(FIXTURE)],
    ["diff", str(FIXTURE), str(FIXTURE)],
]


#: A layer name no 8-bit encoding holds (an arrow and a CJK character).
WIDE_NAME = "conv2\u2192\u5c64"


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
@pytest.mark.parametrize("args", STREAM_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:]))
def test_a_stdout_without_utf8_gets_ascii_look_alikes(
    args: list[str], encoding: str, tmp_path: Path
) -> None:
    """PYTHONIOENCODING=latin-1 (or an ASCII locale): the output is written, with look-alikes
    for qdebug's glyphs and escapes for names the encoding lacks (was 'unexpected
    UnicodeEncodeError', exit 2)."""

    renamed = str(copy_trace(tmp_path / "t.h5", names={8: WIDE_NAME}))  # the worst layer
    p = _qdebug_proc([renamed if a == str(FIXTURE) else a for a in args],
                     env={"PYTHONIOENCODING": encoding})
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    if "csv" in args:  # exact for scripts: the name's escape, nothing made up; click writes
        if encoding == "ascii":  # UTF-8 where the encoding is ASCII (a locale left unset)
            assert WIDE_NAME in p.stdout.decode("utf-8")
        else:
            assert "conv2\\u2192\\u5c64" in p.stdout.decode(encoding)
        return
    text = p.stdout.decode(encoding)  # strict: every byte is in the encoding
    assert "probs" in text and "\\u2588" not in text and "\\u2014" not in text
    if args[0] == "diff":
        assert f"{renamed} -> {renamed}" in text and "drop <= 1 dB" in text
        return
    assert "conv2->\\u5c64" in text  # recognisable: the arrow's look-alike, the escape
    if "--format" not in args:
        assert "40.2 dB" in text and "healthy: every output at 30 dB SQNR or more" in text


def test_an_error_on_an_ascii_stderr_uses_look_alikes(tmp_path: Path) -> None:
    """The one line on a stderr without UTF-8 (was ``\\u2192`` escapes in it)."""
    p = _qdebug_proc(["report", str(tmp_path / "before\u2192after.h5")],
                     env={"PYTHONIOENCODING": "ascii"})
    assert_one_line_error(p.returncode, p.stderr.decode("ascii"), "before->after.h5",
                           "no such file")


@pytest.mark.parametrize("args", [*STREAM_COMMANDS,
                                  ["export", str(FIXTURE), "--tflite", "never.tflite"]],
                         ids=lambda a: " ".join(a[:1] + a[2:3]))
def test_a_closed_stdout_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    """``>&-``: one line saying so, exit 2, nothing written (was 'unexpected AttributeError …
    isatty' in view and report --format csv, and exit 0 with the output lost elsewhere)."""
    p = _qdebug_proc(args, preexec=lambda: os.close(1), cwd=tmp_path)
    assert_one_line_error(p.returncode, p.stderr.decode(), "standard output is closed",
                           "/dev/null")
    assert left_behind(tmp_path) == []


def test_view_on_a_terminal_with_a_closed_stdin_prints_the_summary() -> None:
    """stdout a terminal, stdin closed (``<&-``): the viewer would wait for keys that never
    come, so the summary is printed (was 'unexpected AttributeError … isatty')."""
    import pty

    leader, follower = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "qdebug", "view", str(FIXTURE)],
                           stdout=follower, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(0),
                           timeout=120)
        os.close(follower)
        follower = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written is read
            while chunk := os.read(leader, 65536):
                shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    plain = re.sub(rb"\x1b\[[0-9;]*m", b"", shown)  # a terminal gets colours
    assert b"output probs: SQNR 40.2 dB" in plain


@pytest.mark.parametrize("columns", ["0", "1", "20"])
@pytest.mark.parametrize("command", ["report", "view"])
def test_a_tiny_columns_still_prints_the_whole_summary(command: str, columns: str) -> None:
    """COLUMNS=0 printed nothing and exited 0; narrow widths dropped the layer column."""
    p = _qdebug_proc([command, str(FIXTURE)], env={"COLUMNS": columns})
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    text = p.stdout.decode()
    assert "output probs: SQNR 40.2 dB" in text
    worst = text.split("worst layers", 1)[1]
    assert all(name in worst for name in ("probs", "gap", "conv2"))  # the layer column


#: Runs qdebug at the open-files limit: every descriptor the process may still open is taken
#: before the command starts, as in a process that holds many files (``ulimit -n``).
_AT_FILE_LIMIT = """
import os, resource, sys
import h5py, rich.console
import qdebug.cli.reading, qdebug.store.reader, qdebug.output.summary, qdebug.output.glyphs
from qdebug.cli import main
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
try:
    while True:
        os.open(os.devnull, os.O_RDONLY)
except OSError:
    pass
sys.argv[0] = "qdebug"
main()
"""


@pytest.mark.parametrize("args", [["report", str(FIXTURE)],
                                  ["diff", str(FIXTURE), str(FIXTURE), "--format", "json"],
                                  ["view", str(FIXTURE)]],
                         ids=["report", "diff", "view"])
def test_too_many_open_files_says_so(args: list[str]) -> None:
    """At the open-files limit the trace cannot be opened: the line names the limit and how
    to raise it (was '… cannot read ([Errno 24] …). Check permissions.')."""
    p = subprocess.run([sys.executable, "-c", _AT_FILE_LIMIT, *args], capture_output=True,
                       text=True, timeout=120)
    assert_one_line_error(p.returncode, p.stderr, "too many open files", "ulimit -n", "64")
    assert "permission" not in p.stderr.lower() and "damaged" not in p.stderr


def _non_utf8_copy(folder: Path) -> Path:
    path = folder / os.fsdecode(b"r\xe9sum\xff.h5")  # latin-1 bytes: not UTF-8
    shutil.copy(FIXTURE, path)
    return path


@pytest.mark.parametrize("command", ["report", "diff"])
def test_json_for_a_non_utf8_path_is_valid_utf8(tmp_path: Path, command: str) -> None:
    """A trace path that is not UTF-8: the JSON is UTF-8 with each undecodable byte as ``\\xNN``
    (held lone surrogates, '\\udcff', that strict parsers refuse)."""
    path = _non_utf8_copy(tmp_path)
    args = [command, str(path), *([str(FIXTURE)] if command == "diff" else []), "--format",
            "json"]
    p = _qdebug_proc(args, env={"PYTHONIOENCODING": "utf-8"})
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode("utf-8")  # strict
    assert "\\ud" not in text  # no surrogate escape anywhere
    doc = json.loads(text)
    field = doc["trace"] if command == "report" else doc["base"]
    assert field == str(tmp_path / "r\\xe9sum\\xff.h5")
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in field)


def _shard(path: Path) -> Path:
    """The fixture trace as the single shard 1/1 of its run (merge takes it)."""
    shutil.copy(FIXTURE, path)
    with h5py.File(path, "a") as f:
        n = int(f.attrs["n_samples"])
        f.attrs.update({"shard": "1/1", "shard_start": 0, "shard_count": n, "shard_total": n,
                        "shard_batch_size": 16, "shard_store_samples": 4})
    return path


def test_merge_reads_a_shards_strings_through_the_checked_reads(tmp_path: Path) -> None:
    import hostile_traces as ht

    # 5 weight rows of 8 MiB strings, compressed: a 1 MB shard that merged into a 40 MB trace.
    shard = _shard(tmp_path / "s.h5")
    ht.compressed_strings("analysis/weights/outlier_channels", 8 << 20, b" ")(shard)
    out = tmp_path / "o" / "m.h5"
    code, _, err = invoke(["merge", str(shard), "--out", str(out)])
    assert_one_line_error(code, err, "s.h5", "analysis/weights/outlier_channels",
                           "bytes each")
    assert left_behind(tmp_path / "o") == []


def test_merge_of_a_shard_whose_name_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/\xff\xfe-shard.h5"
    _shard(Path(os.fsdecode(name)))
    out = tmp_path / "m.h5"
    p = subprocess.run([sys.executable, "-m", "qdebug", "merge", name, "--out", str(out),
                        "--format", "json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr  # it blamed disk space
    with h5py.File(out) as f:
        assert "\ufffd\ufffd-shard.h5" in f.attrs["command_line"]


def test_merge_to_a_full_stdout_leaves_no_trace(tmp_path: Path) -> None:
    shard = _shard(tmp_path / "s.h5")
    out = tmp_path / "m.h5"
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "qdebug", "merge", str(shard), "--out",
                            str(out)], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    assert_one_line_error(p.returncode, p.stderr, "standard output", "m.h5 was not kept")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.h5"]


_LOAD_UNDER_A_LIMIT = """
import resource, sys
from qdebug.errors import DataError
from qdebug.tracer.data import InputSpec, load_data
vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + (200 << 20), resource.RLIM_INFINITY))
spec = [InputSpec("x", (8, 8, 1))]
src = load_data(sys.argv[1], spec, limit=16)
print(sum(1 for _ in src), len(src))
try:
    load_data(sys.argv[1], spec)
except DataError as exc:
    print(exc.one_line())
"""


def test_npz_bomb_reads_only_the_samples_asked_for(tmp_path: Path) -> None:
    import hostile_traces as ht

    # 512 MiB of zeros in a 0.5 MB .npz; the process may grow by 200 MiB. --samples 16 reads
    # 16 samples (4 kB); all of it is refused by name, before anything is inflated.
    bomb = ht.npz_bomb(tmp_path / "bomb.npz", "x", (2 << 20, 8, 8, 1))
    assert bomb.stat().st_size < 2 << 20
    p = subprocess.run([sys.executable, "-c", _LOAD_UNDER_A_LIMIT, str(bomb)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    counted, refusal = p.stdout.splitlines()
    assert counted == "16 16"
    assert "bomb.npz[x]" in refusal and "zip bomb" in refusal and "--samples" in refusal

