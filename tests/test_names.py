"""Names people already know (issue 25, item 3): model names in any case, other libraries'
names answered with recforge's, ``-p key value`` answered with the form to use, and a
missing model directory said as such."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli as run

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.experiment.config import load_yaml, parse_config
from recforge.models import create_model, get_model_class
from recforge.models.base import Recommender


def config(models: str):
    return parse_config(load_yaml(f"data: {{source: synthetic}}\nmodels: {models}\n", "x.yaml"),
                        "x.yaml")


@pytest.fixture
def small_csv(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 30, 400), "item": rng.integers(0, 40, 400)})
    path = tmp_path / "train.csv"
    frame.drop_duplicates().to_csv(path, index=False)
    return path


# --- model names --------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "name"), [
    ("EASE", "ease"), ("Ease", "ease"), ("ItemKNN", "itemknn"), ("LightGCN", "lightgcn"),
    ("Hybrid-BPR", "hybrid_bpr"), ("NeuMF", "neumf"),
    # other spellings of the same algorithm (registry.ALIASES)
    ("popularity", "pop"), ("MostPop", "pop"), ("iALS", "als"), ("ItemCF", "itemknn"),
])
def test_names_resolve_whatever_the_case(given, name):
    from recforge.models.registry import resolve_name

    assert resolve_name(given) == name
    assert get_model_class(given) is get_model_class(name)
    assert create_model(given).name == name  # the canonical name is what saves and prints


@pytest.mark.parametrize(("given", "says"), [
    ("lightfm", "recforge's LightFM-style model is 'hybrid_bpr'"),
    ("LightFM", "recforge's LightFM-style model is 'hybrid_bpr'"),
    ("implicit", "AlternatingLeastSquares is 'als'"),
    ("implicit_als", "is 'als'"),
    ("SVD", "Surprise's SVD .* is 'mf'"),
    ("funk_svd", "is 'mf'"),
    ("SLIM", "'ease' is the closest"),
    ("NCF", "'gmf', 'mlp' and 'neumf'"),
])
def test_other_libraries_names_are_answered_with_recforges(given, says):
    with pytest.raises(ConfigError, match=f"unknown model '{given}'; .*{says}"):
        create_model(given)


def test_unknown_names_still_get_close_matches():
    with pytest.raises(ConfigError, match="unknown model 'Easee'; did you mean 'ease'"):
        get_model_class("Easee")
    with pytest.raises(ConfigError, match="must be text"):
        get_model_class(["ease"])  # not a TypeError from a dict lookup


def test_experiment_names_resolve_and_save_canonical():
    cfg = config("[EASE, {name: Hybrid_BPR, label: hb}, {name: ItemKNN, params: {neighbors: 5}}]")
    assert [(m.name, m.display) for m in cfg.models] == [
        ("ease", "ease"), ("hybrid_bpr", "hb"), ("itemknn", "itemknn")]
    with pytest.raises(ConfigError, match=r"models\[0\]\.name: unknown model 'lightfm'; "
                                          r"recforge's LightFM-style model is 'hybrid_bpr'"):
        config("[lightfm]")


def test_tune_model_option_takes_any_case():
    from recforge.cli.experiments import _tuned_model

    cfg = config("[ease, {name: als, label: my-als}]")
    assert _tuned_model(cfg, "EASE", "x.yaml") == "ease"
    assert _tuned_model(cfg, "ALS", "x.yaml") == "my-als"  # the experiment's entry
    assert _tuned_model(cfg, "BPR", "x.yaml") == "bpr"  # a registered model
    with pytest.raises(ConfigError, match="LightFM-style model is 'hybrid_bpr'"):
        _tuned_model(cfg, "lightfm", "x.yaml")


def test_train_takes_a_name_in_any_case_and_saves_the_canonical_one(tmp_path, small_csv,
                                                                     capsys):
    out = tmp_path / "model"
    code, _, err = run(["train", "EASE", "--data", small_csv, "--out", out, "-p", "reg=10"],
                       capsys)
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["model"] == "ease"
    code, _, err = run(["train", "lightfm", "--data", small_csv, "--out", tmp_path / "m2"],
                       capsys)
    assert code == 2 and "recforge's LightFM-style model is 'hybrid_bpr'" in err


# --- parameter names ----------------------------------------------------------------------
@pytest.mark.parametrize(("model", "key", "says"), [
    ("als", "factors", "did you mean 'embedding_dim'? (implicit calls it 'factors')"),
    ("bpr", "no_components", "did you mean 'embedding_dim'? (LightFM calls it 'no_components')"),
    ("mf", "n_factors", "did you mean 'embedding_dim'? (Surprise calls it 'n_factors')"),
    ("gfcf", "factors", "did you mean 'factor_dim'? (implicit calls it 'factors')"),
    ("als", "regularization", "did you mean 'reg'? (implicit calls it 'regularization')"),
    ("EASE", "lambda", "did you mean 'reg'?"),
    ("als", "iterations", "did you mean 'epochs'? (implicit calls it 'iterations')"),
    ("mf", "n_epochs", "did you mean 'epochs'? (Surprise calls it 'n_epochs')"),
    ("bpr", "lr", "did you mean 'learning_rate'?"),
    ("itemknn", "k", "did you mean 'neighbors'?"),
    ("userknn", "topk", "did you mean 'neighbors'?"),
])
def test_other_libraries_parameter_names_get_recforges(model, key, says):
    with pytest.raises(ConfigError) as info:
        create_model(model, **{key: 1})
    assert says in str(info.value)


def test_a_parameter_hint_names_only_parameters_the_model_has():
    with pytest.raises(ConfigError) as info:
        create_model("ease", factors=8)  # ease has no embedding
    assert "embedding_dim" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        create_model("pop", k=8)  # pop has no neighbours
    assert "neighbors" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        create_model("mf", EPOCHS=8)  # a slip of case
    assert "did you mean 'epochs'?" in str(info.value)


def test_experiment_parameter_hints():
    with pytest.raises(ConfigError, match=r"models\[0\]\.params\.factors: als has no parameter "
                       r"'factors' \(did you mean 'embedding_dim'\? implicit calls it "
                       r"'factors'\)"):
        config("[{name: ALS, params: {factors: 8}}]")


# --- -p key=value -------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["-p", "alpha", "10"], "--param 'alpha': use key=value, e.g. -p alpha=10"),
    (["--param", "reg", "3", "-p", "binary=true"], "--param 'reg': use key=value, e.g. -p reg=3"),
    (["-p", "alpha"], "--param 'alpha': use key=value, e.g. -p alpha="),
])
def test_param_without_equals_says_the_form(tmp_path, small_csv, capsys, args, says):
    code, _, err = run(["train", "als", "--data", small_csv, "--out", tmp_path / "m", *args],
                       capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("params", ["{reg=100}", "'reg 100'", "[reg=100]"])
def test_experiment_params_given_wrongly_say_the_form(params):
    with pytest.raises(ConfigError, match=r"models\[0\]\.params.*(key: value|reg: 100)"):
        config(f"[{{name: ease, params: {params}}}]")


# --- model directories --------------------------------------------------------------------
def test_a_missing_model_directory_is_said_as_such(tmp_path, capsys):
    missing = tmp_path / "no-model"
    with pytest.raises(ModelError, match=f"no such directory: {missing}"):
        Recommender.load(missing)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ModelError, match="not a directory"):
        Recommender.load(a_file)
    for command in (["recommend", "--out", tmp_path / "r.csv"],
                    ["predict", "--pairs", a_file, "--out", tmp_path / "p.csv"],
                    ["evaluate", "--train", a_file, "--test", a_file]):
        code, _, err = run([command[0], "--model", missing, *command[1:]], capsys)
        assert code == 2 and f"no such directory: {missing}" in err, (command, err)
        assert "meta.json" not in err


def test_server_load_of_a_missing_model_directory(tmp_path):
    from recforge.serving.service import RecommendationService

    with pytest.raises(ModelError, match="no such directory"):
        RecommendationService(tmp_path / "gone")


def test_a_directory_holding_models_names_them(tmp_path):
    frame = pd.DataFrame({"user": [1, 2], "item": [3, 4]})
    create_model("pop").fit(Interactions.from_frame(frame)).save(tmp_path / "run" / "models"
                                                                / "pop")
    with pytest.raises(ModelError, match=r"no meta\.json\); it holds saved models: "
                                         r".*models/pop"):
        Recommender.load(tmp_path / "run")
