"""The command line: the contract in DESIGN.md, and errors as one line with status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli as run


@pytest.fixture
def csv_files(tmp_path, random_data):
    from recforge.data.split import random_split

    split = random_split(random_data, seed=0)
    train = tmp_path / "train.csv"
    test = tmp_path / "test.csv"
    split.train.to_frame().to_csv(train, index=False)
    split.test.to_frame().to_csv(test, index=False)
    return train, test


def test_train_recommend_evaluate(tmp_path, csv_files, capsys):
    train, test = csv_files
    model_dir = tmp_path / "model"
    code, out, err = run(["train", "ease", "--data", train, "--out", model_dir,
                          "--param", "reg=20"], capsys)
    assert code == 0, err
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["model"] == "ease" and meta["params"]["reg"] == 20

    recs_path = tmp_path / "recs.csv"
    code, out, err = run(["recommend", "--model", model_dir, "--k", 5, "--out", recs_path], capsys)
    assert code == 0, err
    recs = pd.read_csv(recs_path)
    assert list(recs.columns) == ["user", "item", "rank", "score"]
    assert recs.groupby("user").size().max() == 5 and recs["rank"].min() == 1
    train_pairs = set(map(tuple, pd.read_csv(train)[["user", "item"]].values.tolist()))
    assert not train_pairs & set(map(tuple, recs[["user", "item"]].values.tolist()))

    users = tmp_path / "users.txt"
    users.write_text("user\n1\n2\n")
    pq = tmp_path / "recs.parquet"
    code, _, err = run(["recommend", "--model", model_dir, "--k", 3, "--users", users,
                        "--out", pq], capsys)
    assert code == 0, err
    assert sorted(pd.read_parquet(pq)["user"].unique().tolist()) == [1, 2]

    res = tmp_path / "eval.json"
    code, out, err = run(["evaluate", "--model", model_dir, "--train", train, "--test", test,
                          "--metrics", "ndcg@10,recall@10", "--out", res], capsys)
    assert code == 0, err
    payload = json.loads(res.read_text())
    assert set(payload["metrics"]) == {"NDCG@10", "Recall@10"}
    assert 0 < payload["metrics"]["NDCG@10"] <= 1

    # The CLI gives the same numbers as the library on the saved model.
    from recforge.data.readers import read_many
    from recforge.evaluation import evaluate
    from recforge.models import Recommender

    tr, te = read_many([train, test])
    lib = evaluate(Recommender.load(model_dir), tr, te, metrics="ndcg@10,recall@10")
    assert lib.summary == pytest.approx(payload["metrics"], abs=1e-9)


def test_train_never_replaces_a_directory_that_is_not_a_model(tmp_path, csv_files, capsys):
    import stat

    train, _ = csv_files
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    code, _, err = run(["train", "pop", "--data", train, "--out", data_dir], capsys)
    assert code == 2 and "not a saved recforge model" in err
    assert (data_dir / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    code, _, err = run(["train", "pop", "--data", train, "--out", a_file], capsys)
    assert code == 2 and "not a directory" in err and a_file.read_text() == "x"
    code, _, err = run(["train", "pop", "--data", train, "--out", "."], capsys)
    assert code == 2 and "own directory" in err
    model = tmp_path / "m"
    for _ in range(2):  # a model directory is replaced, an empty one taken
        code, _, err = run(["train", "pop", "--data", train, "--out", model], capsys)
        assert code == 0, err
    files = {f.name: stat.S_IMODE(f.stat().st_mode) for f in model.iterdir()}
    assert len(set(files.values())) == 1, files  # weights as readable as the rest


def test_evaluate_ranking_over_min_rating_and_errors_over_every_rating(tmp_path, capsys):
    from recforge.data.filters import to_implicit
    from recforge.data.readers import read_many
    from recforge.evaluation import evaluate
    from recforge.models import Recommender

    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 40, size=900, replace=False)
    frame = pd.DataFrame({"user": pairs // 40, "item": pairs % 40,
                          "rating": rng.integers(1, 6, size=900)})
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:700].to_csv(train, index=False)
    frame.iloc[700:].to_csv(test, index=False)
    model_dir = tmp_path / "mf"
    code, _, err = run(["train", "mf", "--data", train, "--out", model_dir, "-p", "epochs=2"],
                       capsys)
    assert code == 0, err
    res = tmp_path / "eval.json"
    code, _, err = run(["evaluate", "--model", model_dir, "--train", train, "--test", test,
                        "--metrics", "ndcg@10,rmse", "--min-rating", 4, "--out", res], capsys)
    assert code == 0, err
    got = json.loads(res.read_text())["metrics"]
    tr, te = read_many([train, test])
    model = Recommender.load(model_dir)
    assert got["NDCG@10"] == pytest.approx(
        evaluate(model, tr, to_implicit(te, 4), metrics="ndcg@10")["NDCG@10"], abs=1e-9)
    assert got["RMSE"] == pytest.approx(evaluate(model, tr, te, metrics="rmse")["RMSE"],
                                        abs=1e-9)


def test_errors_with_brackets_paths_and_directories_are_one_line(tmp_path, csv_files,
                                                                  capsys):
    train, test = csv_files
    model = tmp_path / "m"
    assert run(["train", "pop", "--data", train, "--out", model], capsys)[0] == 0
    code, _, err = run(["recommend", "--model", model, "--history", "[/b]", "--out",
                        tmp_path / "r.csv"], capsys)  # markup-like text stays text
    assert code in (0, 2) and "MarkupError" not in err
    code, _, err = run(["train", "pop", "--data", "[b]nothere.csv", "--out", model], capsys)
    assert code == 2 and "[b]nothere.csv" in err
    code, _, err = run(["recommend", "--model", model, "--out", tmp_path], capsys)
    assert code == 2 and "is a directory" in err
    code, _, err = run(["evaluate", "--model", model, "--train", train, "--test", test,
                        "--out", tmp_path], capsys)
    assert code == 2 and "is a directory" in err and "NDCG" not in err


def test_predict_answers_every_row_in_order(tmp_path, capsys):
    rng = np.random.default_rng(1)
    pairs = rng.choice(30 * 20, size=300, replace=False)
    frame = pd.DataFrame({"user": pairs // 20, "item": pairs % 20,
                          "rating": rng.integers(1, 6, size=300)})
    data = tmp_path / "r.csv"
    frame.to_csv(data, index=False)
    model = tmp_path / "mf"
    assert run(["train", "mf", "--data", data, "--out", model, "-p", "epochs=1"], capsys)[0] == 0
    ask = tmp_path / "ask.csv"
    ask.write_text("customer,product\n3,4\n1,2\n3,4\n")
    code, _, err = run(["predict", "--model", model, "--pairs", ask, "--out", tmp_path / "p.csv",
                        "--columns", "user=customer,item=product"], capsys)
    assert code == 0, err
    got = pd.read_csv(tmp_path / "p.csv")
    assert got[["user", "item"]].values.tolist() == [[3, 4], [1, 2], [3, 4]]
    assert got["prediction"].iloc[0] == got["prediction"].iloc[2]


def test_predict_refused_for_ranking_model(tmp_path, csv_files, capsys):
    train, _ = csv_files
    run(["train", "pop", "--data", train, "--out", tmp_path / "pop"], capsys)
    code, out, err = run(["predict", "--model", tmp_path / "pop", "--pairs", train, "--out",
                          tmp_path / "p.csv"], capsys)
    assert code == 2
    assert "does not predict ratings" in err and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_bad_data_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,3\n1,3,oops\n")
    code, out, err = run(["train", "pop", "--data", bad, "--out", tmp_path / "m"], capsys)
    assert code == 2
    assert "line 3" in err and "'oops' is not a number" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one message (may wrap once on narrow terminals)
    assert not (tmp_path / "m").exists()


def test_unknown_model_and_param(tmp_path, csv_files, capsys):
    train, _ = csv_files
    code, _, err = run(["train", "eas", "--data", train, "--out", tmp_path / "m"], capsys)
    assert code == 2 and "did you mean 'ease'" in err
    code, _, err = run(["train", "ease", "--data", train, "--out", tmp_path / "m",
                        "--param", "lambda=3"], capsys)
    assert code == 2 and "no parameter 'lambda'" in err


def test_bad_model_dir(tmp_path, capsys):
    code, _, err = run(["recommend", "--model", tmp_path, "--k", 3, "--out",
                        tmp_path / "r.csv"], capsys)
    assert code == 2 and "not a saved recforge model" in err


def test_models_listing(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "ease" in out and "itemknn" in out and "reg=500.0" in out


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_text("")
    proc = subprocess.run([sys.executable, "-m", "recforge", "train", "pop", "--data", str(bad),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "file is empty" in proc.stderr and "Traceback" not in proc.stderr


def test_quickstart_on_synthetic(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run(["quickstart", "--out", tmp_path / "qs", "--models", "pop,ease,content",
                          "--no-download"], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "generated dataset" in flat and "NDCG@10" in flat
    assert (tmp_path / "qs" / "models" / "ease" / "meta.json").exists()
    assert (tmp_path / "qs" / "report.html").exists()
    assert np.isfinite(len(out))


def test_datasets_commands(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path))
    code, out, _ = run(["datasets", "list"], capsys)
    assert code == 0 and "ml-100k" in out and "ml-32m" in out
    code, out, _ = run(["datasets", "info", "ml-1m"], capsys)
    assert code == 0 and "c4d9eecfca2ab87c1945afe126590906" in out
    code, _, err = run(["datasets", "info", "ml-100"], capsys)
    assert code == 2 and "did you mean" in err


def test_a_pair_in_two_data_files_follows_duplicates(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("user,item,rating\n1,10,5\n1,11,3\n2,10,4\n")
    b.write_text("user,item,rating\n1,10,2\n2,12,4\n")
    code, _, err = run(["train", "pop", "--data", a, "--data", b, "--out", tmp_path / "m"], capsys)
    assert code == 2 and "duplicate (user, item) pair (1, 10) in" in err
    assert "a.csv and" in err and "b.csv" in err and not (tmp_path / "m").exists()
    code, out, _ = run(["train", "pop", "--data", a, "--data", b, "--out", tmp_path / "m",
                        "--duplicates", "last"], capsys)
    assert code == 0 and "4 events" in " ".join(out.split())


def test_header_and_encoding_options(tmp_path, capsys):
    words = tmp_path / "w.csv"
    words.write_text("alice,matrix\nbob,dune\ncarol,matrix\n")
    code, _, err = run(["train", "pop", "--data", words, "--out", tmp_path / "m"], capsys)
    assert code == 2 and "--no-header" in err
    code, out, _ = run(["train", "pop", "--data", words, "--out", tmp_path / "m",
                        "--no-header"], capsys)
    assert code == 0 and "3 events" in out
    latin = tmp_path / "l.csv"
    latin.write_bytes("user,item\n1,2\nJosé,3\n".encode("latin-1"))
    code, _, err = run(["train", "pop", "--data", latin, "--out", tmp_path / "n"], capsys)
    assert code == 2 and "line 3" in err and "--encoding latin-1" in err
    code, out, _ = run(["train", "pop", "--data", latin, "--out", tmp_path / "n",
                        "--encoding", "latin-1"], capsys)
    assert code == 0 and "2 events" in out


def test_datasets_generate_chooses_users_in_proportion(tmp_path, capsys):
    from recforge.data.readers import read_parquet

    out = tmp_path / "g.parquet"
    code, text, _ = run(["datasets", "generate", out, "--interactions", 29_000, "--items", 500],
                        capsys)
    assert code == 0 and "200 users" in " ".join(text.split())  # 29,000 / (20M / 138K)
    data = read_parquet(out)
    assert len(data) == 29_000 and data.n_users == 200
    code, _, err = run(["datasets", "generate", tmp_path / "h.parquet", "--users", 10,
                        "--items", 20, "--interactions", 101], capsys)
    assert code == 2 and "at most n_items // 2" in err and not (tmp_path / "h.parquet").exists()


def test_train_on_named_dataset(tmp_path, capsys, monkeypatch):
    from conftest import shared_path

    folder = shared_path("ml-100k")
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(folder.parent))
    code, out, err = run(["train", "pop", "--data", "ml-100k", "--min-rating", 4, "--out",
                          tmp_path / "pop"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "pop" / "meta.json").read_text())
    assert meta["n_users"] == 943
    # a directory of that name where the command runs does not hide the dataset's name
    (tmp_path / "ml-100k").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "pop", "--data", "ml-100k", "--out", tmp_path / "pop2"],
                       capsys)
    assert code == 0, err


def test_train_checkpoints_and_resume(tmp_path, csv_files, capsys):
    """Gradient models checkpoint each epoch; --resume continues from the checkpoint and
    ends with the same model as an uninterrupted run."""
    train, _ = csv_files
    args = ["train", "bpr", "--data", train, "-p", "embedding_dim=8", "-p", "epochs=3",
            "-p", "batch_size=256", "--seed", 1]
    code, _, err = run(args + ["--out", tmp_path / "a", "--keep-checkpoint"], capsys)
    assert code == 0, err
    ckpt = tmp_path / "a.checkpoint"
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3]

    # A checkpoint written under other settings (here epochs=2; the cosine schedule depends
    # on it) is refused rather than silently continued. Kill-and-resume itself is tested in
    # test_training.py with a real SIGKILL.
    args2 = [a if a != "epochs=3" else "epochs=2" for a in args]
    half = tmp_path / "half"
    code, _, err = run(args2 + ["--out", tmp_path / "b", "--checkpoint-dir", half,
                                "--keep-checkpoint"], capsys)
    assert code == 0, err
    code, _, err = run(args + ["--out", tmp_path / "c", "--checkpoint-dir", half, "--resume"],
                       capsys)
    assert code == 2 and "resume" in err

    code, _, err = run(args + ["--out", tmp_path / "d", "--checkpoint-dir", ckpt, "--resume"],
                       capsys)
    assert code == 0, err
    assert not ckpt.exists(), "the checkpoint is removed after a successful run"
    from recforge.models import Recommender

    a = Recommender.load(tmp_path / "a")
    d = Recommender.load(tmp_path / "d")
    np.testing.assert_array_equal(a.score(np.arange(5)), d.score(np.arange(5)))


def test_resume_errors(tmp_path, csv_files, capsys):
    train, _ = csv_files
    code, _, err = run(["train", "ease", "--data", train, "--out", tmp_path / "m", "--resume"],
                       capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["train", "bpr", "--data", train, "--out", tmp_path / "m", "--resume"],
                       capsys)
    assert code == 2 and "no checkpoint" in err


def test_train_sparse_updates_option(tmp_path, csv_files, capsys):
    """--sparse-updates on trains the same model as off (Adagrad: exact); settings where
    it would change the result, and models without gradient steps, are refused."""
    train, _ = csv_files
    args = ["train", "bpr", "--data", train, "-p", "embedding_dim=8", "-p", "epochs=2",
            "-p", "batch_size=256", "-p", "optimizer=adagrad", "--seed", 1]
    for mode in ("on", "off"):
        code, _, err = run(args + ["--out", tmp_path / mode, "--sparse-updates", mode], capsys)
        assert code == 0, err
    from recforge.models import Recommender

    on, off = Recommender.load(tmp_path / "on"), Recommender.load(tmp_path / "off")
    np.testing.assert_allclose(on.score(np.arange(5)), off.score(np.arange(5)), rtol=1e-4,
                               atol=1e-5)
    adam = [a if a != "optimizer=adagrad" else "optimizer=adam" for a in args]
    code, _, err = run(adam + ["--out", tmp_path / "x", "--sparse-updates", "on"], capsys)
    assert code == 2 and "adagrad" in err
    code, _, err = run(["train", "ease", "--data", train, "--out", tmp_path / "y",
                        "--sparse-updates", "on"], capsys)
    assert code == 2 and "--sparse-updates" in err
    code, _, err = run(args + ["--out", tmp_path / "z", "--sparse-updates", "maybe"], capsys)
    assert code == 2 and "--sparse-updates" in err


def test_content_model_with_item_features_and_history(tmp_path, capsys):
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item": np.arange(40), "genres": [f"g{i % 4}|h{i % 3}"
                                                             for i in range(40)],
                          "year": 1950 + np.arange(40)})
    items_path = tmp_path / "items.csv"
    items.to_csv(items_path, index=False)
    rows = {(u, int(i)) for u in range(30) for i in rng.choice(np.arange(u % 4, 36, 4), 5)}
    inter = tmp_path / "inter.csv"
    pd.DataFrame(sorted(rows), columns=["user", "item"]).to_csv(inter, index=False)
    out = tmp_path / "content"
    code, _, err = run(["train", "content", "--data", inter, "--item-features", items_path,
                        "--out", out], capsys)
    assert code == 0, err
    # Items 36..39 have no events but features: they are in the catalogue.
    recs_path = tmp_path / "hist.csv"
    code, out_text, err = run(["recommend", "--model", out, "--history", "0,4,8,999", "--k", 3,
                               "--out", recs_path], capsys)
    assert code == 0, err
    assert "999" in out_text  # the unknown id is reported
    recs = pd.read_csv(recs_path)
    assert list(recs.columns) == ["item", "rank", "score"]
    assert set(recs["item"]) <= set(range(0, 40, 4))  # same genre g0 as the history

    code, _, err = run(["train", "content", "--data", inter, "--out", tmp_path / "x"], capsys)
    assert code == 2 and "--item-features" in err
    code, _, err = run(["train", "ease", "--data", inter, "--item-features", items_path,
                        "--out", tmp_path / "y"], capsys)
    assert code == 2 and "does not use item features" in err


def test_train_content_on_movielens_name_uses_its_metadata(tmp_path, capsys):
    from conftest import shared_path

    base = shared_path("ml-latest-small").parent
    out = tmp_path / "m"
    code, _, err = run(["train", "content", "--data", "ml-latest-small", "--data-dir", base,
                        "--min-rating", 3.5, "--out", out], capsys)
    assert code == 0, err
    from recforge.models import Recommender

    model = Recommender.load(out)
    # title, genre words and tags as one document, encoded by the bundled text encoder
    assert {"genres", "text", "year"} == set(model.item_features_.groups)
    # 9,742 movies in movies.csv; the ratings cover fewer: every movie is recommendable.
    assert model.n_items == 9742


def test_checkpoint_dir_keeps_files_that_are_not_the_checkpoint(tmp_path, csv_files, capsys):
    """Training removed the whole --checkpoint-dir after success: the user's files, and the
    model itself when --out was inside it."""
    train, _ = csv_files
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    code, _, err = run(["train", "bpr", "--data", train, "--out", keep / "model",
                        "--checkpoint-dir", keep, "-p", "epochs=1", "-p", "learning_rate=1e-3",
                        "--seed", 3], capsys)  # 1e-3: YAML 1.1 reads it as text
    assert code == 0, err
    assert (keep / "notes.txt").read_text() == "mine" and (keep / "model" / "meta.json").exists()
    assert not (keep / "checkpoint.pt").exists() and not (keep / "train_log.jsonl").exists()
    own = tmp_path / "own.checkpoint"
    assert run(["train", "bpr", "--data", train, "--out", tmp_path / "m2", "--checkpoint-dir",
                own, "-p", "epochs=1"], capsys)[0] == 0
    assert not own.exists()  # a directory of its own is removed when emptied
    a_file = tmp_path / "f"
    a_file.write_text("x")
    code, _, err = run(["train", "bpr", "--data", train, "--out", tmp_path / "m3",
                        "--checkpoint-dir", a_file], capsys)
    assert code == 2 and "not a directory" in err and a_file.read_text() == "x"
    code, _, err = run(["train", "bpr", "--data", train, "--out", tmp_path / "m4",
                        "--seed", -1], capsys)
    assert code == 2 and "seed must be an integer" in err


def test_hyperparameters_are_checked_before_the_data_is_read(tmp_path, capsys):
    # a file that reading would refuse (a missing one is answered first, without torch)
    unreadable = tmp_path / "unreadable.csv"
    unreadable.write_bytes(b"\xff\xfe\x00" * 10)
    code, _, err = run(["train", "bpr", "--data", unreadable, "--out",
                        tmp_path / "m", "-p", "learning_rate=-1"], capsys)
    assert code == 2 and "learning_rate" in err and "unreadable" not in err


def test_help_shows_the_install_extras_in_brackets(capsys, monkeypatch):
    """Rich read `[postgres]` in `pip install 'recforge[postgres]'` as a style tag."""
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = run(["serve", "--help"], capsys)
    assert code == 0
    assert "recforge[postgres]" in out and "recforge[ann]" in out


def test_each_call_lays_help_out_at_its_own_columns(capsys, monkeypatch):
    """The help width is read on every call of ``main``, not kept from the first (a test
    order, or an embedding program, that changed COLUMNS got the first call's width)."""
    widths = []
    for columns in ("90", "220", "90"):
        monkeypatch.setenv("COLUMNS", columns)
        code, out, _ = run(["serve", "--help"], capsys)
        assert code == 0
        widths.append(max(len(line) for line in out.splitlines()))
    assert widths == [90, 220, 90]


def test_unknown_users_error_names_the_cli_option(tmp_path, csv_files, capsys):
    train, _ = csv_files
    run(["train", "pop", "--data", train, "--out", tmp_path / "m"], capsys)
    users = tmp_path / "users.txt"
    users.write_text("0\n999999\n")
    code, out, err = run(["recommend", "--model", tmp_path / "m", "--users", users,
                          "--out", tmp_path / "r.csv"], capsys)
    assert code == 2
    assert "--unknown skip" in out + err and "unknown='skip'" not in out + err
    code, _, _ = run(["recommend", "--model", tmp_path / "m", "--users", users,
                      "--unknown", "skip", "--out", tmp_path / "r.csv"], capsys)
    assert code == 0 and (tmp_path / "r.csv").exists()


def test_evaluate_says_each_note_once(tmp_path, capsys):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [1, 2, 2, 3, 1]}).to_csv(train, index=False)
    pd.DataFrame({"user": [1, 9], "item": [3, 1]}).to_csv(test, index=False)
    assert run(["train", "pop", "--data", train, "--out", tmp_path / "m"], capsys)[0] == 0
    code, out, err = run(["evaluate", "--model", tmp_path / "m", "--train", train,
                          "--test", test, "--metrics", "recall@2"], capsys)
    assert code == 0, err
    assert (out + err).count("unknown to the model were skipped") == 1


def test_datasets_generate_ordered_writes_a_log_the_sequence_models_read(tmp_path, capsys):
    from recforge.data.readers import read_parquet

    out = tmp_path / "o.parquet"
    code, text, err = run(["datasets", "generate", out, "--ordered", "--users", 300,
                           "--items", 200, "--mean-length", 8, "--seed", 2], capsys)
    assert code == 0, err
    data = read_parquet(out)
    assert data.n_users == 300 and 5 < len(data) / 300 < 12
    assert f"{len(data):,} events" in " ".join(text.split())
    assert list(pd.read_parquet(out).columns) == ["user", "item", "timestamp"]
    for bad, says in ((["--interactions", 1000], "--interactions does not apply"),
                      (["--users", "9" * 5000], "--users"),
                      (["--items", 10 ** 8], "10,000,000 --items"),
                      (["--mean-length", "nan"], "mean_length"),
                      (["--mean-length", 2], "mean_length must be >= 3")):
        target = tmp_path / "bad.parquet"
        code, _, err = run(["datasets", "generate", target, "--ordered", *bad], capsys)
        assert code == 2 and says in err and not target.exists(), (bad, err)


def test_each_call_lays_tables_out_at_its_own_columns(capsys, monkeypatch):
    """The consoles that print tables take this call's width too, not the width of the
    process's first import (``recforge models``: a table wider than 90 columns)."""
    widths = []
    for columns in ("90", "200", "90"):
        monkeypatch.setenv("COLUMNS", columns)
        code, out, _ = run(["models"], capsys)
        assert code == 0
        widths.append(max(len(line) for line in out.splitlines()))
    assert widths[0] == widths[2] <= 90 < widths[1] <= 200
