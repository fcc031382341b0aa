"""`task: next_item` experiments: the config's keys and refusals, `recforge run` giving the
figures of `evaluate_next_item` / `evaluate_sessions` called by hand on the same split,
the report's plots (metric by history length, learning curves), and `recforge tune` on
the validation targets."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import event_frame

from recforge import ConfigError
from recforge.data.interactions import Interactions
from recforge.data.split import last_sessions_split, leave_last_out, temporal_split
from recforge.evaluation import evaluate_next_item, evaluate_sessions
from recforge.experiment.config import load_config, parse_config
from recforge.experiment.runner import run_experiment
from recforge.experiment.tune import tune
from recforge.models.registry import create_model

BASE = {"name": "ni", "task": "next_item", "data": {"source": "synthetic"},
        "split": {"method": "leave_last_out"}, "models": ["pop"]}


def _cfg(**over):
    raw = json.loads(json.dumps(BASE))
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return parse_config(raw, "exp.yaml")


def test_next_item_defaults():
    cfg = _cfg()
    assert cfg.task == "next_item"
    assert cfg.metrics == ["ndcg@10", "hr@10", "mrr@10"]
    assert cfg.next_item.exclude_seen is False and cfg.next_item.sampled is None
    # the round trip through the config.yaml a run writes; a top-K config has no section
    assert parse_config(cfg.to_dict(), "config.yaml").to_dict() == cfg.to_dict()
    topk = parse_config({"data": {"source": "synthetic"}, "models": ["pop"]}, "t.yaml")
    assert "next_item" not in topk.to_dict()
    assert parse_config(topk.to_dict(), "t.yaml").task == "topk"


@pytest.mark.parametrize("over,match", [
    ({"metrics": ["rmse"]}, r"metrics\[0\]: rmse is a rating metric; task: next_item"),
    ({"metrics": ["ndcg@10", "recall@10"]}, r"metrics\[1\]: recall@10 is not a next-item"),
    ({"metrics": ["coverage@10"]}, r"metrics\[0\]: coverage@10 is not a next-item"),
    ({"split": {"method": "random"}}, r"split.method: 'random' does not hold out each "
                                      r"user's next events, which task: next_item"),
    ({"split": {"method": "cold_start_items"}}, r"split.method: 'cold_start_items'"),
    ({"split": {"method": "leave_one_out", "strategy": "random"}},
     r"split.method: 'leave_one_out' with strategy 'random'"),
    ({"protocol": "sampled"}, r"protocol: task: next_item takes the sampled protocol as "
                              r"next_item.sampled"),
    ({"next_item": {"sampled": 0}}, r"next_item.sampled: expected an integer"),
    ({"next_item": {"exclude_seen": "yes"}}, r"next_item.exclude_seen: expected true"),
    ({"next_item": {"by_length": [1, 5, 5]}}, r"next_item.by_length: expected increasing"),
    ({"next_item": {"by_length": []}}, r"next_item.by_length: expected a list"),
    ({"next_item": {"exclude": True}}, r"next_item.exclude: unknown key \(did you mean "
                                       r"'exclude_seen'\?\)"),
    ({"split": {"method": "leave_last_out", "gap": 60}}, r"split.gap: only used with "
                                                         r"split.method last_sessions"),
    ({"split": {"method": "last_sessions", "gap": -1}}, r"split.gap: expected a finite number"),
    ({"split": {"method": "last_sessions", "targets": "all"}}, r"split.targets: "
                                                               r"last_sessions predicts"),
    ({"task": "sequential"}, r"task: expected one of topk, next_item"),
])
def test_next_item_config_errors_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match) as err:
        _cfg(**over)
    assert str(err.value).startswith("exp.yaml: ")


@pytest.mark.parametrize("raw,match", [
    ({"next_item": {"exclude_seen": True}}, r"next_item: only used with task: next_item"),
    ({"split": {"method": "last_sessions"}}, r"split.method: last_sessions holds out whole "
                                             r"sessions"),
    ({"split": {"method": "temporal", "targets": "all"}}, r"split.targets: only used with "
                                                          r"task: next_item"),
])
def test_next_item_keys_in_a_top_k_config_are_refused(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"data": {"source": "synthetic"}, "models": ["pop"], **raw}, "exp.yaml")


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """120 users x 40 items with timestamps; item order has a pattern (each user walks
    forward through the catalogue from a random start), so order-reading models have
    something to learn; sessions of 5 events, an hour apart."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 121):
        start = int(rng.integers(0, 40))
        n = int(rng.integers(8, 20))
        for j in range(n):
            rows.append((u, (start + j) % 40 + 1, 1_000_000 + u * 10 + j * 100
                         + (j // 5) * 4000))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    path = tmp_path_factory.mktemp("ni") / "events.csv"
    frame.to_csv(path, index=False)
    return path


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _by_hand(path, split_fn, names, **opts):
    data = Interactions.from_csv(path)
    split = split_fn(data)
    out = {}
    for name, params in names:
        model = create_model(name, **params).fit(split.train, split.valid)
        if split_fn is _sessions:
            res = evaluate_sessions(model, split.test, metrics=["ndcg@5", "hr@5", "mrr@5"],
                                    gap=1800, **opts)
        else:
            res = evaluate_next_item(model, split.history, split.test,
                                     metrics=["ndcg@5", "hr@5", "mrr@5"], **opts)
        out[name] = res
    return out


def _sessions(data):
    return last_sessions_split(data, 0.2, gap=1800)


@pytest.mark.parametrize("split_yaml,split_fn,opts_yaml,opts", [
    ("{method: leave_last_out, valid_size: 0.1}", lambda d: leave_last_out(d, valid=True),
     "{exclude_seen: true}", {"exclude_seen": True}),
    ("{method: temporal, test_size: 0.3, targets: all}",
     lambda d: temporal_split(d, 0.3, next_item=True, targets="all"),
     "{sampled: 20}", {"sampled": 20, "seed": 0}),
    ("{method: last_sessions, test_size: 0.2, gap: 1800}", _sessions, "{}", {}),
])
def test_run_gives_the_figures_of_the_python_api(tmp_path, events, split_yaml, split_fn,
                                                  opts_yaml, opts):
    """pop, sknn and ease (order-blind) on one call: each leaderboard figure is the one
    evaluate_next_item / evaluate_sessions gives on the same split by hand."""
    path = _write(tmp_path, f"""
        name: ni
        task: next_item
        data: {{source: {events}}}
        split: {split_yaml}
        next_item: {opts_yaml}
        models: [pop, sknn, {{name: ease, params: {{reg: 10}}}}]
        metrics: [ndcg@5, hr@5, mrr@5]
        n_bootstrap: 20
        save_models: false
    """)
    result = run_experiment(load_config(path), tmp_path / "out")
    expected = _by_hand(events, split_fn, [("pop", {}), ("sknn", {}), ("ease", {"reg": 10})],
                        **opts)
    suffix = f" (sampled 1+{opts['sampled']})" if "sampled" in opts else ""
    for row in result.rows:
        for m in ("NDCG@5", "HitRate@5", "MRR@5"):
            assert row[m + suffix] == pytest.approx(expected[row["model"]][m + suffix],
                                                    abs=1e-9), (row["model"], m)
            # the interval is that of the mean over targets (users with several
            # targets weigh as many), so it holds the figure
            lo, hi = row[f"{m}{suffix} ci"]
            assert lo <= row[m + suffix] <= hi
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["evaluation"]["task"] == "next_item"
    run = payload["runs"][0]
    table = pd.DataFrame(run["by_length"])
    hand = expected[run["label"]].by_length
    assert list(table["length"]) == list(hand["length"])
    assert list(table["n_targets"]) == list(hand["n_targets"])
    assert (tmp_path / "out" / "by_length.png").stat().st_size > 0
    assert "popularity" not in run  # a top-K plot
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Next-item evaluation" in report and "by history length" in report
    if opts.get("exclude_seen"):
        assert "history excluded" in report
    if "sampled" in opts:
        assert "sampled 1+20" in report


def test_sequence_model_learning_curves_and_order(tmp_path, events):
    """A tiny sasrec with a validation event: per-epoch history in results.json, the
    learning-curve plot drawn, and the report ranks it with the order-blind models."""
    path = _write(tmp_path, f"""
        name: ni
        task: next_item
        data: {{source: {events}}}
        split: {{method: leave_last_out, valid_size: 0.1}}
        models: [pop, {{name: sasrec, params: {{epochs: 2, max_len: 10, embedding_dim: 8,
                 n_blocks: 1, n_negatives: 8, batch_size: 64}}}}]
        metrics: [ndcg@5]
        n_bootstrap: 20
    """)
    run_experiment(load_config(path), tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    sas = next(r for r in payload["runs"] if r["label"] == "sasrec")
    assert [h["epoch"] for h in sas["history"]] == [1, 2]
    key = sas["params"]["valid_metric"]  # its own per-epoch validation metric
    assert all(np.isfinite(h[key]) for h in sas["history"])
    assert (tmp_path / "out" / "learning_curves.png").exists()
    assert (tmp_path / "out" / "models" / "sasrec" / "meta.json").exists()


def test_tune_scores_trials_on_the_validation_targets(tmp_path, events):
    path = _write(tmp_path, f"""
        name: ni
        task: next_item
        data: {{source: {events}}}
        split: {{method: leave_last_out, valid_size: 0.1}}
        models: [sknn]
        metrics: [ndcg@5]
    """)
    cfg = load_config(path)
    summary = tune(cfg, "sknn", n_trials=2, out=tmp_path / "t", space={
        "neighbors": ("int", 5, 50)}, config_path=path)
    assert summary["validation"].startswith("the experiment's validation targets")
    # the best trial's figure is evaluate_next_item's on the validation targets by hand
    data = Interactions.from_csv(events)
    split = leave_last_out(data, valid=True)
    model = create_model("sknn", **summary["params"]).fit(split.train)
    res = evaluate_next_item(model, split.train, split.valid, metrics=["ndcg@5"])
    assert summary["value"] == pytest.approx(res["NDCG@5"], abs=1e-9)
    tuned = load_config(tmp_path / "t" / "exp.tuned.yaml")
    assert tuned.task == "next_item" and tuned.models[0].params == summary["params"]
    with pytest.raises(ConfigError, match="--metric rmse: a next_item experiment"):
        tune(cfg, "sknn", n_trials=1, out=tmp_path / "t2", metric="rmse")
    # without a validation part: the split is made again inside the training part
    cfg.split.valid_size = 0.0
    summary = tune(cfg, "sknn", n_trials=1, out=tmp_path / "t3",
                   space={"neighbors": ("int", 5, 50)})
    assert "inside the training part" in summary["validation"]


def test_a_rating_model_in_a_next_item_experiment(tmp_path):
    """Any model, rating models included, on the same call."""
    frame = event_frame(3000, n_users=100, n_items=80)
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    cfg = parse_config({"task": "next_item", "data": {"source": str(path)},
                        "split": {"method": "leave_last_out"},
                        "models": ["pop", {"name": "baseline", "params": {"epochs": 2}}],
                        "metrics": ["hr@10"], "n_bootstrap": 20, "save_models": False,
                        "report": False}, "exp.yaml")
    result = run_experiment(cfg, tmp_path / "out")
    assert {r["model"] for r in result.rows} == {"pop", "baseline"}
    assert all(0 <= r["HitRate@10"] <= 1 for r in result.rows)
