"""Saved models that someone edited, and saves that a crash interrupts.

* Artefact fuzzing: for every registered model type, a small fitted model is saved, then
  every array of its weights, its vocabulary and metadata files and every field of its
  ``meta.json`` (params and extra, nested ones of a blend included) is doctored, with the
  checksums recomputed so that they match. Each case is loaded in a child process and
  asked for recommendations, similar items, recommendations for a history and (rating
  models) predictions: it must end in a :class:`ModelError` or in valid answers (items
  of the model, finite scores, the right shapes), never in a signal, a traceback or a
  hang. Checksums are for corruption, not for trust.
* ``recforge serve``: reloading a doctored model answers an error and the server keeps
  serving the model it had.
* Crash consistency: a process saves two models in turn to one path while another loads
  it in a loop; the saver is killed (``kill -9``) at random points 100 times: every load
  returns one of the two models, complete.
* The target of a save: only an empty directory or a saved recforge model is replaced.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

#: Small, fast hyperparameters of the built-in models whose defaults are slow; every
#: registered model is fuzzed (one without an entry here with its defaults).
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "pop": {},
    "itemknn": {"neighbors": 5},
    "ease": {"reg": 10.0},
    "als": {"embedding_dim": 4, "epochs": 2, "device": "cpu"},
    "mf": {"embedding_dim": 4, "epochs": 1, "batch_size": 128, "device": "cpu"},
    "bpr": {"embedding_dim": 4, "epochs": 1, "batch_size": 128, "device": "cpu"},
    "gmf": {"embedding_dim": 4, "epochs": 1, "batch_size": 128, "device": "cpu"},
    "mlp": {"embedding_dim": 4, "layers": (8, 4), "loss": "mse", "epochs": 1,
            "batch_size": 128, "device": "cpu"},
    "neumf": {"embedding_dim": 4, "mlp_embedding_dim": 4, "layers": (8, 4), "epochs": 1,
              "batch_size": 128, "device": "cpu"},
    "lightgcn": {"embedding_dim": 4, "n_layers": 2, "epochs": 1, "batch_size": 128,
                 "device": "cpu"},
    "simgcl": {"embedding_dim": 4, "n_layers": 2, "epochs": 1, "batch_size": 128,
               "device": "cpu"},
    "xsimgcl": {"embedding_dim": 4, "n_layers": 2, "epochs": 1, "batch_size": 128,
                "device": "cpu"},
    "content": {"feature_weights": {"genres": 2.0}},
    "hybrid": {"embedding_dim": 4, "epochs": 2, "device": "cpu"},
    "hybrid_bpr": {"embedding_dim": 4, "epochs": 1, "batch_size": 128, "device": "cpu"},
    "vbpr": {"embedding_dim": 4, "visual_dim": 4, "epochs": 1, "batch_size": 128,
             "device": "cpu"},
    "blend": {"models": {"itemknn": {"neighbors": 5},
                         "bpr": {"embedding_dim": 4, "epochs": 1, "batch_size": 128,
                                 "device": "cpu"}},
              "weights": {"bpr": 2.0}},
}

#: Values put in place of every params / extra field of meta.json.
BAD_VALUES: list[tuple[str, Any]] = [("text", "abc"), ("negative", -1), ("huge", 10**9),
                                     ("null", None), ("NaN", math.nan)]


# ---------------------------------------------------------------------------------------
# the saved models
def _data():
    from recforge import Interactions
    from recforge.data import features as F

    rng = np.random.default_rng(7)
    n_users, n_items = 30, 20
    mask = rng.random((n_users, n_items)) < 0.25
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    frame = pd.DataFrame({"user": 100 + u, "item": [f"i{x}" for x in i],
                          "rating": rng.integers(1, 6, len(u)).astype(float)})
    rated = Interactions.from_frame(frame)
    implicit = Interactions.from_frame(frame.drop(columns="rating"))
    items, users = implicit.items, implicit.users
    n = np.arange(len(items))
    item_features = F.combine(
        F.categorical(items, [f"g{x % 3}|h{x % 2}" for x in n], "genres"),
        F.text(items, [f"film {x} {'even' if x % 2 else 'odd'}" for x in n], "title",
               min_df=1))
    user_features = F.categorical(users, [f"a{x % 2}" for x in range(len(users))], "group")
    titles = pd.DataFrame({"title": [f"Film {x}" for x in items.ids]}, index=items.ids)
    return rated, implicit, item_features, user_features, titles


def _save_models(out: Path) -> dict[str, Path]:
    from recforge.models import create_model
    from recforge.models.registry import available_models

    rated, implicit, item_features, user_features, titles = _data()
    saved = {}
    for name in available_models():
        model = create_model(name, **MODEL_PARAMS.get(name, {}))
        caps = model.effective_capabilities()  # ratings: predict is asked of them
        data = rated if caps.learns_ratings else implicit
        if caps.uses_user_features:
            model.fit(data, item_features=item_features, user_features=user_features)
        elif caps.uses_item_features:
            model.fit(data, item_features=item_features)
        else:
            model.fit(data)
        model.attach_item_metadata(titles)
        saved[name] = model.save(out / name)
    return saved


# ---------------------------------------------------------------------------------------
# the doctored copies (built in the child process)
def _set_first(t: torch.Tensor, value: Any) -> torch.Tensor:
    t = t.clone()
    if t.numel():
        t.view(-1)[0] = value
    return t


def _array_mutations(t: torch.Tensor) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        ("deleted", None),
        ("one value short", lambda t: t.flatten()[:-1].clone()),
        ("an extra axis", lambda t: t.unsqueeze(0).clone()),
        ("zeros", torch.zeros_like),
    ]
    if t.ndim == 2 and t.shape[0] != t.shape[1]:
        out.append(("transposed", lambda t: t.T.contiguous()))
    if t.is_floating_point():
        out += [("float64", lambda t: t.double()), ("int32", lambda t: t.to(torch.int32)),
                ("NaN", lambda t: _set_first(t, math.nan)),
                ("-inf", lambda t: _set_first(t, -math.inf)),
                ("huge", lambda t: _set_first(t, 3e38))]
    else:
        top = torch.iinfo(t.dtype).max

        def past_end(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            if t.numel():
                t.view(-1)[-1] = min(int(t.max()) + 1000, top)
            return t

        out += [("float32", lambda t: t.float()), ("int16", lambda t: t.to(torch.int16)),
                ("an index past the end", past_end),
                ("negative", lambda t: _set_first(t.long(), -1)),
                ("reversed", lambda t: t.flip(0).clone())]
    return out


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of the fields of a JSON value (a list is one field)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    return [path]


def _set_path(obj: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _cases(base: Path) -> list[tuple[str, str, Any]]:
    """(label, kind, detail) of every doctored copy of the saved model at ``base``."""
    from safetensors.torch import load_file

    tensors = load_file(str(base / "weights.safetensors"))
    meta = json.loads((base / "meta.json").read_text())
    cases: list[tuple[str, str, Any]] = []
    for name in sorted(tensors):
        for label, _ in _array_mutations(tensors[name]):
            cases.append((f"{name}: {label}", "array", (name, label)))
    cases.append(("model.bogus: an array no model saves", "array", ("model.bogus", "added")))
    for fname in sorted(meta["files"]):
        for label in ("cut in half", "cut to 8 bytes", "garbage", "empty"):
            cases.append((f"{fname}: {label}", "bytes", (fname, label)))
    for fname in ("users.parquet", "items.parquet"):
        for label in ("an id twice", "one id short", "a null id", "float ids", "no id column",
                      "one id too many"):
            cases.append((f"{fname}: {label}", "vocab", (fname, label)))
    cases.append(("item_metadata.parquet: one row short", "metadata", None))
    for section in ("params", "extra"):
        for path in _leaves(meta[section]):
            if not path:
                continue
            for label, value in BAD_VALUES:
                cases.append((f"meta.json {section}.{'.'.join(path)}: {label}", "meta",
                              ((section, *path), value)))
    for path, value in [(("n_users",), meta["n_users"] + 1), (("n_items",), 0),
                        (("format_version",), 2), (("model",), "nosuch"),
                        (("model",), "blend" if meta["model"] != "blend" else "pop"),
                        (("train_fingerprint",), 5), (("extra",), [1, 2]),
                        (("params",), {"nosuch": 1}), (("files", "../../etc/hostname"), "0"),
                        (("params", "device"), "cuda:7")]:
        cases.append((f"meta.json {'.'.join(path)} = {value!r}", "meta", (path, value)))
    return cases


def _write_meta(case: Path, meta: dict) -> None:
    (case / "meta.json").write_text(json.dumps(meta))


def _rechecksum(case: Path, meta: dict) -> None:
    import hashlib

    for fname in list(meta["files"]):
        if (case / fname).is_file():
            meta["files"][fname] = hashlib.sha256((case / fname).read_bytes()).hexdigest()
    _write_meta(case, meta)


def _make_case(base: Path, case: Path, kind: str, detail: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import load_file, save_file

    case.mkdir(exist_ok=True)
    for f in case.iterdir():
        f.unlink()
    for f in base.iterdir():
        shutil.copyfile(f, case / f.name)
    meta = json.loads((case / "meta.json").read_text())
    if kind == "array":
        name, label = detail
        tensors = load_file(str(case / "weights.safetensors"))
        if label == "added":
            tensors[name] = torch.zeros(3)
        else:
            fn = dict(_array_mutations(tensors[name]))[label]
            if fn is None:
                del tensors[name]
            else:
                tensors[name] = fn(tensors[name]).contiguous()
        save_file(tensors, str(case / "weights.safetensors"))
    elif kind == "bytes":
        fname, label = detail
        data = (case / fname).read_bytes()
        data = {"cut in half": data[:len(data) // 2], "cut to 8 bytes": data[:8],
                "garbage": os.urandom(len(data)), "empty": b""}[label]
        (case / fname).write_bytes(data)
    elif kind == "vocab":
        fname, label = detail
        ids = pq.read_table(case / fname).column("id").to_pylist()
        if label == "an id twice":
            ids[1] = ids[0]
        elif label == "one id short":
            ids = ids[:-1]
        elif label == "one id too many":
            ids = ids + [ids[-1] * 2 if isinstance(ids[-1], int) else ids[-1] + "x"]
        elif label == "a null id":
            ids[0] = None
        elif label == "float ids":
            ids = [float(i) + 0.5 for i in range(len(ids))]
        table = (pa.table({"other": ids}) if label == "no id column" else pa.table({"id": ids}))
        pq.write_table(table, case / fname)
    elif kind == "metadata":
        frame = pd.read_parquet(case / "item_metadata.parquet")
        frame.iloc[:-1].to_parquet(case / "item_metadata.parquet", index=False)
    elif kind == "meta":
        path, value = detail
        if path[0] == "files":  # a file the checksums name: written as given
            meta["files"][path[1]] = value
            _write_meta(case, meta)
            return
        _set_path(meta, path, value)
    _rechecksum(case, meta)


# ---------------------------------------------------------------------------------------
# the answers a loaded model gives
class InvalidAnswer(AssertionError):
    pass


def _check_frame(frame: pd.DataFrame, model: Any, key: str, k: int, n: int) -> None:
    for col in (key, "rank", "score"):
        if col not in frame.columns:
            raise InvalidAnswer(f"no {col} column: {list(frame.columns)}")
    if len(frame) > n * k:
        raise InvalidAnswer(f"{len(frame)} rows for {n} x k={k}")
    scores = frame["score"].to_numpy(dtype=np.float64)
    if not np.isfinite(scores).all():
        raise InvalidAnswer("non-finite scores")
    if len(frame) and (model.items_.index(frame[key].to_numpy(dtype=object)) < 0).any():
        raise InvalidAnswer("items the model does not have")
    ranks = frame["rank"].to_numpy()
    if len(frame) and (ranks.min() < 1 or ranks.max() > k):
        raise InvalidAnswer(f"ranks outside 1..{k}")


def _ask(model: Any) -> int:
    """Ask every query; raise for an invalid answer. Returns how many were refused with
    a ModelError."""
    from recforge.errors import ModelError

    users = model.users_.ids[:3]
    items = model.items_.ids[:3]
    queries = [
        lambda: _check_frame(model.recommend(users, k=5), model, "item", 5, len(users)),
        lambda: _check_frame(model.similar_items(items[:2], k=3), model, "similar", 3, 2),
        lambda: _check_frame(model.recommend_for_history(items, k=5), model, "item", 5, 1),
    ]
    if model.predicts_ratings:
        def predict() -> None:
            pred = np.asarray(model.predict(users, items))
            if pred.shape != (len(users),) or not np.isfinite(pred).all():
                raise InvalidAnswer(f"predictions {pred!r}")

        queries.append(predict)
    refused = 0
    for query in queries:
        try:
            query()
        except ModelError:
            refused += 1
    return refused


def _child(out_dir: Path, scratch: Path, results: Path, jobs: list[tuple[str, int]]
           ) -> None:
    """Run the cases of ``jobs`` ((model, first case) pairs), doctored copies written
    under ``scratch``; one JSON line per case started and per case done, flushed, so the
    parent knows where a crash happened."""
    import faulthandler

    from recforge.errors import ModelError
    from recforge.models import Recommender

    faulthandler.enable()
    torch.set_num_threads(1)
    # the registry scans the installed packages' entry points on every load (14 ms): once
    # is enough in a process that installs nothing
    import functools

    from recforge.models import registry

    registry._plugins = functools.lru_cache(maxsize=None)(registry._plugins)

    def on_alarm(*_: Any) -> None:
        raise TimeoutError("no answer within 30 s")

    signal.signal(signal.SIGALRM, on_alarm)
    with open(results, "a", encoding="utf-8") as log:
        def note(**record: Any) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        for name, first in jobs:
            base = out_dir / name
            cases = _cases(base)
            note(model=name, total=len(cases))
            work = scratch / f"case-{name}"
            for i in range(first, len(cases)):
                label, kind, detail = cases[i]
                note(model=name, case=i, label=label)
                signal.alarm(30)
                try:
                    _make_case(base, work, kind, detail)
                    try:
                        model = Recommender.load(work)
                    except ModelError as exc:
                        outcome, why = "refused", str(exc)
                    else:
                        refused = _ask(model)
                        outcome, why = "answered", f"{refused} queries refused"
                except Exception as exc:  # a traceback: the failure this test looks for
                    outcome = "failed"
                    why = f"{type(exc).__name__}: {exc}\n" + "".join(
                        traceback.format_exc(limit=-4))
                finally:
                    signal.alarm(0)
                note(model=name, case=i, outcome=outcome, why=why[:2000])
            shutil.rmtree(work, ignore_errors=True)


def _run_children(out_dir: Path, models: list[str], workers: int = 2,
                  timeout: float = 300.0) -> dict[str, dict[int, dict[str, Any]]]:
    """Run every model's cases in ``workers`` child processes; a child that dies (a
    signal) or hangs is recorded against the case it was in and restarted after it."""
    shm = Path("/dev/shm")  # a memory file system: cases are written and read fast
    scratch = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                    else out_dir))
    try:
        return _schedule(out_dir, scratch, models, workers, timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _schedule(out_dir: Path, scratch: Path, models: list[str], workers: int,
              timeout: float) -> dict[str, dict[int, dict[str, Any]]]:
    groups = [models[i::workers] for i in range(workers)]
    outcomes: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in models}
    totals: dict[str, int] = {}
    pending = {w: [(m, 0) for m in group] for w, group in enumerate(groups) if group}
    running: dict[int, tuple[subprocess.Popen, Path, float]] = {}
    runs = 0
    while pending or running:
        for w in list(pending):
            if w in running:
                continue
            jobs = pending.pop(w)
            results = out_dir / f"results-{w}-{runs}.jsonl"
            runs += 1
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", str(out_dir), str(scratch),
                 str(results), json.dumps(jobs)], cwd=REPO, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
            running[w] = (proc, results, time.monotonic())
        time.sleep(0.05)
        for w, (proc, results, started) in list(running.items()):
            hung = proc.poll() is None and time.monotonic() - started > timeout
            if proc.poll() is None and not hung:
                continue
            if hung:
                proc.kill()
            _, err = proc.communicate()
            del running[w]
            last: tuple[str, int] | None = None
            done_models = []
            for line in results.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if "total" in rec:
                    totals[rec["model"]] = rec["total"]
                elif "outcome" in rec:
                    outcomes[rec["model"]][rec["case"]].update(rec)
                    last = None
                else:
                    last = (rec["model"], rec["case"])
                    outcomes[rec["model"]][rec["case"]] = dict(rec)
            if proc.returncode == 0 and last is None:
                continue
            if last is None:  # died outside a case: report it as such
                raise AssertionError(f"a fuzzing child exited with {proc.returncode}:\n"
                                     f"{err.decode(errors='replace')[-3000:]}")
            model, case = last
            how = ("hung (killed after the timeout)" if hung
                   else f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with {proc.returncode}")
            outcomes[model][case].update(outcome="crashed", why=f"the child {how}: " +
                                         err.decode(errors="replace")[-1500:])
            done_models = [m for m in outcomes if m in totals]
            rest = [m for m in groups[w] if m not in done_models]
            pending[w] = [(model, case + 1)] + [(m, 0) for m in rest if m != model]
    for m in models:  # every case of every model ran
        assert len(outcomes[m]) == totals.get(m, -1), (m, len(outcomes[m]), totals.get(m))
    return outcomes


# ---------------------------------------------------------------------------------------
# the tests
@pytest.mark.slow  # about 50 s on 2 cores (2,700 cases in two child processes)
def test_every_doctored_artifact_is_refused_or_answers_validly(tmp_path):
    """Every model type: arrays out of range, of the wrong shape or dtype, NaN / inf,
    truncated or garbage files, doctored vocabularies, item metadata and meta.json fields,
    checksums recomputed: a ModelError or valid answers, never a signal or a traceback."""
    saved = _save_models(tmp_path)
    outcomes = _run_children(tmp_path, sorted(saved))
    counts = {m: Counter(r["outcome"] for r in cases.values())
              for m, cases in outcomes.items()}
    total = Counter()
    for c in counts.values():
        total.update(c)
    lines = [f"{'model':<12}{'cases':>7}{'refused':>9}{'answered':>10}{'failed':>8}"
             f"{'crashed':>9}"]
    for m, c in counts.items():
        lines.append(f"{m:<12}{sum(c.values()):>7}{c['refused']:>9}{c['answered']:>10}"
                     f"{c['failed']:>8}{c['crashed']:>9}")
    lines.append(f"{'all':<12}{sum(total.values()):>7}{total['refused']:>9}"
                 f"{total['answered']:>10}{total['failed']:>8}{total['crashed']:>9}")
    summary = "\n".join(lines)
    print("\nartefact fuzzing:\n" + summary)
    bad = [f"{m} case {i} ({r.get('label')}): {r['outcome']}: {r.get('why', '')[:600]}"
           for m, cases in outcomes.items() for i, r in sorted(cases.items())
           if r.get("outcome") not in ("refused", "answered")]
    assert not bad, f"{len(bad)} case(s) crashed or failed:\n" + "\n".join(bad[:15]) + \
        "\n" + summary
    # the doctoring took: most cases are refused, and the untouched fields still answer
    assert total["refused"] > total["answered"] > 0


def test_serve_reload_of_a_doctored_model_answers_an_error_and_keeps_serving(tmp_path):
    """The issue's case: base.seen_indices out of range, checksum updated. The reload must
    be refused (a segfault at the first recommendation took the whole server down) and
    the server keeps answering with the model it had."""
    import hashlib

    from fastapi.testclient import TestClient
    from safetensors.torch import load_file, save_file

    from recforge.models import create_model
    from recforge.serving.app import create_app

    _, implicit, _, _, _ = _data()
    good = create_model("ease", reg=20.0).fit(implicit).save(tmp_path / "good")
    bad = create_model("ease", reg=30.0).fit(implicit).save(tmp_path / "bad")
    tensors = load_file(str(bad / "weights.safetensors"))
    tensors["base.seen_indices"][0] = 10_000_000
    save_file(tensors, str(bad / "weights.safetensors"))
    meta = json.loads((bad / "meta.json").read_text())
    meta["files"]["weights.safetensors"] = hashlib.sha256(
        (bad / "weights.safetensors").read_bytes()).hexdigest()
    (bad / "meta.json").write_text(json.dumps(meta))

    client = TestClient(create_app(good), base_url="http://localhost")
    user = int(implicit.users.ids[0])
    before = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    res = client.post("/admin/reload", json={"model": str(bad)})
    assert 400 <= res.status_code < 500, res.text
    assert "seen_indices" in res.text
    assert client.get("/model").json()["params"]["reg"] == 20.0
    after = client.get(f"/users/{user}/recommendations", params={"k": 5})
    assert after.status_code == 200 and after.json() == before


# ---------------------------------------------------------------------------------------
# crash consistency: kill -9 a saver at random points while a reader loads
KILLS = 100


def _tiny_models():
    from recforge import Interactions
    from recforge.models import create_model

    rng = np.random.default_rng(3)
    u, i = np.nonzero(rng.random((25, 15)) < 0.3)
    data = Interactions.from_frame(pd.DataFrame({"user": u, "item": i}))
    return (create_model("ease", reg=10.0).fit(data),
            create_model("ease", reg=50.0).fit(data))


def _saver(root: Path) -> None:
    """Save the reference copies and the first model, say "ready", wait for "go", then
    fork a child that saves the two models in turn for ever and kill it with SIGKILL at a
    random moment, KILLS times; a last save (which must remove what the killed savers
    left) ends it, and the leftovers are reported."""
    torch.set_num_threads(1)
    a, b = _tiny_models()
    a.save(root / "ref-a")
    b.save(root / "ref-b")
    a.save(root / "model")
    print("ready", flush=True)
    sys.stdin.readline()
    rng = np.random.default_rng(11)
    kills = left_behind = 0
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:  # the saver: never returns
            try:
                while True:
                    for m in (b, a):
                        m.save(root / "model")
            finally:
                os._exit(1)
        time.sleep(float(rng.uniform(0.0, 0.04)))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        kills += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        # what this killed saver left (the next one removes it)
        left_behind += sum(p.name.startswith(".model.") for p in root.iterdir())
    a.save(root / "model")
    left = sorted(p.name for p in root.iterdir() if p.name.startswith(".model."))
    print(json.dumps({"kills": kills, "left_behind": left_behind, "left": left}), flush=True)


def _reader(root: Path) -> None:
    """Load the model in a loop until ``root/stop`` exists; every load must give one of
    the two reference models, whole."""
    from recforge.models import Recommender

    torch.set_num_threads(1)
    refs = {name: Recommender.load(root / f"ref-{name}") for name in ("a", "b")}
    seen: Counter = Counter()
    errors: list[str] = []
    first = True
    while not (root / "stop").exists():
        try:
            m = Recommender.load(root / "model")
            match = [n for n, r in refs.items() if m.reg == r.reg
                     and torch.equal(m.weights_, r.weights_)
                     and (m.seen_ != r.seen_).nnz == 0 and m.users_ == r.users_]
            if len(match) != 1:
                errors.append(f"a model that is neither: reg={m.reg}")
            else:
                seen[match[0]] += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        if first:
            print("reading", flush=True)
            first = False
    print(json.dumps({"loads": sum(seen.values()), "seen": dict(seen), "errors": errors[:20],
                      "n_errors": len(errors)}), flush=True)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no answer from the child in {timeout} s: "
                             f"{proc.communicate()[1]!r}")
    return proc.stdout.readline()


@pytest.mark.slow  # about 20 s
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_reader_always_loads_a_whole_model_while_savers_are_killed(tmp_path):
    """kill -9 of the saver at 100 random points (writing, syncing, swapping, removing the
    old directory): every load in a concurrent reader gives the old or the new model,
    never an error or a mix; the next save removes what the killed savers left."""
    def start(role: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, role, str(tmp_path)], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    saver = start("--saver")
    try:
        assert _readline(saver, 120).strip() == "ready"
        reader = start("--reader")
        try:
            assert _readline(reader, 120).strip() == "reading"
            assert saver.stdin is not None
            saver.stdin.write("go\n")
            saver.stdin.flush()
            saved = json.loads(_readline(saver, 120))
            (tmp_path / "stop").touch()
            read = json.loads(_readline(reader, 60))
        finally:
            reader.kill()
            reader.wait()
    finally:
        saver.kill()
        saver.wait()
    print(f"\ncrash consistency: {saved['kills']} kills (leaving {saved['left_behind']} "
          f"temporary directories in all), {read['loads']} loads: {read['seen']}")
    assert saved["kills"] == KILLS
    assert read["n_errors"] == 0, read["errors"]
    assert read["loads"] > 0 and set(read["seen"]) == {"a", "b"}, read
    assert saved["left"] == [], saved


# ---------------------------------------------------------------------------------------
# the target of a save
def test_save_replaces_only_an_empty_directory_or_a_saved_model(tmp_path):
    """A directory with a file named meta.json that is not a recforge model's (or a
    saved model with other files in it) was replaced, and everything in it lost."""
    from recforge.errors import ModelError
    from recforge.models.artifact import check_model_target

    a, _ = _tiny_models()
    for name, files in [("foreign-meta", {"meta.json": '{"name": "my project"}',
                                          "notes.txt": "mine"}),
                        ("not-json", {"meta.json": "not json"}),
                        ("other-format", {"meta.json": '{"format": "other"}'})]:
        d = tmp_path / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text)
        with pytest.raises(ModelError, match="not a recforge model") as info:
            a.save(d)
        assert "\n" not in str(info.value)
        assert {p.name: p.read_text() for p in d.iterdir()} == files
    saved = a.save(tmp_path / "model")
    (saved / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="notes.txt"):
        a.save(saved)
    assert (saved / "notes.txt").read_text() == "mine"
    (saved / "notes.txt").unlink()
    a.save(saved)  # a saved model alone: replaced
    (tmp_path / "empty").mkdir()
    a.save(tmp_path / "empty")
    assert (tmp_path / "empty" / "meta.json").is_file()
    check_model_target(tmp_path / "new")  # a new name: fine
    link = tmp_path / "link"
    link.symlink_to(saved)
    a.save(link)  # a link to a saved model: its target replaced, the link kept
    assert link.is_symlink() and (saved / "meta.json").is_file()


def test_train_out_refuses_a_directory_holding_a_foreign_meta_json(tmp_path):
    """`recforge train --out DIR` deleted any directory holding a file named meta.json."""
    from typer.testing import CliRunner

    from recforge.cli import app

    _, implicit, _, _, _ = _data()
    data = tmp_path / "data.csv"
    pd.DataFrame({"user": implicit.users.ids[implicit.user],
                  "item": implicit.items.ids[implicit.item]}).to_csv(data, index=False)
    out = tmp_path / "project"
    out.mkdir()
    (out / "meta.json").write_text('{"name": "my project"}')
    (out / "src.py").write_text("print('mine')")
    res = CliRunner().invoke(app, ["train", "pop", "--data", str(data), "--out", str(out)])
    assert res.exit_code != 0
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "src.py"]


if __name__ == "__main__":  # the child processes of the tests above
    role = sys.argv[1]
    if role == "--child":
        _child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]),
               [tuple(j) for j in json.loads(sys.argv[5])])
    elif role == "--saver":
        _saver(Path(sys.argv[2]))
    elif role == "--reader":
        _reader(Path(sys.argv[2]))


def test_the_service_takes_the_metadata_of_the_read_that_gave_the_model(tmp_path, monkeypatch):
    """The server dates a model (erased users are served from a model made after their
    erasure only) by its meta.json: it must use the metadata read with the weights, not a
    second read, which a save landing in between would answer with the next model's."""
    from recforge.models import create_model
    from recforge.models.base import Recommender
    from recforge.serving.service import RecommendationService

    _, implicit, _, _, _ = _data()
    path = create_model("pop").fit(implicit).save(tmp_path / "pop")
    model, meta = Recommender.load_with_meta(path)
    assert meta == json.loads((path / "meta.json").read_text())
    assert model.name == meta["model"] and model.n_items == meta["n_items"]

    read = Recommender.load_with_meta

    def then_a_save_lands(cls, where):  # the next model's meta.json appears after the read
        loaded, first = read.__func__(cls, where)
        later = dict(first, created="2999-01-01T00:00:00+00:00")
        (Path(where) / "meta.json").write_text(json.dumps(later))
        return loaded, first

    monkeypatch.setattr(Recommender, "load_with_meta", classmethod(then_a_save_lands))
    service = RecommendationService(path)
    assert service.meta["created"] == meta["created"]
