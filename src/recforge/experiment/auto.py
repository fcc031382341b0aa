"""``recforge train MODEL --auto`` and ``auto: true`` in an experiment: a safety net for
data recforge's defaults were never chosen on.

The few hyperparameters that matter for each model (:data:`AUTO_SPACES`) are tuned with
``recforge tune``'s Optuna study (:func:`recforge.experiment.tune.run_study`: TPE, the
median pruner, its trial objective) on a validation split carved from the training data
with a fixed seed, within a time budget:

- the split (:func:`validation_split`): a per-user random 20 % of the training events for
  top-K models, each user's last event for models that read the order of events
  (``Capabilities.reads_order``), a per-user 20 % of the ratings for rating models (scored
  by RMSE); the test data are never read;
- trial 0 is always the defaults (the model's, with what the user fixed), so the chosen
  configuration is never worse than the defaults on the validation split; and the best
  trial replaces the defaults only when it beats them by more than the validation
  split's noise (for ranking metrics, a paired t-test over the validation users at
  0.05 / the number of other trials: Bonferroni's correction, since the best of many
  trials is compared): a safety net should not trade good defaults for a lucky draw;
- the budget: Optuna's ``timeout``, no new trial once what is left is less than the
  longest trial so far (the first not counted), and gradient models stop a trial at the
  end of the first epoch past the budget; a model whose fit cannot be cut may overrun it
  by one trial. A budget too small for even the defaults' trial is said as such, and the
  defaults are kept;
- the search ranges are relative to the starting value (``("x", 0.1, 10)``: a tenth to
  ten times it, log-uniform) or bounded by the parameter's own meaning (dropout, shrink),
  so they do not depend on the catalogue's size.

The caller refits the model with the chosen parameters on the whole training data;
:meth:`AutoResult.record` is what the saved model keeps of it (``meta.json``
``training_data.auto``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recforge.data.interactions import Interactions
from recforge.data.split import leave_last_out, random_split
from recforge.errors import ConfigError
from recforge.evaluation.metrics import Metric
from recforge.experiment.config import ModelConfig
from recforge.experiment.leaderboard import _paired_pvalue
from recforge.experiment.tune import _objective, run_study
from recforge.experiment.workflow import PreparedData, learns_ratings
from recforge.models.registry import create_model, get_model_class

__all__ = ["AUTO_SPACES", "AutoResult", "auto_metric", "auto_space", "auto_tune",
           "print_auto", "validation_split"]

#: Seed of the validation split and of the sampler (``--seed`` replaces it).
AUTO_SEED = 0
#: Share of each user's training events held out for validation (top-K, rating models).
VALID_SHARE = 0.2
#: The p-value of the paired t-test over validation users below which the best trial
#: replaces the defaults (ranking metrics), divided by the number of trials besides the
#: defaults' (Bonferroni: the best of them is the one compared).
ALPHA = 0.05
#: The most trials one search runs, however large the budget (a few parameters: TPE has
#: long converged by then).
MAX_TRIALS = 100

_LR = ("x", 0.2, 5.0)
_SEQUENCE = {"learning_rate": ("x", 0.2, 3.0), "dropout": ("float", 0.0, 0.6),
             "max_len": ("xcat", (0.25, 0.5, 1.0))}

#: The few hyperparameters that matter, per model. ``("x", lo, hi)``: ``lo`` to ``hi``
#: times the starting value, log-uniform; ``("xint", lo, hi)``: the same, rounded to
#: integers; ``("xcat", (f1, f2...))``: those multiples of the starting value (integers);
#: a relative range over a starting value that is not a positive number is left out (so
#: ``epochs`` is tuned where it is a number, ``min_steps`` where ``epochs`` is None and
#: the floor on the steps sets the training length, see ``GradientRecommender.fit_epochs``);
#: anything else as in a model's ``tuning_space`` (``("float", lo, hi)``...). Models not
#: named here (``pop``, ``blend``) have nothing ``--auto`` tunes.
AUTO_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "als": {"embedding_dim": ("xcat", (0.25, 0.5, 1.0, 2.0)), "reg": ("x", 0.1, 10.0),
            "alpha": ("x", 0.1, 5.0)},
    "hybrid": {"reg": ("x", 0.1, 10.0), "alpha": ("x", 0.1, 5.0),
               "feature_reg": ("x", 0.1, 10.0)},
    "ease": {"reg": ("x", 0.05, 20.0)},
    "itemknn": {"neighbors": ("xint", 0.25, 20.0), "shrink": ("float", 0.0, 100.0)},
    "userknn": {"neighbors": ("xint", 0.2, 10.0), "shrink": ("float", 0.0, 100.0)},
    "sknn": {"neighbors": ("xint", 0.2, 10.0), "idf_weighting": ("float", 0.0, 10.0)},
    "gfcf": {"factor_dim": ("xint", 0.25, 4.0), "alpha": ("float", 0.0, 6.0)},
    "bspm": {"factor_dim": ("xint", 0.25, 4.0), "idl_beta": ("float", 0.0, 2.0),
             "sharpen_time": ("float", 0.0, 3.0)},
    "content": {"popularity_weight": ("float", 0.0, 1.0)},
    "mf": {"learning_rate": _LR, "reg": ("x", 0.1, 10.0), "epochs": ("xint", 0.5, 1.5)},
    "svdpp": {"learning_rate": _LR, "reg": ("x", 0.1, 10.0), "epochs": ("xint", 0.5, 1.5)},
    "baseline": {"reg_u": ("x", 0.2, 5.0), "reg_i": ("x", 0.2, 5.0)},
    "knnbaseline": {"k": ("xint", 0.25, 5.0), "shrinkage": ("float", 0.0, 300.0)},
    "bpr": {"learning_rate": _LR, "reg": ("x", 0.01, 10.0), "epochs": ("xint", 0.5, 1.5),
            "min_steps": ("xint", 0.5, 2.0)},
    "gmf": {"learning_rate": _LR, "epochs": ("xint", 0.5, 2.0), "min_steps": ("xint", 0.5, 2.0)},
    "mlp": {"learning_rate": _LR, "epochs": ("xint", 0.5, 2.0), "min_steps": ("xint", 0.5, 2.0)},
    "neumf": {"learning_rate": _LR, "epochs": ("xint", 0.5, 2.0), "min_steps": ("xint", 0.5, 2.0)},
    "lightgcn": {"learning_rate": ("x", 0.1, 2.0), "reg": ("x", 0.1, 30.0),
                 "epochs": ("xint", 0.5, 1.5), "min_steps": ("xint", 0.5, 2.0)},
    "hybrid_bpr": {"learning_rate": _LR, "reg": ("x", 0.1, 10.0),
                   "id_dropout": ("float", 0.0, 0.8)},
    "vbpr": {"learning_rate": _LR, "reg": ("x", 0.01, 10.0), "epochs": ("xint", 0.5, 1.5)},
    "sasrec": _SEQUENCE,
    "gru4rec": _SEQUENCE,
    "caser": _SEQUENCE,
}


def auto_space(name: str, params: dict[str, Any] | None = None) -> dict[str, tuple[Any, ...]]:
    """Model ``name``'s ``--auto`` search space as Optuna specs, relative ranges resolved
    around the starting values (the defaults with ``params`` over them), less the
    parameters ``params`` fixes. :class:`ConfigError` for a model with nothing to tune."""
    cls = get_model_class(name)
    # a model declared here, or one derived from it (simgcl from lightgcn)
    declared = next((AUTO_SPACES[c.name] for c in cls.__mro__
                     if isinstance(getattr(c, "name", None), str) and c.name in AUTO_SPACES),
                    None)
    if not declared:
        raise ConfigError(f"--auto: {cls.name} has no hyperparameters for --auto to tune "
                          f"(models that have: {', '.join(sorted(AUTO_SPACES))}); train it "
                          "without --auto")
    params = dict(params or {})
    start = create_model(cls.name, **params).get_params()
    space: dict[str, tuple[Any, ...]] = {}
    for key, spec in declared.items():
        if key in params:
            continue
        if key == "min_steps" and start.get("epochs") is not None:
            continue  # the floor applies to epochs=None only
        resolved = _resolve(spec, start[key])
        if resolved is not None:
            space[key] = resolved
    if not space:
        raise ConfigError(f"--auto: the parameters given fix every hyperparameter --auto "
                          f"tunes for {cls.name} ({', '.join(declared)})")
    for key, spec in space.items():  # each end of each range is a valid setting
        for end in _ends(spec):
            probe = create_model(cls.name, **{**params, key: end})
            try:
                probe._validate_params()
            except ConfigError as exc:
                raise ConfigError(f"--auto: {cls.name}.{key} = {end!r} (an end of its search "
                                  f"range around {start[key]!r}) is not valid: {exc}") from None
    return space


def _resolve(spec: tuple[Any, ...], value: Any) -> tuple[Any, ...] | None:
    """``spec`` around the starting ``value``; ``None`` when a relative range has nothing
    to scale (a starting value of 0 or not a number)."""
    kind = spec[0]
    if kind == "cat":  # the starting value is always one of the choices (trial 0)
        return spec if value in spec[1] else ("cat", [value, *spec[1]])
    if kind not in ("x", "xint", "xcat"):  # a fixed range, widened to the starting value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return (kind, min(spec[1], value), max(spec[2], value))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    if kind == "x":
        return ("log", float(f"{value * spec[1]:.6g}"), float(f"{value * spec[2]:.6g}"))
    if kind == "xint":
        low, high = max(1, round(value * spec[1])), max(1, round(value * spec[2]))
        return ("logint", low, high) if high > low else None
    choices = sorted({max(1, round(value * f)) for f in spec[1]})
    return ("cat", choices) if len(choices) > 1 else None


def _ends(spec: tuple[Any, ...]) -> list[Any]:
    if spec[0] == "cat":
        return list(spec[1])
    if spec[0] in ("int", "logint"):
        return [int(spec[1]), int(spec[2])]
    return [float(spec[1]), float(spec[2])]


def auto_metric(model: Any) -> str:
    """What ``--auto`` scores a model by on the validation split: RMSE for a model that
    learns ratings, NDCG@10 of the next event for a model that reads the order of events,
    NDCG@20 for the other top-K models."""
    if learns_ratings(model):
        return "rmse"
    return "ndcg@10" if model.effective_capabilities().reads_order else "ndcg@20"


def validation_split(model: Any, train: Interactions, *, item_features: Any = None,
                     seed: int = AUTO_SEED) -> tuple[PreparedData, str]:
    """The validation split carved from ``train`` for ``model`` (see the module's
    docstring), and the words that say what it is."""
    if model.effective_capabilities().reads_order:
        split = leave_last_out(train)
        if len(split.test) == 0:
            raise ConfigError("--auto: no user has two events to hold the last one out of; "
                              "train without --auto")
        history = split.history if split.history is not None else split.test_input()
        inner = PreparedData(train=split.train, test=split.test, valid=None,
                             train_pos=split.train, test_pos=split.test, valid_pos=None,
                             item_features=item_features, task="next_item", history=history)
        return inner, (f"each user's last training event ({len(split.test):,} targets), "
                       "predicted from the events before it")
    split = random_split(train, test_size=VALID_SHARE, by_user=True, seed=seed)
    if len(split.test) == 0:
        raise ConfigError("--auto: too few events per user to hold any out for validation; "
                          "train without --auto")
    inner = PreparedData(train=split.train, test=split.test, valid=None,
                         train_pos=split.train, test_pos=split.test, valid_pos=None,
                         item_features=item_features, threshold_order="before_split")
    what = "ratings" if learns_ratings(model) else "training events"
    return inner, (f"a per-user random {VALID_SHARE:.0%} of the {what} "
                   f"({len(split.test):,} of {len(train):,}, seed {seed})")


@dataclass
class AutoResult:
    """What ``--auto`` chose, and why.

    ``defaults`` / ``chosen``: the searched hyperparameters' starting and chosen values;
    ``params``: every parameter the model is refitted with; ``default_value`` /
    ``chosen_value``: the validation figure of each (``None`` for the defaults when the
    budget did not let their trial finish); ``gain``: the relative improvement (a fall
    of RMSE counts as a gain)."""

    model: str
    metric: str
    validation: str
    budget: float
    defaults: dict[str, Any]
    chosen: dict[str, Any]
    params: dict[str, Any]
    default_value: float | None
    chosen_value: float | None
    trials: int
    complete: int
    pruned: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None

    @property
    def lower_is_better(self) -> bool:
        return Metric.parse(self.metric).kind == "rating"

    @property
    def gain(self) -> float | None:
        d, c = self.default_value, self.chosen_value
        if d is None or c is None or d == 0:
            return None
        return (d - c) / d if self.lower_is_better else (c - d) / d

    def record(self) -> dict[str, Any]:
        """What the saved model keeps (``meta.json`` ``training_data.auto``)."""
        return {"metric": self.metric, "validation": self.validation,
                "budget_s": self.budget, "seconds": round(self.seconds, 2),
                "trials": self.trials, "complete": self.complete, "pruned": self.pruned,
                "defaults": self.defaults, "chosen": self.chosen,
                "default_value": self.default_value, "chosen_value": self.chosen_value,
                "gain": self.gain, "best_trial": self.best, "notes": list(self.notes)}


def auto_tune(entry: ModelConfig, inner: PreparedData, *, budget: float, where: str,
              metric: str | None = None, protocol: str = "full", seed: int = AUTO_SEED,
              max_trials: int = MAX_TRIALS, console: Console | None = None) -> AutoResult:
    """Tune ``entry``'s model (its ``params`` fixed, :data:`AUTO_SPACES`' searched) on
    ``inner`` (its ``test`` part is the validation part) within ``budget`` seconds;
    ``where`` says what ``inner`` is; ``metric``: by default :func:`auto_metric`.
    ``max_trials`` bounds the number of trials besides the budget."""
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (
            0 < budget < math.inf):
        raise ConfigError(f"the budget must be a number of seconds > 0, got {budget!r}")
    console = console or Console(quiet=True)
    space = auto_space(entry.name, entry.params)
    template = create_model(entry.name, **entry.params)
    metric = (metric or auto_metric(template)).lower()
    parsed = Metric.parse(metric)
    start_values = template.get_params()
    defaults = {k: start_values[k] for k in space}
    rating = parsed.kind == "rating"
    begin = time.perf_counter()
    deadline = begin + budget
    per_user: dict[int, Any] = {}
    objective = _objective(protocol, entry, space, metric, inner, rating, deadline=deadline,
                           per_user=per_user)
    took_s: list[float] = []

    def time_for_another() -> bool:
        """Whether more time is left than the longest trial after the first took (the
        first pays for warming up: als's first fit on ml-100k takes 2-4 times its
        second, so it would stop searches that had time for several trials)."""
        return deadline - time.perf_counter() >= max(took_s[1:] or [0.0])

    def guard(study: Any, trial: Any) -> None:
        took = (trial.duration.total_seconds() if trial.duration is not None else 0.0)
        took_s.append(took)
        state = trial.state.name.lower()
        value = "" if trial.value is None else f" {parsed.label} {trial.value:.4f}"
        console.print(f"auto trial {trial.number + 1} {state}{value} ({took:.1f}s) "
                      f"{escape(str(trial.params))}", highlight=False)
        if not time_for_another():
            study.stop()

    console.print(f"--auto: tuning {escape(entry.display)} ({', '.join(space)}) on "
                  f"{escape(where)}, {parsed.label}, budget {budget:g}s", highlight=False)
    study = run_study(objective, lower_is_better=rating, seed=seed, n_trials=max_trials,
                      timeout=budget, callbacks=[guard], first=defaults,
                      proceed=time_for_another)
    seconds = time.perf_counter() - begin
    trials = [t for t in study.trials if t.state.name != "WAITING"]
    first = trials[0]
    notes: list[str] = []
    default_value = float(first.value) if first.state.name == "COMPLETE" else None
    complete = [t for t in trials if t.state.name == "COMPLETE" and _finite(t.value)]
    if default_value is None:
        if first.user_attrs.get("out_of_time"):
            notes.append(f"the budget of {budget:g}s was too small for even the defaults' "
                         f"trial (stopped after {seconds:.1f}s)")
        else:  # a figure that is not finite: the defaults diverged on this data
            notes.append(f"the defaults' trial gave no finite {parsed.label}")
    elif len(trials) == 1:
        notes.append(f"the defaults' trial took {first.duration.total_seconds():.1f}s of "
                     f"the {budget:g}s budget: no other configuration was tried")
    best_trial = None
    if complete:  # the best trial: the defaults (trial 0) unless one did better
        best = study.best_trial
        chosen, chosen_value = {**defaults, **best.params}, float(best.value)
        if best.number != 0:
            best_trial = {"trial": best.number + 1, "value": chosen_value,
                          "params": dict(best.params)}
            if default_value is not None and 0 in per_user and best.number in per_user:
                a, b = per_user[best.number].align(per_user[0], join="inner")
                p = _paired_pvalue(a.to_numpy(), b.to_numpy())
                level = ALPHA / max(1, len(complete) - 1)
                best_trial.update(p_value=p, level=level, users=len(a))
                if not p < level:
                    notes.append(
                        f"the best trial ({_shown(best.params)}) scored {chosen_value:.4f}, "
                        f"within the noise of the validation split (paired t-test over "
                        f"{len(a):,} users: p = {p:.2g}, not below {ALPHA} / "
                        f"{max(1, len(complete) - 1)} trials = {level:.2g}); the defaults "
                        "are kept")
                    chosen, chosen_value = dict(defaults), default_value
    else:
        notes.append("no trial finished; the defaults are kept")
        chosen, chosen_value = dict(defaults), None
    return AutoResult(model=entry.name, metric=parsed.label, validation=where, budget=budget,
                      defaults=defaults, chosen=chosen, params={**entry.params, **chosen},
                      default_value=default_value, chosen_value=chosen_value,
                      trials=len(trials), complete=len(complete),
                      pruned=sum(t.state.name == "PRUNED" for t in trials),
                      seconds=seconds, notes=notes, best=best_trial)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    return str(value)


def print_auto(console: Console, result: AutoResult) -> None:
    """The table ``--auto`` prints: each tuned parameter's default and chosen value, then
    the validation figure of each and the gain."""
    table = Table(title=f"--auto: {result.model} on the validation split", title_justify="left")
    table.add_column("parameter")
    table.add_column("default", justify="right")
    table.add_column("chosen", justify="right")
    for key, value in result.defaults.items():
        chosen = result.chosen[key]
        table.add_row(escape(key), escape(_shown(value)),
                      escape(_shown(chosen)) if chosen != value else "[dim]same[/dim]")
    d, c = result.default_value, result.chosen_value
    table.add_section()
    table.add_row(f"validation {escape(result.metric)}",
                  "-" if d is None else f"{d:.4f}", "-" if c is None else f"{c:.4f}")
    gain = result.gain
    if gain is not None:
        table.add_row("gain", "", f"{gain:+.1%}")
    console.print(table)
    console.print(f"{result.trials} trials ({result.complete} complete, {result.pruned} pruned) "
                  f"in {result.seconds:.1f}s of a {result.budget:g}s budget; validation: "
                  f"{escape(result.validation)}", highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)

