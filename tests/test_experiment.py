"""recforge run: the typed config, the runner's outputs, reproducibility, and agreement
with `recforge evaluate` on the saved artefacts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recforge import ConfigError
from recforge.cli import main
from recforge.experiment.config import load_config, parse_config
from recforge.experiment.runner import _is_previous_run, run_experiment


def cli(args):
    try:
        return main([str(a) for a in args]) or 0
    except SystemExit as exc:  # Typer exits with the command's status
        return exc.code or 0


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def files(tmp_path, random_data):
    from recforge.data.split import random_split

    split = random_split(random_data, test_size=0.2, seed=0)
    rng = np.random.default_rng(0)
    frames = []
    for part in (split.train, split.test):
        f = part.to_frame()
        f["rating"] = rng.integers(1, 6, len(f)).astype(float)
        frames.append(f)
    paths = tmp_path / "train.csv", tmp_path / "test.csv"
    for f, p in zip(frames, paths, strict=True):
        f.to_csv(p, index=False)
    return paths


@pytest.mark.parametrize("text,match", [
    ("name: x\nmodels: [ease]\n", "data.source: missing"),
    ("data: {source: synthetic}\nmodels: [easee]\n", "models\\[0\\].name: unknown model 'easee'.*'ease'"),
    ("data: {source: synthetic}\nmodels: [{name: ease, params: {regg: 1}}]\n",
     "models\\[0\\].params.regg: ease has no parameter 'regg' \\(did you mean 'reg'\\?\\)"),
    ("data: {source: synthetic, min_rating: high}\nmodels: [ease]\n",
     "data.min_rating: expected a number"),
    ("data: {source: synthetic}\nsplit: {metod: random}\nmodels: [ease]\n",
     "split.metod: unknown key \\(did you mean 'method'\\?\\)"),
    ("data: {source: synthetic}\nmodels: [ease]\nmetrics: [ndcg@0]\n", "metrics\\[0\\]"),
    ("data: {source: synthetic}\nmodels: [ease, ease]\n", "two models are labelled 'ease'"),
    ("data: {source: synthetic}\nmodels: [ease]\nprotocol: sampled\n"
     "metrics: [ndcg@10, coverage@10]\n", "protocol: 'sampled' cannot compute coverage@10"),
    ("data: {source: synthetic}\nsplit: {method: cold_start_items}\nmodels: [ease]\n"
     "protocol: sampled\n", "protocol: 'sampled' with split.method cold_start_items"),
    ("data: {source: synthetic}\nsplit: {method: files}\nmodels: [ease]\n",
     "needs data.train and data.test"),
    ("data: {source: ml-100k, test: t.csv}\nmodels: [ease]\n",
     "data.test: only used with split.method 'files'"),
    ("data: {source: ml-100k, valid: v.csv}\nsplit: {method: temporal}\nmodels: [ease]\n",
     "data.valid: only used with split.method 'files'"),
    ("data: {train: a.csv, test: t.csv, k_core: 5}\nsplit: {method: files}\nmodels: [ease]\n",
     "data.k_core: not applied with split.method 'files'"),
    ("data: {source: ml-100k, train: a.csv, test: t.csv}\nsplit: {method: files}\n"
     "models: [ease]\n", "data.source: not used with split.method 'files'"),
    ("name: '..'\ndata: {source: synthetic}\nmodels: [ease]\n", "name: expected a plain"),
    ("name: '.'\ndata: {source: synthetic}\nmodels: [ease]\n", "name: expected a plain"),
    ("data: {source: synthetic}\nmodels: [{name: ease, label: ../../x}]\n",
     r"models\[0\].label: expected a plain name"),
    ("data: {source: synthetic}\nmodels: [{name: ease, label: 'a\\b'}]\n",
     r"models\[0\].label: expected a plain name"),
    ("data: {source: synthetic}\nmodels: [{name: ease, label: ..}]\n",
     r"models\[0\].label: expected a plain name"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path)
    assert "exp.yaml" in str(err.value)


def test_bad_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nmodels: [ease\n")
    with pytest.raises(ConfigError, match="exp.yaml: line"):
        load_config(path)


def test_run_writes_results_and_is_reproducible(tmp_path, files):
    train, test = files
    cfg_text = f"""
        name: small
        data:
          train: {train}
          test: {test}
          min_rating: 3
        split: {{method: files}}
        models:
          - pop
          - name: ease
            params: {{reg: 50}}
          - name: bpr
            params: {{embedding_dim: 8, epochs: 3, batch_size: 256}}
          - name: mf
            params: {{embedding_dim: 8, epochs: 3}}
        metrics: [ndcg@10, recall@10, rmse]
        seeds: [0, 1]
        n_bootstrap: 200
    """
    cfg = load_config(write(tmp_path, cfg_text))
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(load_config(write(tmp_path, cfg_text)), tmp_path / "b")
    assert [r["model"] for r in a.rows] == [r["model"] for r in b.rows]
    for ra, rb in zip(a.rows, b.rows, strict=True):
        assert ra["NDCG@10"] == rb["NDCG@10"]
    out = tmp_path / "a"
    payload = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in payload["leaderboard"]} == {"pop", "ease", "bpr", "mf"}
    assert payload["versions"]["torch"] and payload["config"]["seeds"] == [0, 1]
    assert payload["evaluation"] == {"primary": "NDCG@10", "protocol": "full",
                                     "metrics": ["NDCG@10", "Recall@10", "RMSE"],
                                     "excluded": "train", "candidates": None,
                                     "task": "topk", "threshold": {
                                         "min_rating": 3.0, "order": "before_split"}}
    runs = [(r["label"], r["seed"]) for r in payload["runs"]]
    assert ("bpr", 0) in runs and ("bpr", 1) in runs and ("ease", None) in runs
    best = payload["leaderboard"][0]
    assert best["rank"] == 1 and best["p_vs_best"] is None
    lo, hi = best["NDCG@10 ci"]
    assert lo <= best["NDCG@10"] <= hi
    others = [r for r in payload["leaderboard"][1:] if r["p_vs_best"] is not None]
    assert others and all(0 <= r["p_vs_best"] <= 1 for r in others)
    mf = next(r for r in payload["leaderboard"] if r["model"] == "mf")
    assert mf["RMSE"] > 0
    csv = pd.read_csv(out / "results.csv")
    assert {"model", "NDCG@10", "NDCG@10 ci_low", "p_vs_best"} <= set(csv.columns)
    per_user = pd.read_parquet(out / "per_user.parquet")
    assert set(per_user["model"]) == {"pop", "ease", "bpr", "mf"}
    assert (out / "models" / "bpr" / "seed-1" / "meta.json").exists()
    assert (out / "models" / "ease" / "meta.json").exists()
    # The resolved config runs again as is.
    assert load_config(out / "config.yaml").models[1].params == {"reg": 50}


def test_leaderboard_matches_recforge_evaluate(tmp_path, files, capsys):
    train, test = files
    path = write(tmp_path, f"""
        name: agree
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        models: [itemknn, {{name: als, params: {{embedding_dim: 8}}}}]
        metrics: [ndcg@10, recall@20]
    """)
    assert cli(["run", path, "--out", tmp_path / "r"]) == 0
    payload = json.loads((tmp_path / "r" / "results.json").read_text())
    for row in payload["leaderboard"]:
        res = tmp_path / f"{row['model']}.json"
        code = cli(["evaluate", "--model", tmp_path / "r" / "models" / row["model"],
                    "--train", train, "--test", test, "--min-rating", "3",
                    "--metrics", "ndcg@10,recall@20", "--out", res])
        assert code == 0
        evaluated = json.loads(res.read_text())["metrics"]
        assert evaluated["NDCG@10"] == pytest.approx(row["NDCG@10"], abs=1e-6)
        assert evaluated["Recall@20"] == pytest.approx(row["Recall@20"], abs=1e-6)
    assert "p vs best" in capsys.readouterr().out


def test_validation_items_are_left_out_of_the_test_rankings(tmp_path, files):
    train, test = files
    frame = pd.read_csv(train)
    rng = np.random.default_rng(3)
    in_valid = rng.random(len(frame)) < 0.2
    fit_part, valid = tmp_path / "fit.csv", tmp_path / "valid.csv"
    frame[~in_valid].to_csv(fit_part, index=False)
    frame[in_valid].to_csv(valid, index=False)
    path = write(tmp_path, f"""
        name: v
        data: {{train: {fit_part}, valid: {valid}, test: {test}}}
        split: {{method: files}}
        models: [{{name: ease, params: {{reg: 20}}}}]
        metrics: [ndcg@10]
        n_bootstrap: 20
    """)
    assert cli(["run", path, "--out", tmp_path / "r"]) == 0
    row = json.loads((tmp_path / "r" / "results.json").read_text())["leaderboard"][0]
    out = {}
    for name, trains in (("both", [fit_part, valid]), ("fit", [fit_part])):
        args = ["evaluate", "--model", tmp_path / "r" / "models" / "ease", "--test", test,
                "--metrics", "ndcg@10", "--out", tmp_path / f"{name}.json"]
        for t in trains:
            args += ["--train", t]
        assert cli(args) == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]["NDCG@10"]
    assert row["NDCG@10"] == pytest.approx(out["both"], abs=1e-9)
    assert out["both"] > out["fit"]  # validation items left in are misses


def test_cold_start_experiment_with_features(tmp_path):
    cfg = parse_config({
        "name": "cold", "data": {"source": "synthetic", "min_rating": 4},
        "split": {"method": "cold_start_items", "test_size": 0.2},
        "models": ["content", {"name": "hybrid", "params": {"embedding_dim": 16}}],
        "metrics": ["recall@20"], "save_models": False})
    result = run_experiment(cfg, tmp_path / "cold")
    assert {r["model"] for r in result.rows} == {"content", "hybrid"}
    assert all(r["Recall@20"] > 0 for r in result.rows)
    with pytest.raises(ConfigError, match="needs item features"):
        run_experiment(parse_config({"data": {"source": "synthetic", "item_features": None},
                                     "models": ["content"]}), tmp_path / "x")


EXAMPLES = sorted((__import__("pathlib").Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_run_as_written(path, tmp_path):
    """Every example runs unchanged (they read ../shared beside the repository)."""
    from conftest import shared_data_dir

    if shared_data_dir() is None:
        pytest.skip("shared data not found: the examples read ../shared/data")
    cfg = load_config(path)
    cfg.save_models = False
    result = run_experiment(cfg, tmp_path / "out")
    assert result.rows and all(np.isfinite(r[result.primary]) for r in result.rows)


def test_report_has_every_plot_embedded(tmp_path, files):
    import base64
    import re

    train, test = files
    path = write(tmp_path, f"""
        name: rep
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        models: [pop, {{name: bpr, params: {{embedding_dim: 8, epochs: 2, batch_size: 256}}}}]
        metrics: [ndcg@10, coverage@10]
        save_models: false
    """)
    run_experiment(load_config(path), tmp_path / "r")
    out = tmp_path / "r"
    for name in ("metrics.png", "learning_curves.png", "popularity.png", "per_user.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in (out / "report.md").read_text()
    # coverage is one figure: a panel of metrics.png, not a second plot of its own
    assert not (out / "coverage.png").exists()
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert 'src="http' not in page and 'href="http' not in page  # nothing fetched online
    assert oct((out / "report.html").stat().st_mode & 0o777) != oct(0o600)


def test_report_opens_in_headless_chromium(tmp_path, files):
    """The HTML report renders offline with every image decoded (when Chromium exists)."""
    import shutil
    import subprocess

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    train, test = files
    path = write(tmp_path, f"""
        name: rep
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        models: [pop, ease]
        metrics: [ndcg@10, coverage@10]
        save_models: false
    """)
    run_experiment(load_config(path), tmp_path / "r")
    page = tmp_path / "r" / "report.html"
    # Append a script that lists images that failed to decode, then dump the DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload = () => { const bad = [...document.images]"
        ".filter(i => !i.complete || i.naturalWidth === 0).length; "
        "document.body.setAttribute('data-broken', String(bad)); "
        "document.body.setAttribute('data-images', String(document.images.length)); };"
        "</script></body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert 'data-broken="0"' in proc.stdout, proc.stderr[-2000:]
    # every plot the report embeds is an image the browser decoded (metrics with coverage as
    # a panel, per-user, popularity, learning curves when there are any: at least three)
    n_img = page.read_text().count("<img")
    assert n_img >= 3 and f'data-images="{n_img}"' in proc.stdout


def test_tune_writes_best_params_and_a_runnable_config(tmp_path, files):
    import yaml

    from recforge.experiment.tune import tune

    train, test = files
    path = write(tmp_path, f"""
        name: t
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        models: [ease, {{name: bpr, params: {{embedding_dim: 8, epochs: 4, batch_size: 256}}}}]
        metrics: [ndcg@10]
    """)
    cfg = load_config(path)
    summary = tune(cfg, "ease", n_trials=3, out=tmp_path / "t1", config_path=path)
    best = yaml.safe_load((tmp_path / "t1" / "best_params.yaml").read_text())
    assert best["model"] == "ease" and 10 <= best["params"]["reg"] <= 5000
    assert best["trials"] == 3 and best["value"] == pytest.approx(summary["value"])
    tuned = load_config(tmp_path / "t1" / "exp.tuned.yaml")
    assert tuned.models[0].params == best["params"]
    # Gradient models report every epoch; the fixed params of the experiment stay fixed.
    summary = tune(cfg, "bpr", n_trials=4, out=tmp_path / "t2", space={
        "learning_rate": ("log", 1e-3, 5e-2)})
    assert summary["params"]["embedding_dim"] == 8 and summary["complete"] >= 1
    with pytest.raises(ConfigError, match="no hyperparameters to search"):
        tune(cfg, "pop", n_trials=2, out=tmp_path / "t3")


def test_tune_a_rating_model_on_a_ranking_metric_with_min_rating(tmp_path, files):
    """As `recforge run` does: mf trains on the ratings, the ranking metric is measured on
    the validation positives (it refused: the training data had been made implicit)."""
    from recforge.experiment.tune import tune

    train, test = files
    path = write(tmp_path, f"""
        name: t
        data: {{train: {train}, test: {test}, min_rating: 4}}
        split: {{method: files}}
        models: [{{name: mf, params: {{embedding_dim: 4, epochs: 2, batch_size: 256}}}}]
        metrics: [ndcg@10, rmse]
    """)
    summary = tune(load_config(path), "mf", n_trials=2, out=tmp_path / "t",
                   space={"learning_rate": ("log", 1e-3, 5e-2)})
    assert summary["complete"] >= 1 and 0.0 <= summary["value"] <= 1.0


def test_tune_cli(tmp_path, files):
    train, test = files
    path = write(tmp_path, f"""
        name: t
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        models: [itemknn]
    """)
    assert cli(["tune", path, "--model", "itemknn", "--trials", 2, "--out", tmp_path / "o"]) == 0
    assert (tmp_path / "o" / "best_params.yaml").exists()


def test_config_reference_documents_every_key():
    """docs/experiments.md's reference table names every field of the typed config."""
    import dataclasses
    import pathlib

    from recforge.experiment import config as C

    doc = (pathlib.Path(__file__).parents[1] / "docs" / "experiments.md").read_text()
    for cls, prefix in ((C.DataConfig, "data."), (C.SplitConfig, "split."),
                        (C.ExperimentConfig, "")):
        for f in dataclasses.fields(cls):
            if f.name in ("data", "split"):
                continue
            assert f"`{prefix}{f.name}" in doc, f"{prefix}{f.name} is not documented"


def test_leaderboard_order_with_models_missing_the_primary_metric():
    """RMSE first: the rating models by RMSE (lower first), ranking-only models after them."""
    from recforge.experiment.leaderboard import leaderboard

    cfg = parse_config({"data": {"source": "synthetic"}, "models": [{"name": "pop"}],
                        "metrics": ["rmse", "ndcg@10"], "n_bootstrap": 50})
    runs = [{"label": label, "model": label, "seed": None, "params": {}, "fit_s": 0.0,
             "eval_s": 0.0, **values}
            for label, values in [("pop", {"NDCG@10": 0.30}), ("mf", {"RMSE": 0.9716,
                                                                      "NDCG@10": 0.10}),
                                  ("ease", {"NDCG@10": 0.35}), ("mlp", {"RMSE": 0.9609,
                                                                        "NDCG@10": 0.12})]]
    rows = leaderboard(cfg, runs, pd.DataFrame(), "RMSE")
    assert [r["model"] for r in rows][:2] == ["mlp", "mf"]
    assert {r["model"] for r in rows[2:]} == {"pop", "ease"}
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]


def test_training_files_share_the_duplicates_policy(tmp_path):
    a, b, t = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "t.csv"
    a.write_text("user,item\n1,10\n1,11\n2,10\n3,12\n")
    b.write_text("user,item\n1,10\n2,12\n3,10\n")
    t.write_text("user,item\n1,12\n2,11\n3,11\n")
    base = f"""
        data: {{train: [{a}, {b}], test: {t}}}
        split: {{method: files}}
        models: [{{name: pop}}]
        metrics: [recall@2]
    """
    from recforge.experiment.workflow import prepare_data

    with pytest.raises(Exception, match=r"duplicate \(user, item\) pair \(1, 10\)"):
        prepare_data(load_config(write(tmp_path, base)))
    first = base.replace("test: " + str(t) + "}", "test: " + str(t) + ", duplicates: first}")
    assert len(prepare_data(load_config(write(tmp_path, first, "b.yaml"))).train) == 6


def _learning_curve_titles(monkeypatch, tmp_path, runs):
    from recforge.experiment import report

    titles = []

    def capture(fig, path):
        titles.extend(ax.get_title() for ax in fig.axes)
        report._plt().close(fig)

    monkeypatch.setattr(report, "_save", capture)
    assert report._plot_learning_curves(runs, tmp_path / "lc.png")
    return titles


def test_learning_curves_plot_the_validation_metric_not_timings(monkeypatch, tmp_path):
    """The trainer's records hold sampling_seconds and steps before the validation metric:
    the panel plots the model's valid_metric, and there is none without validation."""
    history = [{"epoch": e, "loss": 1.0 / e, "seconds": 0.1, "sampling_seconds": 0.03,
                "steps": 10, "lr": 0.01, "ndcg@20": 0.1 * e} for e in (1, 2, 3)]
    run = {"label": "bpr", "seed": 0, "params": {"valid_metric": "ndcg@20"},
           "history": history}
    assert _learning_curve_titles(monkeypatch, tmp_path, [run]) == [
        "training loss", "validation ndcg@20"]
    no_valid = [{k: v for k, v in h.items() if k != "ndcg@20"} for h in history]
    run = {**run, "history": no_valid}
    assert _learning_curve_titles(monkeypatch, tmp_path, [run]) == ["training loss"]


@pytest.mark.parametrize("params,match", [
    ({"embedding_dim": "64"}, r"models\[1\] \(als\): als: embedding_dim must be an integer in "
                              r"1\.\.8192, got '64'"),
    ({"reg": True}, r"models\[1\] \(als\): als: reg must be a finite number .*, got True"),
    ({"reg": float("nan")}, r"models\[1\] \(als\): als: reg must be a finite number"),
    ({"embedding_dim": 10**12}, r"models\[1\] \(als\): als: embedding_dim must be an integer "
                                r"in 1\.\.8192"),
])
def test_bad_hyperparameters_fail_before_any_training(tmp_path, params, match):
    raw = {"data": {"source": "synthetic"}, "models": ["pop", {"name": "als", "params": params}],
           "metrics": ["ndcg@10"]}
    with pytest.raises(ConfigError, match=match):  # the parsed config is a valid one
        parse_config(raw)
    cfg = parse_config({**raw, "models": ["pop", "als"]})
    cfg.models[1].params = params  # a config made in Python, past the parser
    with pytest.raises(ConfigError, match=match):
        run_experiment(cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "models").exists()


def test_every_seed_is_checked_before_any_training(tmp_path):
    """A seed a model refuses stopped the run at that model, after the others trained."""
    cfg = parse_config({"data": {"source": "synthetic"}, "models": ["pop", "bpr"],
                        "metrics": ["ndcg@10"]})
    cfg.seeds = [0, -1]  # past the parser, which refuses it itself
    with pytest.raises(ConfigError, match=r"models\[1\] \(bpr\): bpr: seed must be"):
        run_experiment(cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "models").exists()


def test_dataset_name_beside_a_directory_of_that_name_stays_a_name(tmp_path):
    """An extracted ml-100k/ beside the YAML does not turn `source: ml-100k` into a path;
    a file of that name, or any other relative source, is resolved against the YAML."""
    (tmp_path / "ml-100k").mkdir()
    path = write(tmp_path, "data: {source: ml-100k}\nmodels: [pop]\n")
    assert load_config(path).data.source == "ml-100k"
    path = write(tmp_path, "data: {source: events.csv}\nmodels: [pop]\n", "b.yaml")
    assert load_config(path).data.source == str(tmp_path / "events.csv")
    (tmp_path / "synthetic").write_text("user,item\n1,2\n")
    path = write(tmp_path, "data: {source: synthetic}\nmodels: [pop]\n", "c.yaml")
    assert load_config(path).data.source == str(tmp_path / "synthetic")
    for store in ("events:/var/ev.sqlite", "events:ev.sqlite",
                  "events:postgresql+psycopg://u@h/db"):  # an event store stays as written
        path = write(tmp_path, f"data: {{source: '{store}'}}\nmodels: [pop]\n", "d.yaml")
        assert load_config(path).data.source == store


def test_rerun_into_the_same_directory_leaves_no_stale_outputs(tmp_path, files):
    train, test = files
    base = f"""
        name: re
        data: {{train: {train}, test: {test}, min_rating: 3}}
        split: {{method: files}}
        metrics: [ndcg@10, coverage@10]
        n_bootstrap: 20
    """
    out = tmp_path / "r"
    first = write(tmp_path, base + """
        models: [pop, ease, {name: als, params: {embedding_dim: 4, epochs: 1}}]
        seeds: [0, 1]
    """, "a.yaml")
    run_experiment(load_config(first), out)
    assert (out / "models" / "als" / "seed-1" / "meta.json").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "models" / "mine").mkdir()
    (out / "models" / "mine" / "x.txt").write_text("mine")
    second = write(tmp_path, base.replace(", coverage@10", "") + """
        models: [{name: als, params: {embedding_dim: 4, epochs: 1}}]
        seeds: [0]
        report: false
    """, "b.yaml")
    run_experiment(load_config(second), out)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["als", "mine"]
    assert (out / "models" / "als" / "meta.json").is_file()
    assert not (out / "models" / "als" / "seed-0").exists()
    for stale in ("report.html", "report.md", "coverage.png", "metrics.png"):
        assert not (out / stale).exists(), stale
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "models" / "mine" / "x.txt").read_text() == "mine"
    payload = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in payload["leaderboard"]] == ["als"]


def test_a_failed_rerun_leaves_the_earlier_results(tmp_path, files, monkeypatch):
    """The earlier run's outputs were removed before the re-run trained: a Ctrl-C or an
    error lost them, config.yaml (runnable again) included."""
    from recforge.models.ease import EASE

    train, test = files
    path = write(tmp_path, f"""
        data: {{train: {train}, test: {test}}}
        split: {{method: files}}
        models: [pop, ease]
        report: false
    """)
    out = tmp_path / "r"
    run_experiment(load_config(path), out)
    before = json.loads((out / "results.json").read_text())

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(EASE, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_config(out / "config.yaml"), out)
    assert json.loads((out / "results.json").read_text()) == before
    assert (out / "config.yaml").is_file() and (out / "models" / "ease" / "meta.json").is_file()


def test_run_refuses_a_model_folder_it_did_not_write_before_training(tmp_path, files):
    train, test = files
    out = tmp_path / "r"
    (out / "models" / "pop").mkdir(parents=True)
    (out / "models" / "pop" / "keep.txt").write_text("mine")
    path = write(tmp_path, f"""
        data: {{train: {train}, test: {test}}}
        split: {{method: files}}
        models: [ease, pop]
    """)
    with pytest.raises(Exception, match="not a saved recforge model"):
        run_experiment(load_config(path), out)
    assert not (out / "models" / "ease").exists()  # nothing trained
    assert (out / "models" / "pop" / "keep.txt").read_text() == "mine"


def test_a_rerun_keeps_folders_with_a_meta_json_that_is_not_a_model(tmp_path, files):
    """Any meta.json made a folder under models/ a "saved model": a re-run deleted it
    (as an earlier run's model it did not replace), or replaced it when a model of the
    re-run had its name."""
    train, test = files
    out = tmp_path / "r"
    path = write(tmp_path, f"""
        data: {{train: {train}, test: {test}}}
        split: {{method: files}}
        models: [pop]
        report: false
    """)
    run_experiment(load_config(path), out)
    for name in ("mine", "ease"):
        (out / "models" / name).mkdir()
        (out / "models" / name / "meta.json").write_text('{"mine": true}')
        (out / "models" / name / "data.txt").write_text("mine")
    again = write(tmp_path, f"""
        data: {{train: {train}, test: {test}}}
        split: {{method: files}}
        models: [ease]
        report: false
    """, "again.yaml")
    with pytest.raises(Exception, match="not a recforge model's"):  # before training
        run_experiment(load_config(again), out)
    run_experiment(load_config(path), out)  # pop again: 'mine' and 'ease' stay
    for name in ("mine", "ease"):
        assert (out / "models" / name / "data.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text("[" * 100_000 + "]" * 100_000)  # past the stack
    assert not _is_previous_run(other)  # RecursionError


def test_user_text_is_printed_and_plotted_as_text(tmp_path, files):
    """A data path holding '[/]' raised Rich's MarkupError, and a label such as
    'a$^{x$' matplotlib's TeX parser, after every model had trained."""
    import io

    from rich.console import Console

    train, _ = files
    odd = tmp_path / "x[" / "]y.csv"
    odd.parent.mkdir()
    odd.write_bytes(Path(train).read_bytes())
    buffer = io.StringIO()
    cfg = parse_config({"data": {"source": str(odd)}, "metrics": ["ndcg@10"],
                        "models": [{"name": "pop", "label": "a$^{x$"},
                                   {"name": "ease", "label": "[red]b"}],
                        "save_models": False, "n_bootstrap": 10})
    run_experiment(cfg, tmp_path / "r", console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "x[/]y.csv" in text and "[red]b" in text and "a$^{x$" in text
    assert (tmp_path / "r" / "report.html").is_file()


def test_report_uses_the_runs_primary_metric_columns_and_protocol(tmp_path):
    """RMSE ranks the leaderboard: the report's columns follow the config order and its
    p-values are said to be on RMSE; the sampled protocol is described as such."""
    from recforge.experiment.report import write_report

    rows = [{"model": "mf", "name": "mf", "seeds": [0], "params": {},
             "NDCG@10 (sampled 1+100)": 0.11, "RMSE": 0.95, "fit_s": 1.0, "eval_s": 0.1,
             "rank": 1, "p_vs_best": None},
            {"model": "pop", "name": "pop", "seeds": [], "params": {},
             "NDCG@10 (sampled 1+100)": 0.18, "fit_s": 0.0, "eval_s": 0.1, "rank": 2,
             "p_vs_best": None}]
    payload = {"name": "rm", "data": "d", "leaderboard": rows, "runs": [],
               "evaluation": {"primary": "RMSE", "metrics": ["RMSE", "NDCG@10 (sampled 1+100)"],
                              "protocol": "sampled", "excluded": "train", "candidates": None}}
    (tmp_path / "results.json").write_text(json.dumps(payload))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "paired t-test over users on RMSE" in md
    assert "| # | model | RMSE | NDCG@10 (sampled 1+100) | fit s | p vs best |" in md
    assert "Sampled evaluation" in md and "Full-ranking" not in md
    payload["evaluation"] = {**payload["evaluation"], "protocol": "full",
                             "excluded": "train+valid", "candidates": "held-out cold items"}
    (tmp_path / "results.json").write_text(json.dumps(payload))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "training or validation excluded; ranking only the held-out cold items" in md


def test_popularity_profile_of_a_cold_start_run_counts_the_evaluated_lists(tmp_path):
    """Cold start ranks only held-out items, which have no training events: none of the
    evaluated slots falls in the most popular decile (it was 100 % for pop)."""
    cfg = parse_config({
        "data": {"source": "synthetic"}, "split": {"method": "cold_start_items"},
        "models": ["pop"], "metrics": ["recall@10"], "save_models": False,
        "report": False, "n_bootstrap": 20})
    result = run_experiment(cfg, tmp_path / "r")
    share = result.runs[0]["popularity"]["recommended_share"]
    assert share[0] == 0.0 and sum(share) == pytest.approx(1.0)


def test_every_run_is_evaluated_with_one_seed_whatever_the_model_seed(tmp_path, monkeypatch):
    """Sampled negatives (and tie-breaks) do not follow the model's training seed: every
    model of a leaderboard faces the same negatives."""
    from recforge.experiment import workflow

    seeds = []
    real = workflow.evaluate

    def spy(*args, **kw):
        seeds.append(kw.get("seed", 0))
        return real(*args, **kw)

    monkeypatch.setattr(workflow, "evaluate", spy)
    cfg = parse_config({
        "data": {"source": "synthetic"}, "protocol": "sampled",
        "models": ["pop", {"name": "als", "params": {"embedding_dim": 4, "epochs": 1}}],
        "metrics": ["ndcg@10"], "seeds": [3, 5], "save_models": False, "report": False,
        "n_bootstrap": 20})
    run_experiment(cfg, tmp_path / "r")
    assert len(seeds) == 3 and set(seeds) == {0}


def test_tune_follows_a_cold_start_experiment(tmp_path):
    """Trials are scored as `recforge run` measures a cold-start split: held-out items with
    no training event, ranked among themselves (not a warm split of the whole catalogue)."""
    from recforge.data.split import cold_start_items
    from recforge.evaluation import evaluate
    from recforge.experiment.tune import tune
    from recforge.experiment.workflow import prepare_data
    from recforge.models.registry import create_model

    cfg = parse_config({"data": {"source": "synthetic"},
                        "split": {"method": "cold_start_items", "seed": 0},
                        "models": ["content"], "metrics": ["recall@20"]})
    summary = tune(cfg, "content", n_trials=2, out=tmp_path / "t")
    assert "cold" in summary["validation"]
    data = prepare_data(cfg)
    inner = cold_start_items(data.train, 0.2, seed=1)
    model = create_model("content", **summary["params"]).fit(
        inner.train, item_features=data.item_features)
    cand = inner.test.items.ids[np.unique(inner.test.item)]
    expected = evaluate(model, inner.train, inner.test, metrics="recall@20",
                        candidates=cand)["Recall@20"]
    assert summary["value"] == pytest.approx(expected)


def test_tune_follows_the_sampled_protocol(tmp_path):
    from recforge.data.split import random_split
    from recforge.evaluation import evaluate
    from recforge.experiment.tune import tune
    from recforge.experiment.workflow import prepare_data
    from recforge.models.registry import create_model

    cfg = parse_config({"data": {"source": "synthetic"}, "protocol": "sampled",
                        "models": ["ease"], "metrics": ["ndcg@10"]})
    summary = tune(cfg, "ease", n_trials=2, out=tmp_path / "t")
    assert "sampled" in summary["validation"]
    data = prepare_data(cfg)
    inner = random_split(data.train, test_size=0.2, by_user=True, seed=1)
    model = create_model("ease", **summary["params"]).fit(inner.train)
    res = evaluate(model, inner.train, inner.test, metrics="ndcg@10", protocol="sampled")
    assert summary["value"] == pytest.approx(res["NDCG@10 (sampled 1+100)"])


@pytest.mark.parametrize("model,params", [("ease", {"reg": 20.0}), ("itemknn", {})])
def test_run_gives_the_python_examples_figure(tmp_path, model, params):
    """The README's Python example (threshold, then split, fit on the training positives,
    evaluate with them excluded) and the equivalent YAML give the same figures: `run`
    thresholds before it splits (data.threshold_order: before_split, the default).
    after_split (split every rating, threshold each part, exclude every training item)
    is another protocol, kept under its own name."""
    from conftest import event_frame

    from recforge import create_model, evaluate
    from recforge.data.filters import to_implicit
    from recforge.data.interactions import Interactions
    from recforge.data.split import random_split

    path = tmp_path / "ratings.csv"
    event_frame(4000, n_users=150, n_items=120).to_csv(path, index=False)
    data = to_implicit(Interactions.from_csv(path), 4.0)  # ratings >= 4 as positives
    split = random_split(data, test_size=0.2, by_user=True, seed=0)
    fitted = create_model(model, **params).fit(split.train)
    python = evaluate(fitted, split.train, split.test, metrics="ndcg@10,recall@20").summary

    def run(order):
        cfg = parse_config({
            "name": order, "data": {"source": str(path), "min_rating": 4,
                                    "threshold_order": order},
            "split": {"method": "random", "test_size": 0.2, "by_user": True, "seed": 0},
            "models": [{"name": model, "params": params}], "metrics": ["ndcg@10", "recall@20"],
            "n_bootstrap": 20, "save_models": False, "report": False}, "exp.yaml")
        return run_experiment(cfg, tmp_path / order).rows[0]

    row = run("before_split")
    assert row["NDCG@10"] == pytest.approx(python["NDCG@10"], abs=1e-12)
    assert row["Recall@20"] == pytest.approx(python["Recall@20"], abs=1e-12)
    assert run("after_split")["NDCG@10"] != pytest.approx(python["NDCG@10"], abs=1e-6)


def test_rating_models_never_train_on_a_held_out_positive(tmp_path):
    """Thresholded before the split, a rating model still learns every rating of the
    same split of all ratings, less the pairs held out as test positives."""
    from conftest import event_frame

    from recforge.experiment.workflow import prepare_data

    path = tmp_path / "ratings.csv"
    event_frame(3000, n_users=100, n_items=90).to_csv(path, index=False)
    cfg = parse_config({"data": {"source": str(path), "min_rating": 4},
                        "split": {"method": "random", "seed": 3},
                        "models": ["pop", {"name": "baseline", "params": {"epochs": 2}}],
                        "metrics": ["ndcg@10", "rmse"]}, "exp.yaml")
    data = prepare_data(cfg)
    pairs = lambda d: set(zip(d.user.tolist(), d.item.tolist(), strict=True))  # noqa: E731
    assert not pairs(data.train) & pairs(data.test_pos)
    assert not pairs(data.train_pos) & pairs(data.test_pos)
    assert data.train.value is not None and (data.train.value < 4).any()  # every rating
    assert data.test_pos.value is None  # positives


def test_per_user_plot_marks_mean_and_median_in_leaderboard_order(tmp_path, monkeypatch):
    from recforge.experiment import report

    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    per_user = pd.DataFrame({"model": ["b"] * 3 + ["a"] * 3, "seed": -1,
                             "user": ["1", "2", "3"] * 2,
                             "NDCG@10": [0.0, 0.0, 0.9, 0.3, 0.3, 0.3]})
    assert report._plot_per_user(per_user, "NDCG@10", ["a", "b"], tmp_path / "p.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean", "median"]
    means, medians = (list(c.get_offsets()[:, 1]) for c in ax.collections[-2:])
    assert means == pytest.approx([0.3, 0.3]) and medians == pytest.approx([0.3, 0.0])
    assert "leaderboard order" in ax.get_title()


def test_a_cold_start_report_leaves_the_popularity_plot_out_and_says_why(tmp_path):
    cfg = parse_config({"data": {"source": "synthetic", "item_features": "auto"},
                        "split": {"method": "cold_start_items", "test_size": 0.2},
                        "models": ["content"], "metrics": ["ndcg@10", "coverage@10"],
                        "n_bootstrap": 20, "save_models": False}, "exp.yaml")
    run_experiment(cfg, tmp_path / "r")
    out = tmp_path / "r"
    assert not (out / "popularity.png").exists() and not (out / "coverage.png").exists()
    text = (out / "report.md").read_text()
    assert "No popularity plot: this cold-start run" in text
    assert "(per_user.png)" in text and "(metrics.png)" in text
