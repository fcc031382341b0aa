"""The CLI's outputs: tables on standard output (``--out -``, CSV or JSON lines), to
``/dev/stdout`` and FIFOs; ``recforge similar``; ``--users`` as a list or a file; item
metadata kept with any model; ``evaluate`` remembering the training threshold and giving
intervals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli as run
from conftest import running_server

from recforge.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Rated train/test files (ids from 1), a movies.csv, and ease / pop models trained
    with --min-rating 4 and the metadata."""
    d = tmp_path_factory.mktemp("cli_outputs")
    rng = np.random.default_rng(0)
    key = rng.choice(150 * 60, size=2400, replace=False)
    frame = pd.DataFrame({"user": key // 60 + 1, "item": key % 60 + 1,
                          "rating": rng.integers(1, 6, len(key)).astype(float),
                          "timestamp": rng.integers(0, 10**6, len(key))})
    frame.iloc[:2200].to_csv(d / "train.csv", index=False)
    frame.iloc[2200:].to_csv(d / "test.csv", index=False)
    movies = pd.DataFrame({"movieId": np.arange(1, 61),
                           "title": [f"Film {i}, part {i % 3}" for i in range(1, 61)],
                           "genres": ["Comedy|Drama" if i % 2 else "Horror"
                                      for i in range(1, 61)]})
    movies.to_csv(d / "movies.csv", index=False)
    for model in ("ease", "pop"):
        try:
            code = main(["train", model, "--data", str(d / "train.csv"), "--out",
                         str(d / model), "--min-rating", "4", "--item-metadata",
                         str(d / "movies.csv")])
        except SystemExit as exc:  # Typer exits with the command's status
            code = exc.code or 0
        assert code == 0
    return d


def _titles(d):
    return pd.read_csv(d / "movies.csv").set_index("movieId")["title"]


# --------------------------------------------------------------------------------------
# --out -: CSV and JSON lines, the table alone on standard output
def test_out_dash_csv_and_jsonl_give_the_rows_of_a_file(files, capsys, tmp_path):
    args = ["recommend", "--model", files / "ease", "--users", "1,2,3", "--k", 4]
    code, _, err = run([*args, "--out", tmp_path / "recs.csv"], capsys)
    assert code == 0, err
    expected = pd.read_csv(tmp_path / "recs.csv")
    assert list(expected.columns) == ["user", "item", "rank", "score", "title", "genres"]
    assert len(expected) == 12

    code, out, err = run([*args, "--out", "-"], capsys)
    assert code == 0, err
    assert "wrote 12 recommendations" in err and "wrote" not in out
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out)), expected)

    code, out, err = run([*args, "--out", "-", "--format", "jsonl"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    got = pd.DataFrame(rows)
    assert list(got.columns) == list(expected.columns) and len(got) == 12
    pd.testing.assert_frame_equal(got.drop(columns="score"),
                                  expected.drop(columns="score"))
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6)

    # a .jsonl file is JSON lines without --format; --format wins over the suffix
    code, _, err = run([*args, "--out", tmp_path / "recs.jsonl"], capsys)
    assert code == 0, err
    assert len(pd.read_json(tmp_path / "recs.jsonl", lines=True)) == 12
    code, _, err = run([*args, "--out", tmp_path / "r.txt", "--format", "csv"], capsys)
    assert code == 0 and "," in (tmp_path / "r.txt").read_text().splitlines()[0]
    code, _, err = run([*args, "--out", "-", "--format", "xml"], capsys)
    assert code == 2 and "--format must be one of csv, tsv, jsonl, parquet" in err


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "recforge", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def test_dev_stdout_and_a_fifo_are_written_not_replaced(files, tmp_path):
    """/dev/stdout (a pipe here) gets the table alone, the message goes to stderr; a FIFO
    is opened and written, and stays a FIFO."""
    got = _cli("similar", "--model", files / "ease", "--items", "1,2", "--k", 3,
               "--out", "/dev/stdout")
    assert got.returncode == 0, got.stderr
    frame = pd.read_csv(io.StringIO(got.stdout))
    assert list(frame.columns[:4]) == ["item", "similar_item", "rank", "score"]
    assert len(frame) == 6 and "wrote 6 similar items" in got.stderr

    fifo = tmp_path / "recs.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    got = _cli("recommend", "--model", files / "pop", "--users", "1,2", "--k", 2,
               "--out", fifo, "--format", "jsonl")
    reader.join(timeout=60)
    assert got.returncode == 0, got.stderr
    assert os.path.exists(fifo) and not os.path.isfile(fifo)  # still the FIFO
    rows = [json.loads(line) for line in received[0].decode().splitlines()]
    assert [r["user"] for r in rows] == [1, 1, 2, 2] and all("title" in r for r in rows)


def test_evaluate_out_dash_writes_the_results_alone(files, capsys):
    base = ["evaluate", "--model", files / "ease", "--train", files / "train.csv",
            "--test", files / "test.csv", "--metrics", "ndcg@10,recall@10", "--out", "-"]
    code, out, err = run(base, capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload["intervals"]) == {"NDCG@10", "Recall@10"}
    code, out, err = run([*base, "--out-format", "jsonl"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["metric"] for r in rows] == ["NDCG@10", "Recall@10"]
    assert rows[0]["value"] == pytest.approx(payload["metrics"]["NDCG@10"])
    assert rows[0]["ci_low"] <= rows[0]["value"] <= rows[0]["ci_high"]


# --------------------------------------------------------------------------------------
# recforge similar
def test_similar_items_with_titles_and_unknown_ids(files, capsys, tmp_path):
    code, out, err = run(["similar", "--model", files / "ease", "--items", "1,7", "--k", 5],
                         capsys)
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["item", "similar_item", "rank", "score", "title", "genres"]
    assert frame.groupby("item").size().to_dict() == {1: 5, 7: 5}
    assert (frame["item"] != frame["similar_item"]).all()
    titles = _titles(files)
    assert (frame["title"] == titles.loc[frame["similar_item"]].to_numpy()).all()

    code, _, err = run(["similar", "--model", files / "ease", "--items", "1,9999"], capsys)
    assert code == 2 and "1 unknown item id(s): '9999'" in err and "--unknown skip" in err
    code, out, err = run(["similar", "--model", files / "ease", "--items", "1,9999",
                          "--unknown", "skip", "--k", 2], capsys)
    assert code == 0 and "9999" in err
    assert pd.read_csv(io.StringIO(out))["item"].tolist() == [1, 1]

    ids = tmp_path / "items.txt"
    ids.write_text("item\n3\n4\n")
    code, out, err = run(["similar", "--model", files / "ease", "--items-file", ids,
                          "--k", 1, "--no-metadata", "--format", "jsonl"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["item"] for r in rows] == [3, 4] and "title" not in rows[0]

    code, _, err = run(["similar", "--model", files / "pop", "--items", "1"], capsys)
    assert code == 2 and "'pop' has no item similarities" in err
    assert "itemknn" in err and "ease" in err
    code, _, err = run(["similar", "--model", files / "ease"], capsys)
    assert code == 2 and "--items" in err


# --------------------------------------------------------------------------------------
# --users: a list or a file
def test_users_as_a_list_or_a_file(files, capsys, tmp_path, monkeypatch):
    model = files / "ease"
    code, out, err = run(["recommend", "--model", model, "--users", "3, 1", "--k", 1,
                          "--out", "-"], capsys)
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out))["user"].tolist() == [3, 1]

    listed = tmp_path / "users.txt"
    listed.write_text("user\n2\n5\n")
    code, out, err = run(["recommend", "--model", model, "--users", listed, "--k", 1,
                          "--out", "-"], capsys)
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out))["user"].tolist() == [2, 5]

    # an existing path is a file even if its name reads as an id
    monkeypatch.chdir(tmp_path)
    (tmp_path / "7").write_text("4\n")
    code, out, err = run(["recommend", "--model", model, "--users", "7", "--k", 1,
                          "--out", "-"], capsys)
    assert code == 0 and pd.read_csv(io.StringIO(out))["user"].tolist() == [4]

    code, _, err = run(["recommend", "--model", model, "--users", "missing.txt",
                        "--out", "-"], capsys)
    assert code == 2 and "missing.txt: --users: no such file" in err
    assert "comma-separated" in err
    code, _, err = run(["recommend", "--model", model, "--users", "1,424242",
                        "--out", "-"], capsys)
    assert code == 2 and "unknown user id(s)" in err and "424242" in err


# --------------------------------------------------------------------------------------
# --item-metadata: any model, kept in the artefact, shown and served
def test_item_metadata_kept_by_any_model_and_served(files, capsys):
    from recforge import load_model

    model = load_model(files / "pop")
    assert list(model.item_metadata_.columns) == ["item", "title", "genres"]
    code, out, err = run(["recommend", "--model", files / "pop", "--users", "1", "--k", 3,
                          "--out", "-"], capsys)
    assert code == 0, err
    recs = pd.read_csv(io.StringIO(out))
    assert (recs["title"] == _titles(files).loc[recs["item"]].to_numpy()).all()

    titles = _titles(files)
    with running_server("--model", files / "ease") as (_, url):
        recs = httpx.get(url + "/users/1/recommendations", params={"k": 3}, timeout=30)
        similar = httpx.get(url + "/items/7/similar", params={"k": 2}, timeout=30)
    items = recs.json()["items"]
    assert len(items) == 3, recs.text
    assert all(it["title"] == titles.loc[it["item"]] for it in items)
    assert all(it["title"] == titles.loc[it["item"]] for it in similar.json()["similar"])
    genres = pd.read_csv(files / "movies.csv").set_index("movieId")["genres"]
    assert all(it["metadata"] == {"genres": genres.loc[it["item"]]} for it in items)


@pytest.mark.parametrize(("table", "option", "message"), [
    ("movieId,title\n1,A\n2,B\n1,C\n", [], "line 4, column 'movieId': item id '1' appears "
     "twice (first at line 2)"),
    ("movieId,title\n1,A\n,B\n", [], "line 3, column 'movieId': missing item id"),
    ("movieId,title\n1,A\n", ["--item-id-column", "item"], "no id column 'item'"),
    ("movieId\n1\n", [], "only the id column 'movieId'"),
    ("movieId,title\n", [], "no rows"),
])
def test_bad_item_metadata_names_file_line_and_column(files, capsys, tmp_path, table,
                                                      option, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(table)
    code, _, err = run(["train", "pop", "--data", files / "train.csv", "--out",
                        tmp_path / "m", "--item-metadata", bad, *option], capsys)
    assert code == 2 and str(bad) in err and message in " ".join(err.split()), err
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------
# evaluate: the training threshold remembered, intervals and the number of users
def test_evaluate_uses_the_min_rating_the_model_was_trained_with(files, capsys, tmp_path):
    meta = json.loads((files / "ease" / "meta.json").read_text())
    assert meta["training_data"] == {"min_rating": 4.0}
    from recforge import load_model  # saved again, the model still says so

    load_model(files / "ease").save(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "meta.json").read_text())
    assert again["training_data"] == {"min_rating": 4.0}
    base = ["evaluate", "--model", files / "ease", "--train", files / "train.csv",
            "--test", files / "test.csv", "--metrics", "ndcg@10"]
    code, out, err = run([*base, "--out", tmp_path / "a.json"], capsys)
    assert code == 0, err
    assert "rated >= 4, the --min-rating the model was trained with" in out
    assert "users evaluated" in out and "warning: the model was trained" not in out
    remembered = json.loads((tmp_path / "a.json").read_text())
    code, out, err = run([*base, "--min-rating", "4", "--out", tmp_path / "b.json"], capsys)
    assert code == 0 and "warning: the model was trained" not in out
    explicit = json.loads((tmp_path / "b.json").read_text())
    assert remembered["metrics"] == explicit["metrics"] and remembered["min_rating"] == 4
    code, out, err = run([*base, "--min-rating", "none", "--out", tmp_path / "c.json"],
                         capsys)
    assert code == 0, err
    text = " ".join(out.split())
    assert "warning: the model was trained with --min-rating 4, evaluated here with every " \
           "test event relevant" in text
    every = json.loads((tmp_path / "c.json").read_text())
    assert every["n_users"] > remembered["n_users"]
    assert every["metrics"] != remembered["metrics"]
    # the interval holds the mean; fewer than 100 users evaluated: said
    low, high = remembered["intervals"]["NDCG@10"]
    assert low <= remembered["metrics"]["NDCG@10"] <= high
    assert remembered["n_users"] < 100
    code, out, _ = run(base, capsys)
    assert f"only {remembered['n_users']} users evaluated" in " ".join(out.split())
    code, _, err = run([*base, "--min-rating", "high"], capsys)
    assert code == 2 and "--min-rating must be a number or none" in err


def test_predict_to_standard_output_as_json_lines(files, capsys, tmp_path):
    model = tmp_path / "mf"
    code, _, err = run(["train", "mf", "--data", files / "train.csv", "--out", model,
                        "-p", "epochs=2", "-p", "embedding_dim=4", "--seed", 0], capsys)
    assert code == 0, err
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item\n1,2\n3,4\n424242,1\n")
    code, _, err = run(["predict", "--model", model, "--pairs", pairs, "--out",
                        tmp_path / "pred.csv"], capsys)
    assert code == 0, err
    expected = pd.read_csv(tmp_path / "pred.csv")
    code, out, err = run(["predict", "--model", model, "--pairs", pairs, "--out", "-",
                          "--format", "jsonl"], capsys)
    assert code == 0 and "wrote 3 predictions" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["user"], r["item"]) for r in rows] == [(1, 2), (3, 4), (424242, 1)]
    got = np.array([np.nan if r["prediction"] is None else r["prediction"] for r in rows])
    np.testing.assert_allclose(got, expected["prediction"], rtol=1e-6)  # NaN as null


def test_item_metadata_from_parquet_names_rows(tmp_path):
    from recforge.data.metadata import read_item_metadata
    from recforge.errors import DataError

    pd.DataFrame({"item": [1, 2, 2], "title": ["a", "b", "c"]}).to_parquet(tmp_path / "b.pq")
    with pytest.raises(DataError, match=r"row 3, column 'item': item id '2' appears twice "
                                        r"\(first at row 2\)"):
        read_item_metadata(tmp_path / "b.pq")
    pd.DataFrame({"item": [1, 2], "title": ["a", None], "year": [1999, None]}).to_parquet(
        tmp_path / "ok.pq")
    meta = read_item_metadata(tmp_path / "ok.pq")
    assert meta.index.tolist() == ["1", "2"]
    assert meta["title"].tolist() == ["a", None] and meta["year"].tolist() == [1999, None]
