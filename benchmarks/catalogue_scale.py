"""identify at Happywhale's size: describing, the descriptor index and a query, side by side.

Usage:
    python benchmarks/catalogue_scale.py [--sizes 3352 10000 51033] [--queries 20]
        [--work DIR] [--right-whales data/right_whales]

For each size a synthetic catalogue of Happywhale's shape (``synth``: its species and photos
per individual, up to its 400, ``individuals = 15,587 x size / 51,033``) is made once in
``--work`` (kept: a rerun reuses it, and resumes a describe that was killed). Then, each in a
process of its own (its peak memory is that process's): describing the catalogue as identify
does (the catalogue profile's model, EfficientNet-Lite0 at 224 px with flip TTA and a 512-d
embedding, and the fused head's RootSIFT), into the catalogue's caches, chunk by chunk; then
for each descriptor index (FLANN, today's; faiss' 8-bit inverted file) its build time and the
seconds per query photo of the fused head's matching (read and describe the photo, embedding
similarities, LNBNN over the whole catalogue, the geometric check of its shortlist's photos:
``matching.candidate_pairs`` with the head's default settings, as ``identify`` runs it).
The embedding model's weights are ImageNet's with an untrained projection: speed and memory
are a trained model's, its answers are not (accuracy is measured on the right whales).

``--right-whales DIR`` (a ``prepare``d folder) adds the accuracy of LNBNN alone, the local
half of the fused head, over the right whales' catalogue for its test photos of known whales:
exact search (faiss' flat index), FLANN and faiss' inverted file, top-1 and MAP@5.
A projection to 500,000 photos ends the table, from the per-photo figures measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HAPPYWHALE_PHOTOS, HAPPYWHALE_INDIVIDUALS = 51_033, 15_587
ENGINES = ("flann", "faiss")


def catalogue_for(size: int, work: Path) -> Path:
    """The synthetic catalogue of about ``size`` training photos (made once): Happywhale's
    shape, the individuals scaled until the photos are about ``size``."""
    from whaleutils.datasets import synth

    config = happywhale_shape(size)
    folder = work / f"happywhale_shape_{size}"
    card = synth.generate(folder, config, workers=os.cpu_count() or 1)
    if "seconds" in card:
        print(f"  made {folder}: {card['train_images']:,} photos in {card['seconds']:.0f} s")
    return folder


def happywhale_shape(size: int):
    """``synth``'s config for about ``size`` training photos of Happywhale's shape: its
    species and photos per individual (up to its 400), the individuals scaled to the size."""
    from whaleutils.datasets import synth

    def config(individuals):
        return synth.SynthConfig(seed=0, individuals=individuals, max_photos=400, test_ratio=0.01)

    chosen = config(max(5, round(HAPPYWHALE_INDIVIDUALS * size / HAPPYWHALE_PHOTOS)))
    for _ in range(2):  # rescaled by the photos it gives
        photos = int((synth.plan_labels(chosen)["split"] == "train").sum())
        chosen = config(max(5, round(chosen.individuals * size / photos)))
    return chosen


def embedder_of_the_catalogue_profile():
    from whaleutils.catalogue import catalogue_index
    from whaleutils.training import models

    _, model = models.build_model("efficientnet-lite0", 1000, 224, "imagenet", embedding_dim=512)
    return catalogue_index.PhotoEmbedder(model, 224, tta="flip", fingerprint="benchmark-lite0")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def describe(catalogue: Path, cache: Path) -> dict:
    """Describe the catalogue into ``cache`` (resuming what is there)."""
    from whaleutils.catalogue import catalogue_index
    from whaleutils.retrieval import matching

    embedder = embedder_of_the_catalogue_profile()
    started = time.perf_counter()
    index = catalogue_index.CatalogueIndex.build(
        catalogue, embedder, cache, features=matching.LocalSettings().features, engine="flann",
        progress=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    photos = len(index.table)
    return {
        "photos": photos,
        "individuals": int(index.table["individual_id"].nunique()),
        "descriptors": len(index.descriptors),
        "described": index.embedded,
        "describe_s_per_photo": seconds / max(index.embedded, 1),
        "describe_peak_gb": peak_gb(),
    }


def match(catalogue: Path, cache: Path, engine: str, queries: int) -> dict:
    """Build ``engine``'s index over the cached catalogue and time the fused head's matching
    of ``queries`` test photos, one at a time."""
    import numpy as np

    from whaleutils.catalogue import catalogue_index
    from whaleutils.retrieval import matching

    embedder = embedder_of_the_catalogue_profile()
    settings = matching.LocalSettings()
    started = time.perf_counter()  # the caches read, the index built: identify's start
    index = catalogue_index.CatalogueIndex.build(
        catalogue, embedder, cache, features=settings.features, engine=engine
    )
    build_seconds = time.perf_counter() - started
    descriptors = index.descriptors
    names = sorted(p.name for p in (catalogue / "test_images").iterdir())[:queries]
    times, lnbnn_times = [], []
    for name in names:
        began = time.perf_counter()
        read = embedder.read([catalogue / "test_images" / name], [None], features=settings.features)
        scores = matching.photo_similarities(read.embeddings, index.embeddings)
        similarities = matching.individual_maxima(scores, index.labels, descriptors.individuals)
        lnbnn_began = time.perf_counter()
        descriptors.lnbnn(read.features[0], settings.lnbnn_k)
        lnbnn_times.append(time.perf_counter() - lnbnn_began)
        matching.candidate_pairs(
            [name], read.features, index.features, index.labels, similarities, None,
            settings.shortlist, descriptors, verify_photos=settings.verify_photos,
            photo_scores=scores, **settings.lnbnn_options(), **settings.verify_options(),
        )  # fmt: skip
        times.append(time.perf_counter() - began - lnbnn_times[-1])  # LNBNN counted once
    return {
        "engine": engine,
        "build_s": build_seconds,
        "query_s": float(np.median(times)),
        "lnbnn_s": float(np.median(lnbnn_times)),
        "queries": len(names),
        "peak_gb": peak_gb(),
    }


def right_whale_features(folder: Path, cache: Path):
    """The right whales' catalogue (train) and known test photos' RootSIFT, as the fused head
    extracts them, cached in ``cache``; with the catalogue's table and the test solution."""
    import pandas as pd

    from whaleutils.datasets import data
    from whaleutils.images import photos
    from whaleutils.retrieval import local_features, matching

    settings = matching.LocalSettings().features
    train = data.read_train(folder)
    solution = pd.read_csv(folder / "test_solution.csv")
    known = solution[solution["individual_id"].isin(set(train["individual_id"]))]
    features = local_features.FeatureCache(cache / "right_whale_features.npz", settings)

    def read(part, names):
        paths = [folder / f"{part}_images" / name for name in names]
        keys = [local_features.photo_key(path) for path in paths]
        return features.features(keys, lambda i: photos.prepare(paths[i]))

    gallery, queries = read("train", train["image"]), read("test", known["image"])
    features.save(force=features.computed > 0)
    return train, known, gallery, queries


def descriptor_load(size: int, folder: Path, cache: Path, engine: str, queries: int) -> dict:
    """The index and the query at Happywhale's descriptor load: ``size`` photos labelled as
    ``synth`` labels a catalogue of that size, each holding a copy of a right-whale photo's
    RootSIFT in turn (real photos' ~325 a photo: synthetic photos have ~17), random unit
    embeddings; queries are right-whale test photos."""
    import numpy as np

    from whaleutils.datasets import synth
    from whaleutils.retrieval import local_features, matching

    _, known, gallery, query_features = right_whale_features(folder, cache)
    config = happywhale_shape(size)
    labels = synth.plan_labels(config).query("split == 'train'")["individual_id"].to_numpy()
    features = [
        local_features.PhotoFeatures(
            gallery[i % len(gallery)].points.copy(), gallery[i % len(gallery)].raw.copy(),
            gallery[i % len(gallery)].scale,
        )
        for i in range(len(labels))
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(len(labels), 512)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    held_gb = peak_gb()
    started = time.perf_counter()
    index = local_features.DescriptorIndex(features, labels, engine=engine)
    build_seconds = time.perf_counter() - started
    settings = matching.LocalSettings()
    times, lnbnn_times = [], []
    for number in range(queries):
        query = query_features[number * 7 % len(query_features)]
        vector = rng.normal(size=(1, 512)).astype(np.float32)
        began = time.perf_counter()
        scores = matching.photo_similarities(vector / np.linalg.norm(vector), embeddings)
        similarities = matching.individual_maxima(scores, labels, index.individuals)
        lnbnn_began = time.perf_counter()
        index.lnbnn(query, settings.lnbnn_k)
        lnbnn_times.append(time.perf_counter() - lnbnn_began)
        matching.candidate_pairs(
            ["q"], [query], features, labels, similarities, None, settings.shortlist, index,
            verify_photos=settings.verify_photos, photo_scores=scores,
            **settings.lnbnn_options(), **settings.verify_options(),
        )  # fmt: skip
        times.append(time.perf_counter() - began - lnbnn_times[-1])
    return {
        "photos": len(labels),
        "individuals": len(index.individuals),
        "descriptors": len(index),
        "engine": engine,
        "features_gb": held_gb,
        "build_s": build_seconds,
        "peak_gb": peak_gb(),
        "query_s": float(np.median(times)),
        "lnbnn_s": float(np.median(lnbnn_times)),
        "queries": queries,
    }


def right_whale_accuracy(folder: Path, cache: Path, every: int = 1) -> list[dict]:
    """LNBNN alone, each index, over the right whales' catalogue for its known test photos
    (``every``: each such photo, or every second, ...)."""
    import numpy as np

    from whaleutils.contracts import metrics
    from whaleutils.retrieval import local_features

    train, known, gallery, queries = right_whale_features(folder, cache)
    truth = known["individual_id"].to_numpy()[::every]
    queries = queries[::every]
    rows = []
    for engine in ("faiss-flat", "flann", "faiss"):
        started = time.perf_counter()
        index = local_features.DescriptorIndex(gallery, train["individual_id"], engine=engine)
        scores = np.stack([index.lnbnn(query) for query in queries])
        top = index.individuals[np.argsort(-scores, axis=1, kind="stable")[:, :5]]
        rows.append(
            {
                "engine": engine,
                "queries": len(queries),
                "top1": float((top[:, 0] == truth).mean()),
                "map5": float(metrics.map_at_k(truth.tolist(), top.tolist(), 5)),
                "seconds": time.perf_counter() - started,
            }
        )
    return rows


def child(command: list[str]) -> dict:
    """Run this script's ``command`` in a process of its own; its last stdout line is JSON.
    A child the kernel killed (out of memory) is reported as such, not raised."""
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--child", *command], stdout=subprocess.PIPE, text=True,
            check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        if error.returncode != -9:
            raise
        total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return {"failed": f"killed: out of memory ({total_gb:.0f} GB)"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def projection(loads: list[dict], pace: float) -> str:
    """500,000 photos from the per-photo figures: describing's ``pace`` (s a photo, on the
    synthetic catalogues) and the descriptors, memory and LNBNN time at the largest size
    measured (right-whale RootSIFT)."""
    measured = [row for row in loads if row["engine"] == "faiss" and "failed" not in row]
    largest = max(measured, key=lambda row: row["photos"])
    photos, per_photo = largest["photos"], largest["descriptors"] / largest["photos"]
    scale = 500_000 / photos
    total = 500_000 * per_photo
    codes_gb, pq_gb = total * (128 + 8) / 2**30, total * (32 + 8) / 2**30
    features_gb = largest["features_gb"] * scale
    return (
        f"500,000 photos ({scale:.1f} x {photos:,}; {per_photo:.0f} descriptors a photo: "
        f"{total / 1e6:.0f} M): describing {500_000 * pace / 3600:.0f} h on this machine "
        f"({pace:.3f} s a photo, resumable; {500_000 * pace / 3600 / 8:.0f} h on 16 cores). In "
        f"memory: faiss' 8-bit codes {codes_gb:.0f} GB and the features ~{features_gb:.0f} GB, "
        f"past this machine's 24 GB. What would change: the codes to a product quantiser "
        f"(IVF-PQ, 32 bytes a descriptor: {pq_gb:.0f} GB) or the index sharded by species (a "
        f"query's species is known; Happywhale's largest, the bottlenose dolphin, is a fifth of "
        f"the photos); the geometric check reading its shortlist's keypoints from the cache on "
        f"disk (memory-mapped) instead of holding them; or a vector engine on faiss' indexes "
        f"(Milvus' IVF_PQ, sharded). LNBNN's search grows with the probed lists' length: "
        f"{largest['lnbnn_s']:.2f} s a query at {photos:,} photos, about "
        f"{largest['lnbnn_s'] * scale**0.5:.2f} s at 500,000 (lists growing as the square "
        f"root of the descriptors); the geometric check of the shortlist does not grow."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3352, 10_000, 51_033])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "whaleutils-scale")
    parser.add_argument("--right-whales", type=Path, help="a prepared right-whale folder")
    parser.add_argument("--accuracy-every", type=int, default=1, help="every N-th test photo")
    parser.add_argument("--pace", type=float, help="describe s/photo for the projection, "
                        "when --describe-sizes is empty (from an earlier run)")  # fmt: skip
    parser.add_argument("--describe-sizes", type=int, nargs="*", help="default: --sizes")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, catalogue, cache, *rest = args.child
        if kind == "describe":
            result = describe(Path(catalogue), Path(cache))
        elif kind == "match":
            result = match(Path(catalogue), Path(cache), rest[0], int(rest[1]))
        elif kind == "load":  # catalogue: the size; cache: the right whales' folder
            result = descriptor_load(
                int(catalogue), Path(cache), Path(rest[0]), rest[1], int(rest[2])
            )
        else:
            result = right_whale_accuracy(Path(catalogue), Path(cache), int(rest[0]))
        print(json.dumps(result))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes if args.describe_sizes is None else args.describe_sizes:
        print(f"size {size:,}:", flush=True)
        catalogue = catalogue_for(size, args.work)
        cache = args.work / f"cache_{size}"
        row = child(["describe", str(catalogue), str(cache)])
        row["engines"] = [
            child(["match", str(catalogue), str(cache), engine, str(args.queries)])
            for engine in ENGINES
        ]
        rows.append(row)
        print(f"  {json.dumps(row)}", flush=True)
    print()
    print("| photos | individuals | descriptors | describe s/photo | describe peak GB | index | "
          "load + build s | peak GB | s per query | of which LNBNN s |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        for m in row["engines"]:
            print(
                f"| {row['photos']:,} | {row['individuals']:,} | {row['descriptors'] / 1e6:.1f} M "
                f"| {row['describe_s_per_photo']:.3f} | {row['describe_peak_gb']:.1f} | "
                f"{m['engine']} | {m['build_s']:.0f} | {m['peak_gb']:.1f} | {m['query_s']:.2f} | "
                f"{m['lnbnn_s']:.3f} |"
            )
    described = rows
    if not args.right_whales:
        return
    rows = []
    for size in args.sizes:
        for engine in ENGINES:
            command = ["load", str(size), str(args.right_whales), str(args.work / "right_whales")]
            rows.append(
                {"photos": size, "engine": engine} | child([*command, engine, str(args.queries)])
            )
            print(f"  {json.dumps(rows[-1])}", flush=True)
    print()
    print("| photos (right-whale RootSIFT) | descriptors | index | features GB | build s | "
          "peak GB | s per query | of which LNBNN s |")  # fmt: skip
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if "failed" in row:
            print(f"| {row['photos']:,} | | {row['engine']} | | | {row['failed']} | | |")
            continue
        print(
            f"| {row['photos']:,} | {row['descriptors'] / 1e6:.1f} M | {row['engine']} | "
            f"{row['features_gb']:.1f} | {row['build_s']:.0f} | {row['peak_gb']:.1f} | "
            f"{row['query_s']:.2f} | {row['lnbnn_s']:.3f} |"
        )
    if described or args.pace:
        print()
        print(projection(rows, described[-1]["describe_s_per_photo"] if described else args.pace))
    print()
    accuracy = child(["accuracy", str(args.right_whales), str(args.work / "right_whales"),
                      str(args.accuracy_every)])  # fmt: skip
    print("| right whales, LNBNN alone | queries | top-1 | MAP@5 | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in accuracy:
        print(
            f"| {row['engine']} | {row['queries']} | {row['top1']:.3f} | {row['map5']:.3f} "
            f"| {row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
