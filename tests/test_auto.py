"""``recforge train MODEL --auto`` and ``auto: true`` in an experiment
(:mod:`recforge.experiment.auto`): the defaults are trial 0, the choice is never worse
than them on the validation split, the budget bounds the search, and the saved model
records what was chosen."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from recforge.data.synthetic import make_synthetic
from recforge.errors import ConfigError
from recforge.experiment.auto import (
    AUTO_SPACES,
    auto_metric,
    auto_space,
    auto_tune,
    validation_split,
)
from recforge.experiment.config import ModelConfig, load_config, parse_budget
from recforge.experiment.workflow import evaluate_split, fit_model
from recforge.models.registry import available_models, create_model


@pytest.fixture(scope="module")
def data():
    """Clustered users and items with power-law popularity (a model beats popularity)."""
    return make_synthetic(n_users=200, n_items=150, mean_per_user=20, seed=3).interactions


@pytest.fixture(scope="module")
def rated():
    """The same shape with ratings 1-5 (rating models)."""
    import numpy as np

    from recforge.data.interactions import Interactions

    frame = make_synthetic(n_users=150, n_items=100, mean_per_user=15, seed=4).interactions.to_frame()
    frame["rating"] = np.random.default_rng(0).integers(1, 6, len(frame)).astype(float)
    return Interactions.from_frame(frame)


def _tune(name, data, params=None, **kw):
    model = create_model(name, **(params or {}))
    inner, where = validation_split(model, data)
    kw.setdefault("budget", 120.0)
    return inner, auto_tune(ModelConfig(name=name, params=params or {}), inner, where=where,
                            **kw)


def test_defaults_are_trial_0_and_the_choice_is_never_worse(data):
    inner, res = _tune("itemknn", data, max_trials=6)
    assert res.trials == 6 and res.complete == 6
    assert res.defaults == {"neighbors": 20, "shrink": 0.0}
    # trial 0's figure is the defaults' own, fitted and scored again here
    model = fit_model(create_model("itemknn"), "check", inner.train_pos)
    again = evaluate_split(model, inner, ["ndcg@20"]).summary["NDCG@20"]
    assert res.default_value == pytest.approx(again)
    assert res.chosen_value >= res.default_value and res.gain >= 0
    assert res.metric == "NDCG@20"
    # the best trial replaces the defaults only beyond the validation split's noise
    best = res.best
    if best is not None:
        assert best["value"] >= res.default_value and best["users"] > 100
        assert best["level"] == pytest.approx(0.05 / (res.complete - 1))
        if best["p_value"] < best["level"]:
            assert res.chosen == {**res.defaults, **best["params"]}
        else:
            assert res.chosen == res.defaults and res.chosen_value == res.default_value
            assert "within the noise" in res.notes[-1]
    assert res.params == res.chosen  # nothing fixed: the chosen values are all there is
    record = res.record()
    assert record["defaults"] == res.defaults and record["budget_s"] == 120.0
    assert json.loads(json.dumps(record)) == record  # plain JSON for meta.json


def test_fixed_parameters_stay_fixed_and_ranges_follow_the_start(data):
    space = auto_space("ease", {"binary": True})
    assert space == {"reg": ("log", 25.0, 10000.0)}  # around the default 500
    assert auto_space("itemknn", {"neighbors": 40}) == {"shrink": ("float", 0.0, 100.0)}
    # relative ranges follow a starting value the user gave
    assert auto_space("als", {"reg": 1.0, "embedding_dim": 64}) == {"alpha": ("log", 1.0, 50.0)}
    assert auto_space("bpr", {"learning_rate": 0.01})["reg"] == ("log", 1e-4, 0.1)
    # bpr's training length: the floor on the steps while epochs is None (the default),
    # the epochs once they are a number
    assert auto_space("bpr")["min_steps"] == ("logint", 2000, 8000)
    assert "epochs" not in auto_space("bpr")
    assert auto_space("bpr", {"epochs": 20})["learning_rate"] and "min_steps" not in auto_space(
        "bpr", {"epochs": 20})
    assert auto_space("bpr", {"min_steps": 100, "epochs": None}).get("epochs") is None
    _, res = _tune("itemknn", data, {"neighbors": 10}, max_trials=3)
    assert set(res.chosen) == {"shrink"} and res.params["neighbors"] == 10


def test_every_declared_space_is_valid_and_holds_the_defaults():
    for name in AUTO_SPACES:
        space = auto_space(name)
        start = create_model(name).get_params()
        for key, spec in space.items():
            if spec[0] == "cat":
                assert start[key] in spec[1], (name, key)
            else:
                assert spec[1] <= start[key] <= spec[2], (name, key)
    assert {"blend", "pop"} <= set(available_models()) - set(AUTO_SPACES)
    for name in ("blend", "pop"):
        with pytest.raises(ConfigError, match=f"{name} has no hyperparameters for --auto"):
            auto_space(name)
    with pytest.raises(ConfigError, match="fix every hyperparameter"):
        auto_space("ease", {"reg": 100.0})


def test_the_validation_split_follows_the_model(data, rated):
    # top-K: a per-user 20 % of the training events, seeded, nothing outside them
    inner, where = validation_split(create_model("ease"), data, seed=1)
    assert len(inner.train) + len(inner.test) == len(data) and "20%" in where
    again, _ = validation_split(create_model("ease"), data, seed=1)
    assert (again.test.user == inner.test.user).all() and (again.test.item == inner.test.item).all()
    # reads the order: each user's last event, predicted from the events before it
    seq = create_model("sknn")
    inner, where = validation_split(seq, data)
    assert inner.task == "next_item" and "last" in where
    assert len(inner.test) == data.n_users and auto_metric(seq) == "ndcg@10"
    last = data.to_frame().groupby("user")["timestamp"].max()
    held = inner.test.to_frame().set_index("user")["timestamp"]
    assert (held == last.loc[held.index]).all()
    # rating models: scored by RMSE on held-out ratings
    assert auto_metric(create_model("baseline")) == "rmse"
    assert auto_metric(create_model("als")) == "ndcg@20"


def test_a_rating_model_is_tuned_on_rmse(rated):
    _, res = _tune("baseline", rated, max_trials=5)
    assert res.metric == "RMSE" and res.lower_is_better
    assert res.chosen_value <= res.default_value and res.gain >= 0


def test_a_sequence_reading_model_is_tuned_on_the_next_event(data):
    _, res = _tune("sknn", data, max_trials=3)
    assert res.metric == "NDCG@10" and res.chosen_value >= res.default_value


def test_a_budget_too_small_for_the_defaults_is_said(data):
    # a gradient model: its trial stops at the end of the first epoch past the budget
    params = {"embedding_dim": 8, "epochs": 3, "batch_size": 512}
    _, res = _tune("bpr", data, params, budget=1e-6)
    assert res.default_value is None and res.chosen == res.defaults
    assert res.trials == 1 and "too small for even the defaults" in res.notes[0]
    assert "the defaults are kept" in res.notes[1]
    # a closed-form model's trial runs to its end: the defaults only, said as such
    _, res = _tune("ease", data, budget=1e-6)
    assert res.trials == 1 and res.default_value is not None
    assert res.chosen == res.defaults and "no other configuration was tried" in res.notes[0]
    with pytest.raises(ConfigError, match="budget"):
        _tune("ease", data, budget=0)


def test_gradient_trials_report_epochs_and_the_budget_bounds_the_count(data):
    params = {"embedding_dim": 8, "epochs": 2, "batch_size": 512}
    _, res = _tune("bpr", data, params, max_trials=3)
    assert res.trials == 3 and set(res.chosen) == {"learning_rate", "reg"}
    assert res.chosen_value >= res.default_value


@pytest.mark.parametrize("text, seconds", [("60s", 60.0), ("5m", 300.0), ("90", 90.0),
                                           (" 1.5h ", 5400.0), (".5", 0.5), (45, 45.0)])
def test_budget_parses(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text, match", [("abc", "number of seconds or a number with a unit"),
                                         ("60x", "unit s, m or h"), ("-5", "unit"),
                                         ("0s", "more than 0"), ("1e3", "unit"),
                                         (True, "unit"), (None, "unit"),
                                         (float("inf"), "more than 0"), ("200h", "a week")])
def test_a_bad_budget_is_a_clear_error(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_budget(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), st.floats(), st.integers(-10**12, 10**12)))
def test_budget_fuzz(value):
    """Any text or number: a budget in (0, a week] or a ConfigError, nothing else."""
    try:
        seconds = parse_budget(value)
    except ConfigError:
        return
    assert 0 < seconds <= 7 * 24 * 3600


def test_cli_auto_end_to_end(tmp_path, data, capsys):
    path = tmp_path / "events.csv"
    data.to_frame().to_csv(path, index=False)
    out = tmp_path / "model"
    code, stdout, stderr = run_cli(["train", "itemknn", "--data", path, "--out", out,
                                    "--auto", "--budget", "1s"], capsys)
    assert code == 0, stderr
    assert "validation NDCG@20" in stdout and "neighbors" in stdout and "gain" in stdout
    meta = json.loads((out / "meta.json").read_text())
    auto = meta["training_data"]["auto"]
    assert auto["budget_s"] == 1.0 and set(auto["defaults"]) == {"neighbors", "shrink"}
    assert auto["chosen_value"] >= auto["default_value"] and auto["trials"] >= 1
    # the saved model was refitted on all the data with the chosen parameters
    assert meta["params"]["neighbors"] == auto["chosen"]["neighbors"]
    assert meta["n_users"] == data.n_users
    # the model loads and `recforge evaluate` reads it as before
    from recforge.models.base import Recommender

    assert Recommender.load(out).training_data_["auto"] == auto


@pytest.mark.parametrize("args, match", [
    (["--auto", "--budget", "soon"], "--budget: a time budget is a number of seconds"),
    (["--budget", "60s"], "--budget is the time budget of --auto"),
    (["--auto", "--nproc", "2"], "--auto tunes in this process"),
    (["--auto", "--resume"], "--auto cannot --resume"),
])
def test_cli_auto_options_are_checked_first(tmp_path, capsys, args, match):
    code, stdout, stderr = run_cli(["train", "ease", "--data", tmp_path / "missing.csv",
                                    "--out", tmp_path / "m", *args], capsys)
    assert code != 0 and match in stdout + stderr


def test_a_bad_budget_is_answered_before_torch_is_imported(tmp_path):
    from test_cli_help import _recforge

    got = _recforge("train", "ease", "--data", str(tmp_path / "x.csv"), "--out",
                    str(tmp_path / "m"), "--auto", "--budget", "1 week", importtime=True)
    assert got.returncode == 2
    imported = [line.rsplit("|", 1)[1].strip() for line in got.stderr.splitlines()
                if line.startswith("import time:")]
    assert "recforge.cli.train" in imported
    assert not [m for m in imported if m.split(".")[0] == "torch"]
    assert "--budget: a time budget is a number of seconds" in got.stderr


def test_cli_auto_on_a_model_with_nothing_to_tune(tmp_path, capsys, data):
    path = tmp_path / "events.csv"
    data.to_frame().to_csv(path, index=False)
    code, stdout, stderr = run_cli(["train", "pop", "--data", path, "--out", tmp_path / "m",
                                    "--auto"], capsys)
    assert code != 0 and "pop has no hyperparameters for --auto" in stdout + stderr
    assert not (tmp_path / "m").exists()


def _experiment(tmp_path, data, models: str):
    path = tmp_path / "events.csv"
    data.to_frame().to_csv(path, index=False)
    exp = tmp_path / "exp.yaml"
    exp.write_text(textwrap.dedent(f"""
        name: auto
        data: {{source: {path}}}
        split: {{method: random, test_size: 0.2, seed: 0}}
        models: {models}
        metrics: [ndcg@10]
        n_bootstrap: 10
        report: false
    """))
    return exp


def test_yaml_auto_tunes_each_model_before_it_runs(tmp_path, data):
    from rich.console import Console

    from recforge.experiment.runner import run_experiment

    exp = _experiment(tmp_path, data, "[ease, {name: itemknn, auto: true, auto_budget: 1s}]")
    cfg = load_config(exp)
    assert cfg.models[1].auto and cfg.models[1].auto_budget == "1s"
    res = run_experiment(cfg, tmp_path / "run", console=Console(quiet=True))
    runs = {r["label"]: r for r in res.runs}
    assert "auto" not in runs["ease"]
    auto = runs["itemknn"]["auto"]
    assert auto["metric"] == "NDCG@10" and auto["budget_s"] == 1.0
    assert "test set is not used" in auto["validation"]
    assert runs["itemknn"]["params"]["neighbors"] == auto["chosen"]["neighbors"]
    meta = json.loads((tmp_path / "run" / "models" / "itemknn" / "meta.json").read_text())
    assert meta["training_data"]["auto"]["chosen"] == auto["chosen"]


@pytest.mark.parametrize("models, match", [
    ("[{name: ease, auto: yes please}]", "models[0].auto: expected true or false"),
    ("[{name: ease, auto_budget: 60s}]", "models[0].auto_budget: applies with auto: true"),
    ("[{name: ease, auto: true, auto_budget: 5 minutes}]",
     "models[0].auto_budget: a time budget is a number"),
    ("[{name: ease, auto: true, auto_buget: 5m}]", "did you mean 'auto_budget'"),
])
def test_yaml_auto_errors_name_the_field(tmp_path, data, models, match):
    with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace("]", r"\]")):
        load_config(_experiment(tmp_path, data, models))


def test_yaml_auto_on_a_model_with_nothing_to_tune_fails_before_training(tmp_path, data):
    from rich.console import Console

    from recforge.experiment.runner import run_experiment

    cfg = load_config(_experiment(tmp_path, data, "[{name: pop, auto: true}]"))
    with pytest.raises(ConfigError, match=r"models\[0\] \(pop\).auto: .*pop has no"):
        run_experiment(cfg, tmp_path / "run", console=Console(quiet=True))
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_quickstart_mentions_auto(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rich.console import Console

    from recforge.experiment import quickstart

    for best, shown in (("itemknn", "itemknn"), ("pop", "als")):  # pop: nothing to tune
        monkeypatch.setattr(quickstart, "run_experiment", lambda cfg, out, console, b=best:
                            SimpleNamespace(rows=[{"model": b}], primary="NDCG@10"))
        console = Console(record=True, width=200)
        quickstart.run_quickstart(out=tmp_path / "q", models=[best], download=False,
                                  data_dir=tmp_path / "no-data", console=console)
        text = console.export_text()
        assert (f"recforge train {shown} --data YOUR_EVENTS.csv --out model --auto "
                "--budget 60s") in text


def test_tune_writes_the_tuned_model_without_auto(tmp_path, data):
    from rich.console import Console

    from recforge.experiment.tune import tune

    exp = _experiment(tmp_path, data, "[{name: ease, auto: true, auto_budget: 5m}]")
    tune(load_config(exp), "ease", n_trials=2, out=tmp_path / "t", config_path=exp,
         console=Console(quiet=True))
    tuned = load_config(tmp_path / "t" / "exp.tuned.yaml")
    assert not tuned.models[0].auto and tuned.models[0].auto_budget is None
    assert set(tuned.models[0].params) == {"reg"}


def test_a_clear_gain_replaces_the_defaults(data, monkeypatch):
    """Two epochs at bpr's learning rate barely move it; ten times the rate does far
    better on every validation user, beyond the split's noise."""
    monkeypatch.setitem(AUTO_SPACES, "bpr", {"learning_rate": ("cat", [0.05])})
    params = {"embedding_dim": 8, "epochs": 2, "batch_size": 512}
    _, res = _tune("bpr", data, params, max_trials=3)
    assert res.chosen == {"learning_rate": 0.05} and res.best["p_value"] < res.best["level"]
    assert res.chosen_value > 1.5 * res.default_value and res.gain > 0.5
