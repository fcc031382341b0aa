"""implicit's ALS on a saved user x item matrix (timing and factors only).

Run by ``bench_als_reg.py --settings implicit`` with the interpreter of a benchmark-only
venv that has implicit 0.7.3 (``RECFORGE_IMPLICIT_PYTHON``); it is not part of recforge
and imports nothing of it. Reads ``IN.npz`` (a scipy CSR, users x items, binary), writes
``OUT_users.npy`` / ``OUT_items.npy`` (float32 factors) and prints one JSON line.

    $RECFORGE_IMPLICIT_PYTHON benchmarks/implicit_als.py IN.npz OUT [factors reg alpha its]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    factors, reg, alpha, iterations = (int(sys.argv[3]), float(sys.argv[4]),
                                       float(sys.argv[5]), int(sys.argv[6])) \
        if len(sys.argv) > 6 else (128, 0.01, 10.0, 15)
    from implicit.cpu.als import AlternatingLeastSquares

    mat = sp.load_npz(source).tocsr().astype(np.float32)
    model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                    iterations=iterations, random_state=0, num_threads=1)
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):  # as implicit recommends
        model.fit(mat, show_progress=False)
    seconds = time.perf_counter() - start
    np.save(out + "_users.npy", np.asarray(model.user_factors, dtype=np.float32))
    np.save(out + "_items.npy", np.asarray(model.item_factors, dtype=np.float32))
    import implicit

    print(json.dumps({"implicit": implicit.__version__, "fit_s": seconds, "factors": factors,
                      "regularization": reg, "alpha": alpha, "iterations": iterations}))


if __name__ == "__main__":
    main()
