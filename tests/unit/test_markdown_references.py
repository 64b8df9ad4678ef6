"""A stranger's text in a markdown report mentions no one and links no issue: GitHub turns
`@name` into a mention (a notification) and `#123`, `owner/repo#123`, `GH-123` into issue
links in text, though not in code spans."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

import hostile_traces as ht
from qdebug.cli import cli
from qdebug.output import md
from synthetic_traces import make_trace

_CODE = re.compile(r"(`+).*?\1")
_MENTION = re.compile(r"(?<!\w)@[A-Za-z0-9]|#\d|(?<!\w)GH-\d", re.ASCII)


def test_markdown_free_text_mentions_no_one_and_links_no_issue(tmp_path: Path) -> None:
    names = ["x", "fix @octocat", "see #123", "a/b#7", "GH-9", "conv"]
    t = make_trace(tmp_path / "t.h5", layers=len(names), names=names, model_name="m @team")
    ht.root_attrs(data_source="data from @someone/repo#42",
                  warnings=["ask @octocat, see #123 and GH-45"])(t)
    r = CliRunner().invoke(cli, ["report", str(t), "--format", "markdown"])
    assert r.exit_code == 0, r.output
    prose = _CODE.sub("", r.stdout)  # code spans are never references
    assert not _MENTION.findall(prose), _MENTION.findall(prose)
    assert "ask @" in prose and "octocat" in prose  # the characters are all still there
    # an e-mail address and a name with a number are left alone
    assert md.text("a@b.example conv2") == "a@b.example conv2"
