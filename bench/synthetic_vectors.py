"""What the worker stores beside captions, for the synthetic images of bench_search: vectors, tags and
perceptual hashes, made from real photos so that pgvector's HNSW indexes see real distributions.

    .venv/bin/python -m bench.synthetic_vectors --db imgcap_bench_search     # after bench.synthetic_captions

Per image the worker stores the encoder's pooled features (halfvec 1280: similar images, the keywords'
list), their projection into the sentence space (vector 384: the picture list), the shown caption's
sentence embedding (vector 384: the meaning list), a perceptual hash (bit 64: near copies) and up to five
concept tags. Captioning 333,334 images would take most of a day on this machine, so instead:

* `--photos` (2,000) Flickr8k train photos go through the shipped model's encoder once (features,
  projection, tags; the hash from the picture), cached in ~/.cache/imgcap/bench/;
* each synthetic image takes one of them at random, its features moved by Gaussian noise (NOISE times
  each dimension's spread over the photos, kept non-negative like the encoder's), the projection of
  those features, the photo's tags and its hash with 0-3 bits flipped;
* its caption embedding is one of `--pool` (2,000) synthetic captions embedded with all-MiniLM-L6-v2,
  moved by noise too (the real embedder does about 36 captions/s here: 333,334 would take 2.5 hours).

The HNSW indexes are dropped before the rows are filled (so that filling does not insert into them one
row at a time) and built again afterwards, exactly as migrated, each timed, with their sizes.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from pathlib import Path

import numpy as np

from bench import platform_env as pe
from bench.synthetic_captions import synthetic_caption

NOISE = 0.3  # of each feature's spread over the real photos: a copy stays nearest its own photo
CAPTION_NOISE = 0.02  # per dimension of a unit 384-d vector (about 0.4 in norm before renormalising)
COPY_ROWS = 5_000
MAINTENANCE_WORK_MEM = "4GB"  # an HNSW graph built in memory is many times faster than one spilled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--photos", type=int, default=2000, help="real Flickr8k photos the vectors come from")
    parser.add_argument("--pool", type=int, default=2000, help="synthetic captions really embedded")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None, help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    report = fill_vectors(args.db, photos=args.photos, pool=args.pool, model=args.model, seed=args.seed)
    print(json.dumps(report, indent=2))
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2))
    return 0


def fill_vectors(db: str, *, photos: int, pool: int, model: str | None, seed: int) -> dict:
    """Fill every image of `db` that has no features yet; returns timings and index sizes."""
    started = time.perf_counter()
    real = real_photos(photos, model)
    captions = caption_pool(pool, seed)
    prepared_s = time.perf_counter() - started
    conn = pe.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = %s", [MAINTENANCE_WORK_MEM])
            indexes = _drop_hnsw_indexes(cur)
            conn.commit()
            started = time.perf_counter()
            filled, tags = _fill(cur, real, captions, seed)
            conn.commit()
            fill_s = time.perf_counter() - started
            built = [_build(cur, name, sql) for name, sql in indexes]
            conn.commit()
        conn.autocommit = True  # VACUUM cannot run inside a transaction
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.execute("VACUUM (ANALYZE) captions_image")
            cur.execute("VACUUM (ANALYZE) captions_imagetag")
            vacuum_s = time.perf_counter() - started
            cur.execute(
                "SELECT pg_total_relation_size('captions_image'), pg_total_relation_size('captions_imagetag')"
            )
            image_bytes, tag_bytes = cur.fetchone()
    finally:
        conn.close()
    return {
        "real_photos": len(real["features"]),
        "caption_pool": len(captions),
        "prepare_s": round(prepared_s, 1),
        "images_filled": filled,
        "tags": tags,
        "fill_s": round(fill_s, 1),
        "indexes": built,
        "vacuum_analyze_s": round(vacuum_s, 1),
        "image_table_mb": round(image_bytes / 2**20, 1),
        "tag_table_mb": round(tag_bytes / 2**20, 1),
    }


def real_photos(count: int, model: str | None) -> dict:
    """Features [N, 1280], tags and hashes of the first `count` Flickr8k train photos through `model`'s
    encoder (cached per model version), and the model's projection into the sentence space."""
    from ml.captioner import load_captioner
    from ml.concepts import top_tags
    from ml.data import load_dataset

    captioner = load_captioner(model)
    cache = Path.home() / ".cache" / "imgcap" / "bench" / f"real_photos-{captioner.version}-{count}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return {
                "features": data["features"],
                "hashes": [str(h) for h in data["hashes"]],
                "tags": json.loads(str(data["tags"])),
                "projection": captioner.image_text,
            }
    from PIL import Image as PILImage

    from captions.duplicates import perceptual_hashes

    paths = load_dataset("flickr8k", pe.FLICKR8K, split="train").images()[:count]
    features, tags, hashes = [], [], []
    for start in range(0, len(paths), 32):
        chunk = paths[start : start + 32]
        feats, concepts, _, errors = captioner.encoder.encode_readable_with_concepts(chunk)
        if errors:
            raise SystemExit(f"unreadable Flickr8k photos: {errors}")
        features.append(np.asarray(feats, np.float32).mean(axis=1))
        tags += [[[t.label, round(t.score, 4)] for t in image_tags] for image_tags in top_tags(concepts)]
        for path in chunk:
            with PILImage.open(path) as picture:
                hashes.append(perceptual_hashes(picture)[0])
        print(f"encoded {start + len(chunk)}/{len(paths)} real photos", flush=True)
    pooled = np.concatenate(features)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=pooled, hashes=np.array(hashes), tags=np.array(json.dumps(tags)))
    return {"features": pooled, "hashes": hashes, "tags": tags, "projection": captioner.image_text}


def caption_pool(count: int, seed: int) -> np.ndarray:
    """Sentence embeddings [count, 384] of `count` synthetic captions (cached)."""
    cache = Path.home() / ".cache" / "imgcap" / "bench" / f"caption_pool-{count}-{seed}.npy"
    if cache.is_file():
        return np.load(cache)
    from ml.text_embedding import shared_embedder

    rng = random.Random(seed)
    texts = [synthetic_caption(rng) for _ in range(count)]
    print(f"embedding {count} synthetic captions…", flush=True)
    vectors = shared_embedder().embed(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def _drop_hnsw_indexes(cur) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'captions_image' "
        "AND indexdef ILIKE '%% USING hnsw %%' ORDER BY indexname"
    )
    indexes = [(str(name), str(sql)) for name, sql in cur.fetchall()]
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    return indexes


def _build(cur, name: str, sql: str) -> dict:
    print(f"building {name}…", flush=True)
    started = time.perf_counter()
    cur.execute(sql)
    seconds = time.perf_counter() - started
    cur.execute("SELECT pg_relation_size(%s::regclass)", [name])
    size = int(cur.fetchone()[0])
    print(f"  {seconds:.1f} s, {size / 2**20:.1f} MB", flush=True)
    return {"name": name, "seconds": round(seconds, 1), "mb": round(size / 2**20, 1)}


def _fill(cur, real: dict, captions: np.ndarray, seed: int) -> tuple[int, int]:
    """Vectors, hashes and tags for every image without features, through COPY; (images, tags) filled."""
    cur.execute(
        "SELECT i.id, c.id, c.model_version_id FROM captions_image i "
        "JOIN captions_caption c ON c.image_id = i.id AND c.rank = 0 AND c.source = 'model' "
        "WHERE i.features IS NULL ORDER BY i.id"
    )
    rows = cur.fetchall()
    cur.execute(
        "CREATE TEMP TABLE bench_vectors (id integer, caption_id integer, version_id integer, "
        "features halfvec(1280), visual vector(384), caption vector(384), hash bit(64)) ON COMMIT DROP"
    )
    rng = np.random.default_rng(seed)
    features, hashes, tags = real["features"], real["hashes"], real["tags"]
    spread = features.std(axis=0)
    tag_buffer, tag_count = io.StringIO(), 0
    for start in range(0, len(rows), COPY_ROWS):
        chunk = rows[start : start + COPY_ROWS]
        base = rng.integers(0, len(features), len(chunk))
        noise = rng.standard_normal((len(chunk), features.shape[1])) * NOISE * spread
        moved = np.maximum(features[base] + noise, 0)
        visual = real["projection"].embed(moved)
        meaning = captions[rng.integers(0, len(captions), len(chunk))]
        meaning = meaning + rng.standard_normal(meaning.shape) * CAPTION_NOISE
        meaning /= np.linalg.norm(meaning, axis=1, keepdims=True)
        buffer = io.StringIO()
        for row, b, f, v, m in zip(chunk, base, moved, visual, meaning, strict=True):
            image_id, caption_id, version_id = row
            bits = list(hashes[b])
            for flip in rng.integers(0, 64, rng.integers(0, 4)):
                bits[flip] = "1" if bits[flip] == "0" else "0"
            buffer.write(
                f"{image_id}\t{caption_id}\t{version_id}\t{_literal(f, 4)}\t{_literal(v, 5)}\t"
                f"{_literal(m, 5)}\t{''.join(bits)}\n"
            )
            for rank, (label, score) in enumerate(tags[b]):
                tag_buffer.write(f"{image_id}\t{version_id}\t{label}\t{score}\t{rank}\n")
                tag_count += 1
        buffer.seek(0)
        cur.copy_expert("COPY bench_vectors FROM STDIN", buffer)
        print(f"prepared {start + len(chunk):,}/{len(rows):,} images", flush=True)
    cur.execute(
        """
        UPDATE captions_image i SET features = b.features, visual_embedding = b.visual,
               caption_embedding = b.caption, perceptual_hash = b.hash, embedded_caption_id = b.caption_id,
               features_model_version_id = b.version_id
        FROM bench_vectors b WHERE i.id = b.id
        """
    )
    tag_buffer.seek(0)
    cur.copy_expert(
        "COPY captions_imagetag (image_id, model_version_id, label, score, rank) FROM STDIN", tag_buffer
    )
    return len(rows), tag_count


def _literal(vector: np.ndarray, decimals: int) -> str:
    """pgvector's text form, rounded (the database stores float16 or float32 anyway)."""
    return "[" + ",".join(map(str, np.round(vector.astype(np.float64), decimals).tolist())) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
