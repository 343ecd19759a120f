"""Search latency: GET /api/v1/search/?q=... on Postgres holding 1,000,000 captions.

    .venv/bin/python -m bench.bench_search                     # 1M captions (generated once), 300 queries
    .venv/bin/python -m bench.bench_search --reuse             # keep the captions already generated
    .venv/bin/python -m bench.bench_search --captions 20000 --queries 40    # smoke run

Data: `manage.py generate_captions N` (synthetic Flickr8k-style captions, 3 per public image) into the
database `imgcap_bench_search`, then VACUUM ANALYZE (what autovacuum would have done on a live
database). The database is kept afterwards; `--reuse` skips generation when it already holds at
least N captions (`--drop` removes it at the end instead).

Queries (fixed seed): 1-3 consecutive content words from real Flickr8k captions (what people
type: mostly common words), rare Flickr8k words (3 occurrences or fewer in its 40,000 captions,
often absent from the synthetic data), and 1-3 words of the synthetic captions' own grammar
(always many matches). Each goes, one at a time, to the search endpoint of gunicorn (`-w 1`, production
settings) with token auth, as a signed-in user who owns none of the images (so every match is a
public image); the latency is the client's, from connecting to the last byte. `--warmup` queries
first, untimed. Latencies are also broken down by how many images match. Finally EXPLAIN ANALYZE
of the SQL one search runs (captured from the selector) shows whether the GIN index is used.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections import Counter

from bench import platform_env as pe
from bench.timing import write_results

GOAL_P95_MS = 50.0
# The 'english' text search configuration drops these; a query made only of them finds nothing.
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has he her his in into is it its of on or she that the their "  # noqa: SIM905
    "them there they this to was were will with while".split()
)
BUCKETS = [(0, 0, "0 matches"), (1, 999, "1-999"), (1000, 99_999, "1k-99k"), (100_000, None, ">=100k")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1_000_000, help="captions in the database")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10, help="untimed queries first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", default="imgcap_bench_search")
    parser.add_argument("--reuse", action="store_true", help="keep the database if it has enough captions")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--redis-db", type=int, default=pe.BENCH_REDIS_DB)
    args = parser.parse_args(argv)

    env_start = pe.environment()
    pe.print_environment(env_start)
    work = pe.work_dir("search")
    env = pe.bench_env(db_name=args.db, redis_db=args.redis_db, work_dir=work)

    generation = None
    have = _caption_count(args.db) if args.reuse and pe.database_exists(args.db) else None
    if have is not None and have >= args.captions:
        print(f"reusing {args.db}: {have:,} captions", flush=True)
        pe.setup_django(env)
    else:
        if have is not None:
            print(f"{args.db} has {have:,} captions, fewer than {args.captions:,}: generating again")
        pe.create_database(args.db)
        pe.setup_django(env)
        pe.migrate()
        generation = _generate(env, args.db, args.captions)
        have = _caption_count(args.db)

    try:
        _, token = pe.make_user("bench-searcher")
        queries = build_queries(args.queries + args.warmup, args.seed)
        warm, timed = queries[: args.warmup], queries[args.warmup :]
        with pe.Gunicorn(env, work / "gunicorn.log", workers=1) as web:
            for _kind, q in warm:
                _search(web.port, token, q)
            rows = []
            for kind, q in timed:
                seconds, count = _search(web.port, token, q)
                rows.append({"kind": kind, "q": q, "ms": round(seconds * 1000, 2), "count": count})
        plans = explain(["dog", "dog running grass", random.Random(args.seed).choice(_rare_words())])
    finally:
        if args.drop:
            pe.drop_database(args.db)
        shutil.rmtree(work, ignore_errors=True)

    overall = pe.summarize([r["ms"] / 1000 for r in rows])
    by_kind = {
        kind: pe.summarize([r["ms"] / 1000 for r in rows if r["kind"] == kind])
        for kind in sorted({r["kind"] for r in rows})
    }
    by_matches = {}
    for low, high, label in BUCKETS:
        chosen = [r["ms"] / 1000 for r in rows if r["count"] >= low and (high is None or r["count"] <= high)]
        by_matches[label] = pe.summarize(chosen)

    print(f"\n{have:,} captions; {len(rows)} queries through GET /api/v1/search/ (page size 50)")
    print(f"all queries: {pe.fmt_latency(overall)}")
    for kind, stats in by_kind.items():
        print(f"  {kind:<14} {pe.fmt_latency(stats)}")
    print("by number of matching images:")
    for label, stats in by_matches.items():
        print(f"  {label:<14} {pe.fmt_latency(stats)}")
    slowest = sorted(rows, key=lambda r: r["ms"], reverse=True)[:5]
    print("slowest: " + "; ".join(f"{r['q']!r} {r['ms']:.0f} ms ({r['count']:,} images)" for r in slowest))
    met = overall.get("p95_ms", float("inf")) < GOAL_P95_MS
    print(f"p95 {overall.get('p95_ms')} ms (goal < {GOAL_P95_MS:.0f} ms: {'met' if met else 'NOT met'})")
    for plan in plans:  # one query's plans here; every plan is in the JSON
        if plan["q"] == plans[0]["q"] and plan["what"] != "snippets":
            print(f"\nEXPLAIN ANALYZE for q={plan['q']!r} ({plan['what']}):\n{plan['plan']}")
    gin = all(p["uses_gin"] for p in plans if p["what"] != "snippets")
    print(f"\nGIN index captions_caption_search_gin used by every matching query: {gin}")

    path = write_results(
        "search",
        {
            "what": "GET /api/v1/search/?q= via gunicorn -w 1, sequential, token auth",
            "args": vars(args),
            "environment_start": env_start,
            "environment_end": pe.environment(),
            "captions": have,
            "generation": generation,
            "latency": overall,
            "by_kind": by_kind,
            "by_matches": by_matches,
            "goal_p95_ms": GOAL_P95_MS,
            "gin_index_used": gin,
            "plans": plans,
            "queries": rows,
        },
    )
    print(f"-> {path}")
    return 0


def _caption_count(db: str) -> int | None:
    import psycopg2

    conn = psycopg2.connect(host=pe.PG_HOST, port=pe.PG_PORT, user=pe.PG_USER, dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM captions_caption")
            return int(cur.fetchone()[0])
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def _generate(env: dict[str, str], db: str, count: int) -> dict:
    """CORE's `manage.py generate_captions N`, timed, then VACUUM ANALYZE."""
    print(f"generating {count:,} captions with manage.py generate_captions…", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "generate_captions", str(count)],
        cwd=pe.REPO,
        env={**os.environ, **env},
        check=True,
    )
    generate_s = time.perf_counter() - started
    print(
        f"generated in {generate_s:.1f} s ({count / generate_s:,.0f} captions/s); VACUUM ANALYZE…", flush=True
    )
    import psycopg2

    started = time.perf_counter()
    conn = psycopg2.connect(host=pe.PG_HOST, port=pe.PG_PORT, user=pe.PG_USER, dbname=db)
    conn.autocommit = True  # VACUUM cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) captions_caption")
            cur.execute("VACUUM (ANALYZE) captions_image")
    finally:
        conn.close()
    analyze_s = time.perf_counter() - started
    print(f"VACUUM ANALYZE in {analyze_s:.1f} s", flush=True)
    return {
        "seconds": round(generate_s, 1),
        "captions_per_s": round(count / generate_s),
        "vacuum_analyze_s": round(analyze_s, 1),
    }


def _search(port: int, token: str, q: str) -> tuple[float, int]:
    path = "/api/v1/search/?" + urllib.parse.urlencode({"q": q})
    status, _, body, seconds = pe.request(port, "GET", path, headers={"Authorization": f"Token {token}"})
    if status != 200:
        raise SystemExit(f"search {q!r} answered {status}: {body[:500]!r}")
    return seconds, int(json.loads(body)["count"])


# --- queries ------------------------------------------------------------------------------------------


def _real_captions() -> list[list[str]]:
    from ml.data import load_dataset

    dataset = load_dataset("flickr8k", pe.FLICKR8K)
    return [re.findall(r"[a-z]+", r.caption.lower()) for r in dataset.records]


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in STOP_WORDS and len(w) > 1]


_RARE: list[str] = []


def _rare_words() -> list[str]:
    if not _RARE:
        counts = Counter(w for words in _real_captions() for w in _content(words))
        _RARE.extend(sorted(w for w, n in counts.items() if n <= 3 and len(w) > 3))
    return _RARE


def _phrase(rng: random.Random, words: list[str]) -> str | None:
    content = _content(words)
    if not content:
        return None
    size = min(len(content), rng.choice([1, 1, 2, 2, 3]))
    start = rng.randrange(len(content) - size + 1)
    return " ".join(content[start : start + size])


def build_queries(count: int, seed: int) -> list[tuple[str, str]]:
    """(kind, query) pairs: 40% real common phrases, 20% rare real words, 40% synthetic-grammar phrases."""
    from captions.synthetic import synthetic_caption

    rng = random.Random(seed)
    real = _real_captions()
    rare = _rare_words()
    queries: list[tuple[str, str]] = []
    while len(queries) < count:
        roll = rng.random()
        if roll < 0.4:
            q = _phrase(rng, rng.choice(real))
            kind = "real common"
        elif roll < 0.6:
            q = rng.choice(rare)
            if rng.random() < 0.3:  # a rare word next to a common one
                q = f"{(_phrase(rng, rng.choice(real)) or 'dog').split()[0]} {q}"
            kind = "real rare"
        else:
            q = _phrase(rng, re.findall(r"[a-z]+", synthetic_caption(rng)))
            kind = "synthetic"
        if q:
            queries.append((kind, q))
    return queries


# --- EXPLAIN ------------------------------------------------------------------------------------------


def explain(queries: list[str]) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of every full-text SQL statement one search (count + first page) runs."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from captions import selectors

    user = get_user_model().objects.get(username="bench-searcher")
    plans = []
    for q in queries:
        captured: list[tuple[str, tuple]] = []

        def capture(execute, sql, params, many, context, captured=captured):
            if "websearch_to_tsquery" in sql:
                captured.append((sql, params))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(capture):
            results = selectors.search(user, q)
            results.count()
            list(results[0:50])
        for sql, params in captured:
            what = "count" if "COUNT(" in sql else "page" if "DISTINCT ON" in sql else "snippets"
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            plans.append(
                {"q": q, "what": what, "plan": plan, "uses_gin": "captions_caption_search_gin" in plan}
            )
    return plans


if __name__ == "__main__":
    raise SystemExit(main())
