"""Nearest-neighbour benchmark: which ANN backend serves the retrieval model's MIPS queries.

For each catalog size it builds every backend on the same item vectors and measures, against
exact search (the baseline, measured in the same run):
- recall@k: the share of the exact top k that the backend returns, averaged over the queries;
- single-query latency, one query at a time on ONE thread (BLAS and faiss' OpenMP pinned to one
  thread for queries; the serving process handles one request per thread): wall-clock p50/p99,
  and p99 of the thread's CPU time, which a busy shared machine does not inflate;
- build time (faiss' OpenMP and hnswlib use --build-threads) and memory (growth of the process'
  resident set during the build, and the serialized index size).

Backends: exact (reelrank ExactIndex: numpy matmul + argpartition); reelrank AnnIndex (faiss
IVF + 4-bit PQ fast scan + exact re-rank, swept over nprobe and re-rank factor, measured end to
end through the public search API, also with an `exclude` set, and the same faiss index + numpy
re-rank called directly, like for like with the other raw rows); faiss IVF-Flat (inner product);
faiss HNSW-Flat (inner product); hnswlib ('ip' space, and 'l2' on the MIPS->L2 reduction that
appends sqrt(max|x|^2 - |x|^2) to every item and 0 to the query). HNSW variants are built only up
to --hnsw-max-items, except hnswlib 'ip' up to --hnswlib-max-items (1M-item graph builds take
many minutes on a small shared machine).

Vectors: by default a synthetic catalog shaped like trained two-tower item vectors: 512 topic
clusters with Zipf-sized membership in a rank-16 subspace plus isotropic noise, and log-normal
norms (popular items score higher everywhere); queries mix 1-3 topics, as viewers do.
--vectors/--query-vectors take real (N, D) float32 .npy files instead (e.g. a trained model's).

    python benchmarks/bench_index.py                          # the committed run (100k and 1M)
    python benchmarks/bench_index.py --items 20000 --queries 200   # a quick look

Results go to benchmarks/results/index.json and index.md, with the command that made them.
"""

from __future__ import annotations

import os

# One thread for queries, set before numpy/faiss load their thread pools.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import hnswlib  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelrank.index import AnnIndex, ExactIndex  # noqa: E402

K = 100
TARGET = 0.95  # recall@K the serving index must reach


def structured_vectors(n: int, dim: int, n_queries: int, seed: int,
                       clusters: int = 512, rank: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Items (n, dim) and unit-norm queries (n_queries, dim) with topic/low-rank/norm structure."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
    centers = rng.standard_normal((clusters, rank)).astype(np.float32) @ basis  # (C, D)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    share = 1.0 / np.arange(1, clusters + 1) ** 0.8
    share /= share.sum()
    items = np.empty((n, dim), np.float32)
    for start in range(0, n, 200_000):  # in blocks, to bound temporary memory
        m = min(n, start + 200_000) - start
        x = centers[rng.choice(clusters, size=m, p=share)]
        x += 0.45 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x *= np.exp(0.35 * rng.standard_normal(m)).astype(np.float32)[:, None]
        items[start:start + m] = x
    topics = rng.choice(clusters, size=(n_queries, 3), p=share)
    weights = rng.dirichlet(np.full(3, 0.5), size=n_queries).astype(np.float32)
    q = np.einsum("qk,qkd->qd", weights, centers[topics])
    q += 0.3 * rng.standard_normal((n_queries, dim)).astype(np.float32) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return items, np.ascontiguousarray(q, dtype=np.float32)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed_build(build) -> tuple[object, float, float]:
    before = rss_mb()
    started = time.perf_counter()
    obj = build()
    return obj, time.perf_counter() - started, rss_mb() - before


def latency(search, queries: np.ndarray) -> dict:
    """Single-query latency; returns ms percentiles and the results for recall."""
    walls, cpus, results = [], [], []
    for q in queries:
        w, c = time.perf_counter(), time.thread_time()
        results.append(search(q))
        cpus.append(time.thread_time() - c)
        walls.append(time.perf_counter() - w)
    ms = lambda xs, p: round(float(np.percentile(xs, p)) * 1e3, 3)  # noqa: E731
    return {"p50_ms": ms(walls, 50), "p99_ms": ms(walls, 99), "cpu_p99_ms": ms(cpus, 99),
            "results": results}


def recall(found: list, truth: list[set]) -> float:
    return round(float(np.mean([len(set(f) & t) / len(t) for f, t in zip(found, truth)])), 4)


def row(backend: str, params: dict, build_s: float | None, rss: float | None,
        size_mb: float | None, lat: dict, rec: float, **extra) -> dict:
    out = {"backend": backend, "params": params, "build_s": None if build_s is None else
           round(build_s, 1), "rss_growth_mb": None if rss is None else round(rss, 1),
           "index_mb": None if size_mb is None else round(size_mb, 1), f"recall@{K}": rec}
    out.update({k: v for k, v in lat.items() if k != "results"})
    out.update(extra)
    print(json.dumps(out), flush=True)
    return out


def file_mb(save) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "index"
        save(str(path))
        return path.stat().st_size / 2**20


def bench_size(items: np.ndarray, queries: np.ndarray, args) -> dict:
    n, dim = items.shape
    ids = [f"v{i}" for i in range(n)]
    rows: list[dict] = []
    faiss.omp_set_num_threads(args.build_threads)

    exact, bt, rss = timed_build(lambda: _built(ExactIndex(), ids, items))
    faiss.omp_set_num_threads(1)
    lat = latency(lambda q: [i for i, _ in exact.search(q, K)[0]], queries)
    truth = [set(r) for r in lat["results"]]
    rows.append(row("exact", {}, bt, rss, file_mb(exact.save), lat, 1.0, baseline=True))
    truth_idx = [np.array([int(i[1:]) for i in t]) for t in truth]

    # The chosen backend, end to end through the public API.
    faiss.omp_set_num_threads(args.build_threads)
    ann, bt, rss = timed_build(lambda: _built(AnnIndex(seed=args.seed), ids, items))
    faiss.omp_set_num_threads(1)
    size = file_mb(ann.save)
    default_nprobe = ann.nprobe
    for frac in (0.02, 0.04, 0.08, 0.12) if ann.nlist else ():
        ann.nprobe = max(1, math.ceil(frac * ann.nlist))
        lat = latency(lambda q: [i for i, _ in ann.search(q, K)[0]], queries)
        rows.append(row("reelrank AnnIndex (faiss IVF-PQ4 fast scan + exact re-rank)",
                        {"nlist": ann.nlist, "nprobe": ann.nprobe, "rerank": 10}, bt, rss, size,
                        lat, recall(lat["results"], truth)))
    # The same faiss index and re-rank without the wrapper (ids, lock, exclusion, retries): like
    # for like with the raw faiss rows below. Labels equal row numbers here (built in order).
    for frac in (0.04, 0.08, 0.12) if ann.nlist else ():
        params = faiss.SearchParametersIVF(nprobe=max(1, math.ceil(frac * ann.nlist)))
        lat = latency(lambda q: _pq_rerank(ann, q, params), queries)
        rows.append(row("faiss IVF-PQ4 fast scan + numpy re-rank (raw)",
                        {"nlist": ann.nlist, "nprobe": params.nprobe, "rerank": 10}, bt, rss,
                        size, lat, _recall_idx(lat["results"], truth_idx)))
    ann.nprobe = default_nprobe
    for rerank in (5, 20):
        ann.params["rerank"] = rerank
        lat = latency(lambda q: [i for i, _ in ann.search(q, K)[0]], queries)
        rows.append(row("reelrank AnnIndex (faiss IVF-PQ4 fast scan + exact re-rank)",
                        {"nlist": ann.nlist, "nprobe": ann.nprobe, "rerank": rerank}, bt, rss,
                        size, lat, recall(lat["results"], truth)))
    ann.params["rerank"] = 10
    rows.append(_exclude_row(ann, exact, queries, truth, args))
    rows.append(_update_row(ann, dim, args))
    del ann

    faiss.omp_set_num_threads(args.build_threads)
    nlist = round(4 * math.sqrt(n))

    def ivf_flat():
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(args.seed)
        index.train(items[rng.choice(n, size=min(n, 50 * nlist), replace=False)])
        index.add(items)
        return index
    index, bt, rss = timed_build(ivf_flat)
    faiss.omp_set_num_threads(1)
    size = faiss.serialize_index(index).nbytes / 2**20
    for frac in (0.02, 0.04, 0.08, 0.12):
        params = faiss.SearchParametersIVF(nprobe=max(1, math.ceil(frac * nlist)))
        lat = latency(lambda q: index.search(q[None, :], K, params=params)[1][0], queries)
        rows.append(row("faiss IVF-Flat IP", {"nlist": nlist, "nprobe": params.nprobe}, bt, rss,
                        size, lat, _recall_idx(lat["results"], truth_idx)))
    del index

    graphs = []
    if n <= args.hnsw_max_items:
        graphs += [("faiss HNSW-Flat IP", "faiss"), ("hnswlib l2 on MIPS->L2 reduction", "l2")]
    if n <= args.hnswlib_max_items:
        graphs.append(("hnswlib ip", "ip"))
    for name, how in graphs:
        rows += _bench_graph(name, how, items, queries, truth_idx, args)
    return {"items": n, "dim": dim, "rows": rows}


def _built(index, ids, items):
    index.build(ids, items)
    return index


def _pq_rerank(ann: AnnIndex, q: np.ndarray, params) -> np.ndarray:
    labels = ann._ivf.search(q[None, :], 10 * K, params=params)[1][0]
    labels = labels[labels >= 0]
    scores = ann._store.vectors[labels] @ q
    top = np.argpartition(-scores, K - 1)[:K]
    return labels[top[np.argsort(-scores[top])]]


def _recall_idx(found: list, truth_idx: list[np.ndarray]) -> float:
    return round(float(np.mean([len(np.intersect1d(f, t)) / len(t)
                                for f, t in zip(found, truth_idx)])), 4)


def _exclude_row(ann, exact, queries, truth, args) -> dict:
    """A viewer's seen set: 300 ids, a third of them from the query's exact top 100."""
    rng = np.random.default_rng(args.seed + 1)
    n = len(exact)
    seen = [[f"v{i}" for i in rng.choice(n, size=200, replace=False)]
            + list(sorted(t))[:100] for t in truth]
    it = iter(range(len(queries)))
    lat = latency(lambda q: [i for i, _ in ann.search(q, K, exclude=seen[next(it)])[0]], queries)
    ex_truth = [{i for i, _ in exact.search(q, K, exclude=s)[0]} for q, s in zip(queries, seen)]
    full = all(len(r) == K for r in lat["results"])
    leaked = any(set(r) & set(s) for r, s in zip(lat["results"], seen))
    return row("reelrank AnnIndex, exclude 300 seen ids",
               {"nlist": ann.nlist, "nprobe": ann.nprobe, "rerank": 10}, None, None, None, lat,
               recall(lat["results"], ex_truth), always_k=full, excluded_leaked=leaked)


def _update_row(ann, dim, args) -> dict:
    rng = np.random.default_rng(args.seed + 2)
    new = rng.standard_normal((1000, dim)).astype(np.float32) / np.sqrt(dim)
    started = time.perf_counter()
    ann.add([f"new{i}" for i in range(1000)], new)
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    ann.remove([f"new{i}" for i in range(1000)])
    remove_s = time.perf_counter() - started
    out = {"backend": "reelrank AnnIndex updates", "add_1000_s": round(add_s, 3),
           "remove_1000_s": round(remove_s, 3)}
    print(json.dumps(out), flush=True)
    return out


def _bench_graph(name, how, items, queries, truth_idx, args) -> list[dict]:
    n, dim = items.shape
    m, efc = args.hnsw_m, args.hnsw_ef_construction
    faiss.omp_set_num_threads(args.build_threads)
    if how == "l2":
        sq = np.einsum("nd,nd->n", items, items)
        extra = np.sqrt(np.maximum(sq.max() - sq, 0.0)).astype(np.float32)[:, None]
        data = np.hstack([items, extra])
        queries = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
    else:
        data = items

    def build():
        if how == "faiss":
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = efc
            index.add(data)
            return index
        index = hnswlib.Index(space=how, dim=data.shape[1])
        index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=args.seed)
        index.add_items(data, np.arange(n), num_threads=args.build_threads)
        return index
    index, bt, rss = timed_build(build)
    faiss.omp_set_num_threads(1)
    if how == "faiss":
        size = faiss.serialize_index(index).nbytes / 2**20
    else:
        size = file_mb(index.save_index)
    out = []
    for ef in (100, 200, 400, 800):
        if how == "faiss":
            params = faiss.SearchParametersHNSW(efSearch=ef)
            search = lambda q: index.search(q[None, :], K, params=params)[1][0]  # noqa: E731
        else:
            index.set_ef(ef)
            search = lambda q: index.knn_query(q, k=K, num_threads=1)[0][0]  # noqa: E731
        lat = latency(search, queries)
        out.append(row(name, {"M": m, "efConstruction": efc, "efSearch": ef}, bt, rss, size,
                       lat, _recall_idx(lat["results"], truth_idx)))
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "faiss-cpu": version("faiss-cpu"), "hnswlib": version("hnswlib"),
            "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)}


def write_markdown(result: dict, path: Path) -> None:
    lines = ["# Nearest-neighbour index benchmark", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{result['machine']['memory_gb']} GB; Python {result['machine']['python']}, "
             f"numpy {result['machine']['numpy']}, faiss-cpu {result['machine']['faiss-cpu']}, "
             f"hnswlib {result['machine']['hnswlib']}. Load average (1 min) at start/end: "
             f"{result['load_start']} / {result['load_end']} (the machine is shared).", "",
             f"Queries: {result['queries']} single queries, one thread (BLAS and faiss OpenMP "
             f"set to 1 thread for queries), k={K}. Build threads: {result['build_threads']}. "
             "Latency p50/p99 is wall clock; 'CPU p99' is the thread's CPU time, which "
             "other processes on the machine do not inflate. Recall is against exact search "
             f"(the first row of each table, measured in the same run). Data: {result['data']}.",
             "", "Serving uses `reelrank AnnIndex` with its defaults: nlist = 4*sqrt(N), "
             "nprobe = ceil(0.08 * nlist) (at least 64), rerank = 10, i.e. the nprobe=102 row "
             "at 100k and the nprobe=320 row at 1M. The '(raw)' rows call the same faiss index "
             "and re-rank without the wrapper (ids, lock, exclusion), like for like with the "
             "other raw faiss and hnswlib rows.", ""]
    for size in result["sizes"]:
        lines += [f"## {size['items']:,} items, D={size['dim']}", "",
                  f"| backend | params | recall@{K} | p50 ms | p99 ms | CPU p99 ms | build s "
                  "| RSS growth MB | index MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in size["rows"]:
            if "add_1000_s" in r:
                continue
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
            lines.append(f"| {r['backend']} | {params} | {r[f'recall@{K}']} | {r['p50_ms']} | "
                         f"{r['p99_ms']} | {r['cpu_p99_ms']} | {_cell(r['build_s'])} | "
                         f"{_cell(r['rss_growth_mb'])} | {_cell(r['index_mb'])} |")
        lines += ["", f"Cheapest setting of each backend with recall@{K} >= {TARGET} "
                  "(by p50):", ""]
        for backend, best in cheapest(size["rows"]).items():
            if best is None:
                lines.append(f"- {backend}: none of the measured settings")
            else:
                params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
                lines.append(f"- {backend} ({params}): recall {best[f'recall@{K}']}, p50 "
                             f"{best['p50_ms']} ms, p99 {best['p99_ms']} ms, CPU p99 "
                             f"{best['cpu_p99_ms']} ms")
        for r in size["rows"]:
            if "add_1000_s" in r:
                lines += ["", f"AnnIndex updates: add 1,000 items {r['add_1000_s']} s, "
                          f"remove 1,000 items {r['remove_1000_s']} s."]
            if "always_k" in r:
                lines += ["", f"With `exclude` (300 seen ids, 100 of them from the exact top "
                          f"100): always {K} results: {r['always_k']}; an excluded id returned: "
                          f"{r['excluded_leaked']}."]
        lines.append("")
    path.write_text("\n".join(lines))


def cheapest(rows: list[dict]) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {}
    for r in rows:
        if "params" not in r or r.get("baseline") or "always_k" in r:
            continue
        best = out.setdefault(r["backend"], None)
        if r[f"recall@{K}"] >= TARGET and (best is None or r["p50_ms"] < best["p50_ms"]):
            out[r["backend"]] = r
    return out


def _cell(v) -> str:
    return "" if v is None else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vectors", type=Path, help="(N, D) float32 .npy item vectors")
    ap.add_argument("--query-vectors", type=Path, help="(Q, D) float32 .npy query vectors")
    # One: on a busy 2-core machine, faiss' OpenMP barriers make two threads slower than one.
    ap.add_argument("--build-threads", type=int, default=1)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=100)
    ap.add_argument("--hnsw-max-items", type=int, default=200_000)
    ap.add_argument("--hnswlib-max-items", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if (args.vectors is None) != (args.query_vectors is None):
        ap.error("--vectors and --query-vectors go together")

    command = f"python benchmarks/bench_index.py {shlex.join(sys.argv[1:])}".strip()
    result = {"command": command,
              "machine": machine(), "load_start": round(os.getloadavg()[0], 2),
              "queries": args.queries, "build_threads": args.build_threads, "sizes": []}
    if args.vectors is not None:
        all_items = np.load(args.vectors).astype(np.float32)
        all_queries = np.load(args.query_vectors).astype(np.float32)[: args.queries]
        result["data"] = f"{args.vectors.name} / {args.query_vectors.name}"
        for n in args.items:
            result["sizes"].append(bench_size(all_items[:n], all_queries, args))
    else:
        result["data"] = ("synthetic structured vectors (512 Zipf-sized topic clusters in a "
                          "rank-16 subspace + noise, log-normal norms sigma=0.35; queries mix "
                          f"1-3 topics), seed {args.seed}")
        for n in args.items:
            items, queries = structured_vectors(n, args.dim, args.queries, args.seed)
            result["sizes"].append(bench_size(items, queries, args))
    result["load_end"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out / "index.md")
    print(f"wrote {args.out / 'index.json'} and {args.out / 'index.md'}")


if __name__ == "__main__":
    main()
