"""The command line as a newcomer meets it: help and tables through a pipe are not cut at
80 columns, and a mistake in the arguments is answered before torch is imported."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from recforge.cli.common import PIPE_WIDTH, metrics_table, output_width
from recforge.models.registry import BUILTIN


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child whose output is a pipe and whose width nobody set."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH",
                                                             "FORCE_COLOR")}
    return {**env, **extra}


def _recforge(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "recforge", *args],
                          capture_output=True, text=True, env=_env(), timeout=120)


def test_output_width_for_pipes_and_terminals(monkeypatch):
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_width(Stream(True)) is None  # a terminal: its own width
    assert output_width(Stream(False)) == PIPE_WIDTH > 80
    assert output_width(io.StringIO()) == PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "132")
    assert output_width(Stream(False)) == 132
    monkeypatch.setenv("COLUMNS", "wide")  # not a number: ignored
    assert output_width(Stream(False)) == PIPE_WIDTH


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["serve", "--help"],
                                  ["evaluate", "--help"], ["datasets", "list"]])
def test_help_and_tables_through_a_pipe_are_not_cut(args):
    got = _recforge(*args)
    assert got.returncode == 0, got.stderr
    assert "…" not in got.stdout
    if args == ["--help"]:  # each command's summary on one line, as written
        assert "one output row per input row, in the input's order" in got.stdout
    if args == ["serve", "--help"]:
        for name in ("--max-batch-results", "RECFORGE_ADMIN_KEY", "'recforge[postgres]'"):
            assert name in got.stdout


def test_models_table_through_a_pipe_names_every_model_whole():
    got = _recforge("models")
    assert got.returncode == 0, got.stderr
    assert "…" not in got.stdout
    first_cells = {line.split("│")[1].strip() for line in got.stdout.splitlines()
                   if line.startswith("│")}
    assert set(BUILTIN) <= first_cells


def test_a_narrow_table_folds_names_instead_of_cutting_them():
    console = Console(file=io.StringIO(), width=24)
    console.print(metrics_table("t", [{"metric": "ndcg@10_on_a_long_name", "value": 0.5}],
                                ["metric", "value"]))
    text = console.file.getvalue()
    assert "…" not in text
    folded = "".join(line.split("│")[1].strip() for line in text.splitlines()
                     if line.startswith("│"))
    assert "ndcg@10_on_a_long_name" in folded


# A mistake in the arguments: one line, status 2, and torch never imported (deterministic
# stand-in for "answered in well under a second": torch alone takes seconds to import).
MISTAKES = [
    (["train", "nosuchmodel", "--data", "x.csv", "--out", "{tmp}/m"], "unknown model"),
    (["train", "lightfm", "--data", "x.csv", "--out", "{tmp}/m"], "hybrid_bpr"),
    (["train", "ease", "--data", "{tmp}/nonexistent.csv", "--out", "{tmp}/m"],
     "no such file, and not a dataset name"),
    (["recommend", "--model", "{tmp}/nonexistent", "--out", "{tmp}/r.csv"],
     "no such directory"),
    (["predict", "--model", "{tmp}/nonexistent", "--pairs", "p.csv", "--out", "{tmp}/p.csv"],
     "no such directory"),
    (["evaluate", "--model", "{tmp}/nonexistent", "--train", "a.csv", "--test", "b.csv"],
     "no such directory"),
    (["serve", "--model", "{tmp}/nonexistent"], "no such directory"),
    (["run", "{tmp}/nonexistent.yaml"], "experiment file not found"),
    (["quickstart", "--models", "svd", "--out", "{tmp}/q"], "'mf'"),
]


@pytest.mark.parametrize("args,words", MISTAKES, ids=[" ".join(a[:2]) for a, _ in MISTAKES])
def test_a_mistake_is_answered_before_torch_is_imported(tmp_path, args, words):
    got = _recforge(*[a.format(tmp=tmp_path) for a in args], importtime=True)
    assert got.returncode == 2, got.stderr[-2000:]
    imported = [line.rsplit("|", 1)[1].strip() for line in got.stderr.splitlines()
                if line.startswith("import time:")]
    assert not [m for m in imported if m.split(".")[0] == "torch"], "torch was imported"
    message = [line for line in got.stderr.splitlines() if not line.startswith("import time:")]
    assert len(message) == 1 and message[0].startswith("error: ") and words in message[0], \
        message


def test_a_data_file_suffix_is_never_a_dataset_name():
    """What lets ``check_data_specs`` refuse a missing ``x.csv`` without the dataset table."""
    from recforge.cli.common import DATA_FILE_SUFFIXES
    from recforge.data.movielens import DATASETS, get_spec

    for name in DATASETS:
        for suffix in DATA_FILE_SUFFIXES:
            with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                get_spec(name + suffix)
