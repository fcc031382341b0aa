"""The experiment config and hyperparameters, as an attacker or a careless user writes them.

Every YAML document read by ``recforge run`` / ``recforge tune`` (arbitrary text, valid
configs with one value mutated, YAML alias bombs, deep nesting, repeated keys) ends in a
:class:`ConfigError` that names the file and the key, or in a config that runs; every
hyperparameter of every registered model, whatever its value, is refused with a
:class:`ConfigError` naming it by the validation the CLI and configs use, or is one a model
trains with. Fits and anything that allocates by a user's number run in a child process
with a memory limit: a crash there is a signal, and fails the test instead of the suite.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recforge import ConfigError
from recforge.experiment.config import ExperimentConfig, load_config, parse_config
from recforge.models.registry import available_models, create_model, get_model_class

REPO = Path(__file__).resolve().parents[1]
MAX_DEPTH, MAX_VALUES = 32, 100_000  # recforge.experiment.config's bounds
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------
# values a careless user or an attacker writes
NASTY_SCALARS = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 10**12, 10**400,
    0.5, -0.5, 1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324, "", " ", "x", "..",
    "../../etc/passwd", "/etc/passwd", "/dev/stdout", "-", "a\x00b", "\n", "é" * 300,
    "ndcg@" + "9" * 5000, "x" * 10_000, b"bytes",
]
#: 5,000-digit integers (built, not listed: Hypothesis prints what it samples from)
huge = st.sampled_from([1, -1]).map(lambda sign: sign * 10**5000)
plain = (st.sampled_from(NASTY_SCALARS) | st.integers() | st.floats()
         | st.text(max_size=20))


def _nested(leaves: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8) | st.integers(), inner,
                                          max_size=4), max_leaves=12)


values = _nested(plain | huge)
#: what yaml.safe_dump can write (a 5,000-digit integer is written by hand below)
yaml_values = _nested(plain.filter(lambda v: not isinstance(v, bytes)))

VALID = {
    "name": "fuzz",
    "data": {"source": "synthetic", "min_rating": 4, "k_core": 2},
    "split": {"method": "random", "test_size": 0.2, "valid_size": 0.1, "seed": 1},
    "models": ["pop", {"name": "ease", "params": {"reg": 100.0}, "label": "ease-100"},
              {"name": "bpr", "params": {"epochs": 2, "embedding_dim": 8}}],
    "metrics": ["ndcg@10", "recall@20"],
    "seeds": [0, 1],
    "protocol": "full",
    "n_bootstrap": 100,
    "save_models": True,
    "report": False,
}


def _paths(raw: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of ``raw`` (mapping keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(raw, dict):
        for k, v in raw.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(VALID)


def _set(raw: Any, path: tuple, value: Any) -> Any:
    raw = json.loads(json.dumps(raw))
    node = raw
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, list) or not isinstance(path[-1], str) or path[-1] in node:
        node[path[-1]] = value
    return raw


def _shown_path(path: tuple) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _check_valid(cfg: ExperimentConfig) -> None:
    """What a config that parses promises: it survives the round trip through the
    ``config.yaml`` a run writes, and its values are in range."""
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())), "config.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert 0 <= cfg.split.test_size < 1 and 0 <= cfg.split.valid_size < 1
    assert all(0 <= s < 2**63 for s in cfg.seeds) and len(set(cfg.seeds)) == len(cfg.seeds)
    assert 10 <= cfg.n_bootstrap <= 100_000
    assert cfg.data.min_rating is None or math.isfinite(cfg.data.min_rating)


def test_the_valid_config_is_valid():
    _check_valid(parse_config(VALID, "exp.yaml"))


@FUZZ
@given(path=st.sampled_from(PATHS), value=values)
def test_a_mutated_config_is_refused_naming_the_key_or_runs(path, value):
    raw = _set(VALID, path, value)
    try:
        cfg = parse_config(raw, "exp.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("exp.yaml: ")
        # the key, or the section holding it, is named ("models[2] (bpr): ..." for a
        # hyperparameter, which names the parameter itself)
        assert f"{path[0]}" in message, (message, _shown_path(path))
        assert len(message) < 2000  # values are shown cut short, whatever their size
        return
    _check_valid(cfg)


#: a next-item experiment, with every key of its own (task, split.targets / gap,
#: next_item.*) set
VALID_NEXT_ITEM = {
    "name": "fuzz-next", "task": "next_item",
    "data": {"source": "synthetic", "min_rating": 4, "threshold_order": "before_split"},
    "split": {"method": "temporal", "test_size": 0.2, "valid_size": 0.1, "targets": "all"},
    "next_item": {"exclude_seen": True, "sampled": 100, "by_length": [1, 5, 20]},
    "models": ["pop", {"name": "sknn", "params": {"neighbors": 20}},
              {"name": "sasrec", "params": {"epochs": 1, "max_len": 20}}],
    "metrics": ["ndcg@10", "hr@10", "mrr@20"], "seeds": [0], "protocol": "full",
    "n_bootstrap": 100, "report": False,
}
SESSIONS = {**VALID_NEXT_ITEM, "split": {"method": "last_sessions", "test_size": 0.1,
                                          "gap": 1800.0}}
NEXT_PATHS = [(raw, p) for raw in (VALID_NEXT_ITEM, SESSIONS) for p in _paths(raw)]


def test_the_valid_next_item_configs_are_valid():
    for raw in (VALID_NEXT_ITEM, SESSIONS):
        _check_valid(parse_config(raw, "exp.yaml"))


@FUZZ
@given(case=st.sampled_from(NEXT_PATHS), value=values)
def test_a_mutated_next_item_config_is_refused_naming_the_key_or_runs(case, value):
    raw, path = case
    try:
        cfg = parse_config(_set(raw, path, value), "exp.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("exp.yaml: ")
        assert f"{path[0]}" in message, (message, _shown_path(path))
        assert len(message) < 2000
        return
    _check_valid(cfg)
    if cfg.task == "next_item":
        assert all(m.split("@")[0] in ("ndcg", "hr", "hit_rate", "hitrate", "mrr")
                   for m in (x.lower() for x in cfg.metrics))


@FUZZ
@given(key=st.text(max_size=12) | st.integers() | st.sampled_from([None, True, 1.5]),
       value=values)
def test_an_unknown_next_item_key_is_refused_by_name(key, value):
    raw = json.loads(json.dumps(VALID_NEXT_ITEM))
    if key in raw["next_item"]:
        return
    raw["next_item"][key] = value
    with pytest.raises(ConfigError, match="next_item"):
        parse_config(raw, "exp.yaml")


@FUZZ
@given(section=st.sampled_from(["", "data", "split", "models[0]", "models[1].params"]),
       key=st.text(max_size=12) | st.integers() | huge | st.sampled_from([None, True, 1.5]),
       value=values)
def test_an_unknown_or_odd_key_is_refused_by_name(section, key, value):
    raw = json.loads(json.dumps(VALID))
    target = {"": raw, "data": raw["data"], "split": raw["split"],
              "models[0]": {"name": "ease"}, "models[1].params": raw["models"][1]["params"]}
    node = target[section]
    if section == "models[0]":
        raw["models"][0] = node
    if key in node or key in ("name", "params", "label", "data", "split", "models"):
        return
    node[key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "exp.yaml")
    assert section.split(".")[0].split("[")[0] in str(err.value)


@FUZZ
@given(data=st.data())
def test_any_yaml_document_is_a_config_or_a_config_error(tmp_path, data):
    doc = data.draw(st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        yaml_values.map(lambda v: yaml.safe_dump({"data": {"source": "synthetic"},
                                                  "models": v})),
        yaml_values.map(yaml.safe_dump),
    ), label="doc")
    path = tmp_path / "exp.yaml"
    path.write_bytes(doc.encode("utf-8", "surrogateescape"))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
        return
    _check_valid(cfg)


def _bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" written inline: each level's list holds its first element's
    anchor and ``width - 1`` aliases of it, so 9 levels of 10 are 10**9 values once
    expanded, in 400 bytes."""
    text = "&a0 [" + ", ".join(["ndcg@10"] * width) + "]"
    for i in range(1, levels + 1):
        text = f"&a{i} [{text}, " + ", ".join([f"*a{i - 1}"] * (width - 1)) + "]"
    return text


BOMB_PLACES = [
    "metrics: BOMB", "seeds: BOMB", "name: BOMB", "models: [pop]\nlabels: BOMB",
    "models: [{name: als, params: {embedding_dim: BOMB}}]",
    "models: [{name: blend, params: {models: {ease: {binary: BOMB}}}}]",
    "models: [{name: content, params: {feature_weights: {x: BOMB}}}]",
]


def test_yaml_alias_bombs_are_refused_before_they_expand(tmp_path):
    """Refused on the YAML node graph, before any object is built, wherever the bomb is
    (one child process with 2 GB of memory reads them all: on base an error message
    printed the expanded value, or a check walked it, and the child ran out of memory)."""
    paths = []
    for i, where in enumerate(BOMB_PLACES):
        path = tmp_path / f"exp{i}.yaml"
        path.write_text("data: {source: synthetic}\n" + ("" if "models" in where else
                                                         "models: [pop]\n")
                        + where.replace("BOMB", _bomb()) + "\n")
        paths.append(str(path))
    result = _child(f"""
        from recforge.experiment.config import load_config
        from recforge import ConfigError
        for path in {paths!r}:
            print("CASE", path, flush=True)
            try:
                load_config(path)
            except ConfigError as exc:
                print("ConfigError", str(exc)[-300:], flush=True)
    """, memory_gb=2, timeout=300)
    assert result.returncode == 0, (result.stdout[-500:], result.stderr[-2000:])
    refused = [line for line in result.stdout.splitlines() if line.startswith("ConfigError")]
    assert len(refused) == len(BOMB_PLACES), result.stdout
    assert all("holds more than 100,000 values once its aliases are expanded" in line
               for line in refused), refused


@pytest.mark.parametrize("text,match", [
    ("[" * 5000 + "]" * 5000, f"nested more than {MAX_DEPTH} levels deep"),
    ("{a: " * 3000 + "1" + "}" * 3000, f"nested more than {MAX_DEPTH} levels deep"),
    ("data: {source: synthetic}\nmodels: [pop]\nmodels: [ease]\n",
     "line 3 not valid YAML: found the key 'models' twice"),
    ("data: {source: synthetic, source: ml-100k}\nmodels: [pop]\n", "key 'source' twice"),
    ("data: {source: synthetic}\nmodels: &m [pop, *m]\n", "an alias names a value that "
                                                          "contains it"),
    ("data: {source: synthetic}\nmodels: [pop]\nseeds: [" + "1, " * (MAX_VALUES + 1) + "]\n",
     "holds more than"),
    ("data: {source: synthetic}\nmodels: [pop]\n? [a, b]\n: 1\n", "unhashable key"),
    ("data: {source: synthetic}\nmodels: [{name: pop, label: '.'}]\n",
     r"models\[0\].label: expected a plain name"),
    ("data: {source: synthetic}\nmodels: [{name: pop, label: \"a\\0b\"}]\n",
     r"models\[0\].label: expected a plain name"),
    ("data: {source: synthetic}\nmodels: [{name: pop, label: " + "a" * 256 + "}]\n",
     r"models\[0\].label: expected a plain name"),
    ("name: \"runs\\0x\"\ndata: {source: synthetic}\nmodels: [pop]\n", "name: expected a plain"),
    ("data: {source: \"data\\0.csv\"}\nmodels: [pop]\n", "data.source: expected a file"),
    ("data: {source: synthetic}\nsplit: {seed: -1}\nmodels: [pop]\n", "split.seed: expected an "
                                                                       "integer in 0.."),
    ("data: {source: synthetic}\nsplit: {seed: " + "9" * 5000 + "}\nmodels: [pop]\n",
     "line 2 not valid YAML: an integer of 5,000 characters is beyond any setting"),
    ("data: {source: synthetic, k_core: " + "9" * 5000 + "}\nmodels: [pop]\n",
     "line 1 not valid YAML: an integer of 5,000 characters"),
    ("data: {source: synthetic, min_rating: .nan}\nmodels: [pop]\n",
     "data.min_rating: expected a finite number, got nan"),
    ("data: {source: synthetic, min_rating: " + "9" * 400 + "}\nmodels: [pop]\n",
     "data.min_rating: expected a finite number"),
    ("data: {source: synthetic, duplicates: firts}\nmodels: [pop]\n", "data.duplicates"),
    ("data: {source: synthetic, format: xlsx}\nmodels: [pop]\n", "data.format"),
    ("data: {source: synthetic, columns: 'user=a,user=b'}\nmodels: [pop]\n", "data.columns"),
    ("data: {source: synthetic}\nsplit: {test_size: .inf}\nmodels: [pop]\n",
     r"split.test_size: expected a finite number in \[0, 1\)"),
    ("data: {source: synthetic}\nsplit: {test_size: 0.5, valid_size: 0.5}\nmodels: [pop]\n",
     r"split: test_size \+ valid_size must be < 1"),
    ("data: {source: synthetic}\nsplit: {method: user_temporal, n_test: 0}\nmodels: [pop]\n",
     "split.n_test"),
    ("data: {source: synthetic}\nsplit: {method: leave_one_out, strategy: first}\n"
     "models: [pop]\n", "split.strategy"),
    ("data: {source: synthetic}\nmodels: [pop]\nmetrics: [ndcg@" + "9" * 5000 + "]\n",
     r"metrics\[0\]: metric .*cutoff must be at most 1,000"),
    ("data: {source: synthetic}\nmodels: [pop]\nmetrics: [ndcg@1000000000000]\n",
     r"metrics\[0\]: .*cutoff must be at most"),
    ("data: {source: synthetic}\nmodels: [pop]\nmetrics: [ndcg@10, NDCG@10]\n",
     r"metrics\[1\]: NDCG@10 is also metrics\[0\]"),
    ("data: {source: synthetic}\nmodels: [pop]\nmetrics: [[ndcg@10]]\n", r"metrics\[0\]"),
    ("data: {source: synthetic}\nmodels: [pop]\nseeds: [1, 1]\n", r"seeds\[1\]: seed 1 is given "
                                                                   "twice"),
    ("data: {source: synthetic}\nmodels: [bpr]\nseeds: [" + "9" * 30 + "]\n", r"seeds\[0\]"),
    ("data: {source: synthetic}\nmodels: [pop]\nn_bootstrap: 10000000000000\n", "n_bootstrap"),
    ("data: {source: synthetic}\nmodels: []\n", "models: expected a non-empty list"),
    ("data: {source: synthetic}\nmodels: [pop, pop]\n", "two models are labelled 'pop'"),
    ("data: {source: synthetic}\nmodels: [{name: als, params: {embedding_dim: 1000000000000}}]\n",
     r"models\[0\] \(als\): als: embedding_dim must be an integer in 1..8192"),
    ("data: {source: synthetic}\nmodels: [{name: bpr, params: {n_negatives: 1000000}}]\n",
     r"models\[0\] \(bpr\): bpr: n_negatives must be an integer in 0..1000"),
    ("data: {source: synthetic}\nmodels: [{name: als, params: {seed: " + "9" * 5000 + "}}]\n",
     "line 2 not valid YAML: an integer of 5,000 characters"),
    ("data: {source: synthetic}\nmodels: [{name: als, params: {cg_steps: " + "9" * 400 + "}}]\n",
     r"models\[0\] \(als\): als: cg_steps must be an integer in 1..1000, got "
     r"<an integer of 400 digits>"),
    ("data: {source: synthetic}\nmodels: [{name: als, params: {seed: 3}}]\n",
     r"models\[0\].params.seed: a seeded model runs once per seed of the experiment's "
     r"'seeds' list"),
    ("data: {source: synthetic}\nmodels: [{name: blend, params: {models: {als: {reg: -1}}}}]\n",
     r"models\[0\] \(blend\): blend: models.als: als: reg must be"),
    ("data: {source: synthetic}\nmodels: [{name: ease, params: {" + "9" * 400 + ": 1}}]\n",
     r"models\[0\].params.<an integer of 400 digits>: ease has no parameter"),
])
def test_yaml_that_broke_the_reader_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path)
    assert str(err.value).startswith(str(path))


def test_experiment_files_that_are_not_small_utf8_text(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"name: caf\xe9\ndata: {source: synthetic}\nmodels: [pop]\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
    path.write_bytes(b"# " + b"x" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(path)


def test_output_directories_that_cannot_be_one_are_refused(tmp_path, monkeypatch):
    """'-' made a folder named '-' (and ran the experiment into it)."""
    from recforge.experiment.runner import run_experiment

    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"data": {"source": "synthetic"}, "models": ["pop"]})
    (tmp_path / "file").write_text("x")
    for out in ("-", "/dev/stdout", "/dev/null", tmp_path / "file", "a\x00b"):
        with pytest.raises(ConfigError, match="output directory"):
            run_experiment(cfg, out)
    assert (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("model,kwargs,match", [
    ("bpr", {"n_trials": 0}, "--trials must be an integer >= 1"),
    ("bpr", {"n_trials": True}, "--trials must be an integer >= 1"),
    ("bpr", {"timeout": math.nan}, "--timeout must be a number of seconds > 0"),
    ("bpr", {"timeout": -1.0}, "--timeout must be a number of seconds > 0"),
    ("bpr", {"metric": "ndcg@" + "9" * 5000}, "cutoff must be at most 1,000"),
    ("bpr", {"metric": "coverage@10"}, "--metric coverage@10: bpr: valid_metric must be a "
                                       "ranking metric"),
    ("ease", {"metric": "rmse"}, "--metric rmse: ease does not predict ratings"),
    ("bpr", {"out": "-"}, "output directory -: standard output"),
    ("bpr", {"out": "/dev/stdout"}, "output directory /dev/stdout"),
])
def test_tune_options_are_checked_before_the_data_is_read(monkeypatch, model, kwargs, match):
    """A rating metric for a ranking model failed in the first trial, after the data was
    read and a model trained; NaN as --timeout was passed to Optuna."""
    from recforge.experiment import tune as tune_module
    from recforge.experiment.tune import tune

    def no_data(*args: Any, **kw: Any) -> None:
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr(tune_module, "prepare_data", no_data)
    cfg = parse_config({"data": {"source": "synthetic"}, "models": [model]})
    with pytest.raises(ConfigError, match=match):
        tune(cfg, model, **{"out": "unused", **kwargs})


@pytest.mark.parametrize("k", [0, -1, 1001, 10**12, True])
def test_quickstart_k_is_checked_before_any_download(monkeypatch, tmp_path, k):
    from recforge.experiment import quickstart

    def no_data(*args: Any, **kw: Any) -> None:
        raise AssertionError("a dataset was looked for before --k was checked")

    monkeypatch.setattr(quickstart, "_pick_dataset", no_data)
    with pytest.raises(ConfigError, match="--k must be an integer in 1..1000"):
        quickstart.run_quickstart(out=tmp_path, k=k, models=["pop"], download=False)


# ---------------------------------------------------------------------------------------
# hyperparameters: every parameter of every registered model
MODEL_PARAMS = [(name, p.name) for name in available_models()
                for p in inspect.signature(get_model_class(name).__init__).parameters.values()
                if p.name != "self"]


def _param_values(default: Any) -> st.SearchStrategy:
    """Right type but extreme, wrong type, NaN, inf, huge."""
    same = (st.integers(-(2**70), 2**70) | st.sampled_from([0, -1, 2**63]) | huge
            if isinstance(default, int) and not isinstance(default, bool) else
            st.floats(allow_nan=True, allow_infinity=True) | st.just(10**400) | huge
            if isinstance(default, float) else
            st.text(max_size=30) | st.sampled_from(["cuda:99999", "meta", "ndcg@0", "rmse"])
            if isinstance(default, str) else
            st.lists(st.integers(-5, 2**40), max_size=70) | st.just([1] * 10**5)
            if isinstance(default, (tuple, list)) else
            st.dictionaries(st.text(max_size=8), values, max_size=3))
    return same | values


@FUZZ
@given(data=st.data())
def test_every_hyperparameter_is_refused_by_name_or_accepted(data):
    """The checks that `recforge train -p`, a config's params and `fit` share."""
    name, param = data.draw(st.sampled_from(MODEL_PARAMS), label="param")
    default = inspect.signature(get_model_class(name).__init__).parameters[param].default
    value = data.draw(_param_values(default), label="value")
    try:
        _validate(create_model(name, **{param: value}))
    except ConfigError as exc:
        assert param in str(exc), str(exc)
        assert len(str(exc)) < 2000


@FUZZ
@given(param=st.sampled_from(MODEL_PARAMS),
       raw=st.text(max_size=40) | st.sampled_from([
           "9" * 5000, "-" + "9" * 5000, "[" * 5000, "{a: " * 100, "&a [*a]", ".nan", "1e400",
           "&a [&b [x, x, x], *b, *b, *b]", "!!python/object/apply:os.system [ls]"]))
def test_cli_param_values_are_read_and_then_judged(param, raw):
    """``recforge train -p KEY=VALUE`` reads VALUE as YAML: a 5,000-digit integer raised
    ValueError and 5,000 '[' RecursionError there, before any check."""
    from recforge.cli.common import parse_params

    name, key = param
    params = parse_params([f"{key}={raw}"])
    try:
        _validate(create_model(name, **params))
    except ConfigError as exc:
        assert key in str(exc), str(exc)


def _validate(model: Any) -> None:
    """What ``recforge train`` checks before reading data, and a config for each model
    (``check_model_params``): NaN / inf anywhere, then the model's own rules."""
    model._check_finite_params()
    model._validate_params()


def _child(code: str, *, memory_gb: float, timeout: float) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with an address-space limit: an allocation beyond
    it fails (an error) instead of waking the kernel's OOM killer, and a segfault is the
    child's exit status, not the test run's."""
    prologue = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        limit = int({memory_gb} * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


#: Valid values at the ends of each parameter's range (and the cheap end of the ones that
#: cost time): fitted in a child process on a tiny dataset.
EXTREMES: dict[str, list[Any]] = {
    "embedding_dim": [1, 512], "mlp_embedding_dim": [1, 512], "epochs": [1, 2],
    "min_steps": [0, 2**31 - 1],
    "batch_size": [7, 2**31 - 1], "learning_rate": [1e-30, 0.01, 3.4e38], "reg": [0, 1e-30, 3.4e38],
    "weight_decay": [0.0, 3.4e38], "init_std": [0.0, 1e-3, 3.4e38], "n_negatives": [1, 1000],
    "optimizer": ["adam", "adamw", "sgd", "adagrad"], "lr_schedule": [None, "cosine", "step"],
    "valid_metric": [None, "ndcg@1000", "mrr@1"], "patience": [None, 1],
    "eval_every": [1, 100_000], "device": ["cpu"], "seed": [0, 2**63 - 1],
    "alpha": [0.0, 1.0], "cg_steps": [1, 50], "solver": ["cg", "cholesky"],
    "binary": [True, False], "reg_exponent": [0.0, 2.0], "reg_weight": ["observed", "total"],
    "neighbors": [1, 2**31 - 1],
    "shrink": [0.0, 3.4e38], "block_size": [1, 2**31 - 1], "n_layers": [0, 64],
    "layers": [[1], [512], [32, 32, 32, 32]], "dropout": [0.0, 0.999], "loss": None,
    "pretrain": [False, True], "pretrain_optimizer": ["sgd", "adagrad"],
    "pretrain_learning_rate": [1e-30, 3.4e38], "id_dropout": [0.0, 0.999],
    "feature_reg": [1e-30, 3.4e38], "feature_weights": [None, {"genre": 3.4e38}],
    "centered": [True, False], "popularity_weight": [0.0, 3.4e38],
    "bias_reg": [None, 0.0, 3.4e38], "normalize": ["zscore", "none"],
    "weights": [None, {"ease": -3.4e38, "pop": 3.4e38}],
    "models": [{"ease": {"reg": 1e-30}, "pop": {}}, {"itemknn": {"neighbors": 1}}],
    "factor_dim": [1, 8192], "idl_beta": [0.0, 1e6], "svd_iters": [0, 100],
    "dense_items": [0, 2**31 - 1], "blur_time": [0.0, 10.0], "sharpen_time": [0.0, 10.0],
    "blur_steps": [1, 3], "sharpen_steps": [1, 3], "blur_solver": ["euler", "rk4"],
    "sharpen_solver": ["euler", "rk4"], "early_merge": [True, False],
    "point_combination": [True, False],
}
LOSSES = {"mlp": ["bce", "mse"], "neumf": ["bce", "mse"],
          "hybrid_bpr": ["bpr", "sampled_softmax", "softmax"]}
# the next-item models' own parameters (sasrec, gru4rec, caser)
EXTREMES.update({
    "max_len": [1, 300], "gbce_t": [0.0, 1.0], "negative_sampling": ["uniform"],
    "precision": ["float32", "bfloat16", "auto"], "sort_by_length": [True, False],
    "random_windows": [0.0, 1.0],
    "n_blocks": [1, 3], "n_heads": [1], "attention_dropout": [0.0, 0.9],
    "dropout_hidden": [0.0, 0.9], "sample_alpha": [0.0, 1.0], "bpr_reg": [0.0, 1e6],
    "window": [1, 64], "n_h": [1, 64], "n_v": [1, 64]})
LOSSES.update({"sasrec": ["bce", "sampled_softmax", "gbce", "ce"],
               "gru4rec": ["bpr_max", "sampled_softmax", "ce"],
               "caser": ["bce", "sampled_softmax", "gbce", "ce"]})
# the Surprise-style rating models' own parameters (baseline, knnbaseline, svdpp)
EXTREMES.update({
    "method": ["als", "sgd"], "reg_u": [0.0, 3.4e38], "reg_i": [0.0, 3.4e38],
    "k": [1, 2**31 - 1], "min_k": [0, 2**31 - 1], "shrinkage": [0.0, 3.4e38],
    "implicit_reg": [None, 0.0, 3.4e38]})
# session-kNN's own parameters (sknn)
EXTREMES.update({
    "sample_size": [0, 1, 2**31 - 1],
    "weighting": ["linear", "same", "div", "quadratic", "log"],
    "weighting_score": ["linear", "same", "div", "quadratic", "log"],
    "similarity": ["cosine", "jaccard"], "idf_weighting": [0.0, 3.4e38],
    "session_gap": [None, 0.0, 3.4e38], "remind": [True, False]})
# LightGCN++'s options and the contrastive graph models' parameters (simgcl, xsimgcl)
EXTREMES.update({
    "beta": [-4.0, 4.0], "gamma": [None, 0.0, 1.0], "unit_norm": [True, False],
    "eps": [0.0, 3.4e38], "cl_rate": [0.0, 3.4e38], "tau": [1e-30, 3.4e38],
    "cl_rows": [None, 2, 2**31 - 1], "l_star": [0, 64]})
# differential privacy (mf, bpr, gmf, mlp, neumf train with it; the others refuse it)
EXTREMES.update({
    "dp_epsilon": [None, None, 1e-30, 1000.0], "dp_delta": [None, 1e-30, 0.999],
    "dp_max_grad_norm": [1e-30, 3.4e38], "dp_max_per_user": [1, 2**31 - 1],
    "dp_user_learning_rate": [1e-30, 3.4e38], "dp_user_epochs": [0, 2],
    "dp_user_rows": ["train", "solve"]})
# vbpr's own parameters
EXTREMES.update({"visual_dim": [1, 512], "reg_visual": [0.0, 1e-30, 3.4e38]})


def test_extreme_valid_hyperparameters_fit_or_fail_cleanly_in_a_child():
    """For every model, a few draws of every parameter at an end of its range: the fit
    and a recommendation either work or raise a recforge error; never another exception,
    never a signal (the child prints each case before running it)."""
    import random

    rng = random.Random(20)
    cases = []
    for name in available_models():
        params = [p for n, p in MODEL_PARAMS if n == name]
        for _ in range(3):
            draw = {p: rng.choice(LOSSES[name] if p == "loss" else EXTREMES[p])
                    for p in params}
            if "epochs" in draw:
                draw["epochs"] = 1
            if draw.get("pretrain") and draw.get("loss") == "mse":
                draw["pretrain"] = False
            cases.append((name, draw))
    script = f"""
        import json, math
        from conftest import random_interactions
        import numpy as np
        from recforge import Interactions, RecforgeError
        from recforge.data import features as F
        from recforge.models.registry import create_model
        from recforge.experiment.workflow import fit_within_memory
        data = random_interactions(30, 20, seed=1)
        rated = data.with_values(np.random.default_rng(0).integers(1, 6, len(data))
                                 .astype(np.float32))
        feats = F.categorical(data.items, [f"g{{i % 3}}" for i in range(data.n_items)],
                              "genre")
        for name, params in {cases!r}:
            print("CASE", name, params, flush=True)
            try:
                model = create_model(name, **params)
                model._check_finite_params()
                model._validate_params()
                kw = ({{"item_features": feats}}
                      if model.capabilities.uses_item_features else {{}})
                # as the CLI and experiments fit (running out of memory is a ModelError)
                fit_within_memory(model, name, rated if model.predicts_ratings else data,
                                  **kw)
                out = model.recommend(data.users.ids[:3], k=5)
                print("FITTED", len(out), flush=True)
            except RecforgeError as exc:
                print("REFUSED", type(exc).__name__, str(exc)[:100], flush=True)
    """
    result = _child(script, memory_gb=6, timeout=600)
    last = [line for line in result.stdout.splitlines() if line.startswith("CASE")][-1:]
    assert result.returncode == 0, (result.returncode, last, result.stderr[-3000:])
    lines = [line for line in result.stdout.splitlines()
             if line.startswith(("FITTED", "REFUSED"))]
    assert len(lines) == len(cases)
    # most draws fit; a model refusing private training it does not have is not a draw
    # that tested its parameters, so it does not count either way
    tested = [line for line in lines
              if "does not support differentially private training" not in line]
    assert sum(line.startswith("FITTED") for line in tested) >= len(tested) // 2, \
        result.stdout


def test_running_out_of_memory_is_a_model_error_not_a_kill(tmp_path):
    """An embedding table larger than the memory there is: a ModelError naming the model
    (not a traceback), in a child whose address space is capped: beyond the cap an
    allocation fails, as on a machine that has no more memory (uncapped, the kernel may
    kill the process instead)."""
    n = 40_000  # 40,000 users x 8,192 floats: 1.3 GB of user factors alone
    (tmp_path / "events.csv").write_text(
        "user,item\n" + "".join(f"{u},{(u + j) % 50}\n" for u in range(n) for j in range(3)))
    result = _child(f"""
        from rich.console import Console
        from recforge import ModelError
        from recforge.experiment.config import parse_config
        from recforge.experiment.runner import run_experiment
        cfg = parse_config({{"data": {{"source": {str(tmp_path / "events.csv")!r}}},
                            "split": {{"test_size": 0.1}}, "save_models": False,
                            "report": False, "models": [{{"name": "als", "params": {{
                                "embedding_dim": 8192, "epochs": 1, "device": "cpu"}}}}]}})
        try:
            run_experiment(cfg, {str(tmp_path / "out")!r}, console=Console(quiet=True))
        except ModelError as exc:
            print("ModelError", exc)
    """, memory_gb=2.5, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ModelError models[0] (als): out of memory while training" in result.stdout


def test_recforge_train_out_of_memory_is_one_line_not_a_traceback(tmp_path):
    """`recforge train` converts running out of memory as run and tune do (it printed a
    traceback): status 2 and one line naming the model and its sizes."""
    n = 40_000
    (tmp_path / "events.csv").write_text(
        "user,item\n" + "".join(f"{u},{(u + j) % 50}\n" for u in range(n) for j in range(3)))
    argv = ["recforge", "train", "als", "--data", str(tmp_path / "events.csv"),
            "--out", str(tmp_path / "als"), "-p", "embedding_dim=8192", "-p", "epochs=1",
            "-p", "device=cpu"]
    result = _child(f"""
        sys.argv = {argv!r}
        from recforge.cli import main
        sys.exit(main())
    """, memory_gb=2.5, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "als: out of memory while training" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "als").exists()
