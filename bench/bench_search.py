"""Search latency: GET /api/v1/search/?q=... (words, meaning, picture, tags fused) and "more like this"
(GET /api/v1/images/ID/similar/) on Postgres holding 1,000,000 captions.

    .venv/bin/python -m bench.bench_search                     # 1M captions (generated once), 300 queries
    .venv/bin/python -m bench.bench_search --reuse             # keep the captions already generated
    .venv/bin/python -m bench.bench_search --captions 20000 --queries 40 --similar 20   # smoke run

Data: `python -m bench.synthetic_captions N` (synthetic Flickr8k-style captions, 3 per public image) into the
database `imgcap_bench_search`, then VACUUM ANALYZE (what autovacuum would have done on a live
database); then `python -m bench.synthetic_vectors` gives every image what the worker stores beside
its captions (pooled features, their projection, the caption's embedding, a perceptual hash, concept
tags), made from real Flickr8k photos, and builds the HNSW indexes again, timed, with their sizes. The
database is kept afterwards; `--reuse` skips generation when it already holds at least N captions
(`--drop` removes it at the end instead).

Queries (fixed seed): 1-3 consecutive content words from real Flickr8k captions (what people
type: mostly common words), rare Flickr8k words (3 occurrences or fewer in its 40,000 captions,
often absent from the synthetic data), 1-3 words of the synthetic captions' own grammar (always many
matches) and whole real Flickr8k captions (what search by meaning is for). Each goes, one at a time, to
the search endpoint of gunicorn (`-w 1`, production settings) with token auth, as a signed-in user who
owns none of the images (so every match is a public image); the latency is the client's, from
connecting to the last byte, for the first page (the API's default page size). `--warmup` queries
first, untimed. Latencies are also broken down by how many images truly match: the search caps its
count (at the images of the newest IMGCAP_SEARCH_CANDIDATES matching captions), so after the timed run
each distinct query is counted once more with a plain COUNT(DISTINCT image) over every match, untimed.
Then `--similar` random images' "more like this", timed the same way. Finally EXPLAIN (ANALYZE,
BUFFERS) of each full-text SQL statement one search runs (captured from the selector) for a common and
a rare query, each labelled by the search step it is and whether the GIN index appears in its plan.
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
from pathlib import Path

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
    parser.add_argument("--warmup", type=int, default=30, help="untimed queries first")
    parser.add_argument("--similar", type=int, default=300, help="'more like this' requests timed")
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
        pe.migrate()  # the code may have migrations the database has not had yet
    else:
        if have is not None:
            print(f"{args.db} has {have:,} captions, fewer than {args.captions:,}: generating again")
        pe.create_database(args.db)
        pe.setup_django(env)
        pe.migrate()
        generation = _generate(env, args.db, args.captions)
        have = _caption_count(args.db)
    # How the vectors and their indexes were built: now, or by the run that built them (kept beside).
    vectors = _fill_vectors(env, args.db) if _images_without_vectors(args.db) else _vectors_report(args.db)

    try:
        _, token = pe.make_user("bench-searcher")
        queries = build_queries(args.queries + args.warmup, args.seed)
        warm, timed = queries[: args.warmup], queries[args.warmup :]
        with pe.Gunicorn(env, work / "gunicorn.log", workers=1) as web:
            for _kind, q in warm:
                _search(web.port, token, q)
            rows = []
            for kind, q in timed:
                seconds, body = _search(web.port, token, q)
                rows.append(
                    {
                        "kind": kind,
                        "q": q,
                        "ms": round(seconds * 1000, 2),
                        "count": body["count"],  # capped: see "capped"
                        "capped": body["capped"],
                    }
                )
            similar = _time_similar(web.port, token, args.similar, args.seed)
        print("counting every query's matching images (untimed)…", flush=True)
        matches = true_matches(sorted({r["q"] for r in rows}))
        for row in rows:
            row["matches"] = matches[row["q"]]
        # Common: a word in a quarter of the captions. Rare: the timed query with the fewest matches
        # (some), so that the plans show the search's GIN step finding them.
        found = sorted((r["matches"], r["q"]) for r in rows if r["matches"])
        common, rare = "dog", found[0][1] if found else random.Random(args.seed).choice(_rare_words())
        plans = explain([common, rare])
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
        chosen = [
            r["ms"] / 1000 for r in rows if r["matches"] >= low and (high is None or r["matches"] <= high)
        ]
        by_matches[label] = pe.summarize(chosen)
    from captions.api.pagination import SearchPagination  # Django is set up by now

    page_size = SearchPagination.page_size

    print(f"\n{have:,} captions; {len(rows)} queries through GET /api/v1/search/ (page size {page_size})")
    print(f"all queries: {pe.fmt_latency(overall)}")
    for kind, stats in by_kind.items():
        print(f"  {kind:<14} {pe.fmt_latency(stats)}")
    print("by number of images that match (every match counted, not the capped count):")
    for label, stats in by_matches.items():
        print(f"  {label:<14} {pe.fmt_latency(stats)}")
    print(f"capped answers: {sum(r['capped'] for r in rows)} of {len(rows)}")
    slowest = sorted(rows, key=lambda r: r["ms"], reverse=True)[:5]
    print("slowest: " + "; ".join(f"{r['q']!r} {r['ms']:.0f} ms ({r['matches']:,} images)" for r in slowest))
    met = overall.get("p95_ms", float("inf")) < GOAL_P95_MS
    print(f"p95 {overall.get('p95_ms')} ms (goal < {GOAL_P95_MS:.0f} ms: {'met' if met else 'NOT met'})")
    similar_stats = pe.summarize([r["ms"] / 1000 for r in similar])
    similar_met = similar_stats.get("p95_ms", float("inf")) < GOAL_P95_MS
    verdict = "met" if similar_met else "NOT met"
    print(
        f"similar images (GET /api/v1/images/ID/similar/, {len(similar)} images): "
        f"{pe.fmt_latency(similar_stats)} (goal p95 < {GOAL_P95_MS:.0f} ms: {verdict})"
    )
    if vectors is not None:
        for index in vectors["indexes"]:
            print(f"index {index['name']}: built in {index['seconds']} s, {index['mb']} MB")
    for q, label in ((common, "common"), (rare, "rare")):
        print(f"\nSQL of one search for the {label} query {q!r} ({matches_of(plans, q)}), in order:")
        for plan in (p for p in plans if p["q"] == q):
            gin = "GIN index used" if plan["uses_gin"] else "no GIN index"
            print(f"\n-- {plan['what']}: {plan['execution_ms']} ms, {gin}\n{plan['plan']}")

    path = write_results(
        "search",
        {
            "what": "GET /api/v1/search/?q= via gunicorn -w 1, sequential, token auth",
            "args": vars(args),
            "environment_start": env_start,
            "environment_end": pe.environment(),
            "captions": have,
            "generation": generation,
            "vectors": vectors,
            "latency": overall,
            "by_kind": by_kind,
            "by_matches": by_matches,
            "goal_p95_ms": GOAL_P95_MS,
            "page_size": page_size,
            "explained": {"common": common, "rare": rare},
            "plans": plans,
            "queries": rows,
            "similar": {"latency": similar_stats, "requests": similar},
        },
    )
    print(f"-> {path}")
    return 0


def _count(db: str, sql: str) -> int:
    """The one number `sql` selects on `db`."""
    conn = pe.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _caption_count(db: str) -> int | None:
    """Captions in `db`; None when it has no captions table (not migrated)."""
    import psycopg2

    try:
        return _count(db, "SELECT count(*) FROM captions_caption")
    except psycopg2.Error:
        return None


def _generate(env: dict[str, str], db: str, count: int) -> dict:
    """`python -m bench.synthetic_captions N`, timed, then VACUUM ANALYZE."""
    print(f"generating {count:,} captions with bench/synthetic_captions.py…", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.synthetic_captions", str(count)],
        cwd=pe.REPO,
        env={**os.environ, **env},
        check=True,
    )
    generate_s = time.perf_counter() - started
    print(
        f"generated in {generate_s:.1f} s ({count / generate_s:,.0f} captions/s); VACUUM ANALYZE…", flush=True
    )

    started = time.perf_counter()
    conn = pe.connect(db)
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


def _images_without_vectors(db: str) -> int:
    return _count(db, "SELECT count(*) FROM captions_image WHERE features IS NULL")


def _vectors_report_path(db: str) -> Path:
    return pe.REPO / "var" / "bench" / f"synthetic_vectors-{db}.json"


def _fill_vectors(env: dict[str, str], db: str) -> dict:
    """`python -m bench.synthetic_vectors`: what the worker would have stored beside the captions, and the
    HNSW indexes built over it (timed, with their sizes)."""
    print("filling vectors, tags and hashes with bench/synthetic_vectors.py…", flush=True)
    report = _vectors_report_path(db)
    report.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bench.synthetic_vectors", "--db", db, "--report", str(report)],
        cwd=pe.REPO,
        env={**os.environ, **env},
        check=True,
    )
    return json.loads(report.read_text())


def _vectors_report(db: str) -> dict | None:
    """The report of the run that filled `db`'s vectors, if it is still there."""
    try:
        return json.loads(_vectors_report_path(db).read_text())
    except (OSError, ValueError):
        return None


def _time_similar(port: int, token: str, count: int, seed: int) -> list[dict]:
    """'More like this' for `count` random images (after two untimed ones)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM captions_image WHERE features IS NOT NULL")
        low, high = cursor.fetchone()
    if low is None:
        return []
    rng = random.Random(seed)
    rows = []
    for n in range(count + 2):
        image_id = rng.randint(low, high)
        path = f"/api/v1/images/{image_id}/similar/"
        status, _, body, seconds = pe.request(port, "GET", path, headers={"Authorization": f"Token {token}"})
        if status != 200:
            raise SystemExit(f"similar {image_id} answered {status}: {body[:500]!r}")
        if n >= 2:
            rows.append({"image": image_id, "ms": round(seconds * 1000, 2), "hits": len(json.loads(body))})
    return rows


def _search(port: int, token: str, q: str) -> tuple[float, dict]:
    path = "/api/v1/search/?" + urllib.parse.urlencode({"q": q})
    status, _, body, seconds = pe.request(port, "GET", path, headers={"Authorization": f"Token {token}"})
    if status != 200:
        raise SystemExit(f"search {q!r} answered {status}: {body[:500]!r}")
    return seconds, json.loads(body)


def true_matches(queries: list[str]) -> dict[str, int]:
    """Every image the bench user can see with a caption matching each query: the number the search
    would count without its cap (one COUNT over every match per query; slow for common words)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    user = get_user_model().objects.get(username="bench-searcher")
    sql = """
        SELECT count(DISTINCT c.image_id) FROM captions_caption c
        JOIN captions_image i ON i.id = c.image_id
        WHERE c.search_vector @@ websearch_to_tsquery('english', %s)
          AND (i.visibility = 'public' OR i.owner_id = %s)
    """
    counts = {}
    with connection.cursor() as cursor:
        for q in queries:
            cursor.execute(sql, [q, user.pk])
            counts[q] = int(cursor.fetchone()[0])
    return counts


def matches_of(plans: list[dict], q: str) -> str:
    found = next((p["matches"] for p in plans if p["q"] == q), None)
    return f"{found:,} matching captions" if found is not None else "?"


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
    """(kind, query) pairs: 35% real common phrases, 15% rare real words, 30% synthetic-grammar phrases,
    20% whole real captions (what search by meaning is for)."""
    from bench.synthetic_captions import synthetic_caption

    rng = random.Random(seed)
    real = _real_captions()
    rare = _rare_words()
    queries: list[tuple[str, str]] = []
    while len(queries) < count:
        roll = rng.random()
        if roll < 0.35:
            q = _phrase(rng, rng.choice(real))
            kind = "real common"
        elif roll < 0.5:
            q = rng.choice(rare)
            if rng.random() < 0.3:  # a rare word next to a common one
                q = f"{(_phrase(rng, rng.choice(real)) or 'dog').split()[0]} {q}"
            kind = "real rare"
        elif roll < 0.8:
            q = _phrase(rng, re.findall(r"[a-z]+", synthetic_caption(rng)))
            kind = "synthetic"
        else:
            q = " ".join(rng.choice(real))
            kind = "sentence"
        if q:
            queries.append((kind, q))
    return queries


# --- EXPLAIN ------------------------------------------------------------------------------------------


def explain(queries: list[str]) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of every SQL statement that one search (count + first page, as the API
    asks) runs with the query's text, in order, each labelled by the search step it is (_statement)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from captions import selectors
    from captions.api.pagination import SearchPagination

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
            list(results[0 : SearchPagination.page_size])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM captions_caption "
                "WHERE search_vector @@ websearch_to_tsquery('english', %s)",
                [q],
            )
            matching = int(cursor.fetchone()[0])
        for sql, params in captured:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            executed = re.search(r"Execution Time: ([\d.]+) ms", plan)
            plans.append(
                {
                    "q": q,
                    "matches": matching,
                    "what": _statement(sql),
                    "execution_ms": float(executed.group(1)) if executed else None,
                    "uses_gin": "captions_caption_search_gin" in plan,
                    "sql": sql,
                    "params": params,
                    "plan": plan,
                }
            )
    return plans


def _statement(sql: str) -> str:
    """Which step of the lexical search (LexicalSearch) a captured statement is (matched on its SQL text)."""
    from captions.search.lexical import LexicalSearch as _Postgres

    if "ts_headline(" in sql:
        return "snippets"
    if "numnode(" in sql:
        return "bounds (query nodes, newest caption id)"
    if _Postgres._GIN in sql:
        return "candidates: GIN index below an id"
    if _Postgres._SCAN in sql:
        return "candidates: id-range window scan"
    return "other"


if __name__ == "__main__":
    raise SystemExit(main())
