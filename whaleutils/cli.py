"""Command line: ``python -m whaleutils <command> --help``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import yaml

from whaleutils.analysis import baselines
from whaleutils.catalogue import curation, duplicates, enrolment, identify, interop, review
from whaleutils.contracts import metrics, outputs, submission
from whaleutils.contracts.outputs import CROP_CACHE_NOTEBOOK
from whaleutils.datasets import data, encounters, prepare, synth, validate
from whaleutils.images import crops
from whaleutils.images.photos import BOX_MARGIN
from whaleutils.suite import kaggle_metadata, kaggle_push, kaggle_stage, preflight, runner


def _print_scores(title: str, scores: dict) -> None:
    print(
        f"{title:<16} MAP@5 {scores['map5']:.4f}   known {scores['map5_known']:.4f} "
        f"({scores['n_known']} images)   new {scores['map5_new']:.4f} ({scores['n_new']} images)"
    )


def cmd_synth(args) -> int:
    config = synth.SynthConfig(
        seed=args.seed,
        individuals=args.individuals,
        max_side=args.max_side,
        max_photos=args.max_photos,
        test_ratio=args.test_ratio,
        new_share=args.new_share,
    )
    existed = (Path(args.out_dir) / "synth.json").is_file()
    card = synth.generate(args.out_dir, config, workers=args.workers)
    verb = "kept existing" if existed else "wrote"
    print(
        f"{verb} {args.out_dir}: {card['train_images']} train and "
        f"{card['test_images']} test images, "
        f"{card['individuals_train']} individuals in train, {card['individuals_new']} new in test "
        f"({card['test_new_share']:.1%} of test images)"
    )
    if not existed:
        print(f"{card['images_per_second']} images/s with {card['workers']} worker(s)")
    return 0


def cmd_validate(args) -> int:
    problems = validate.validate_dataset(args.data_dir, decode_images=not args.headers_only)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.data_dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.data_dir}: ok")
    return 0


def cmd_prepare(args) -> int:
    card = prepare.prepare(
        args.labels, args.images, args.out, args.test_share, args.new_share, args.seed, args.link
    )
    print(
        f"wrote {args.out}: {card['train_images']} train and {card['test_images']} test images of "
        f"{card['individuals']} individuals; {card['individuals_new']} individuals are new in test "
        f"({card['test_new_share']:.1%} of test images)"
    )
    return 0


def cmd_score(args) -> int:
    solution = data.read_solution(args.solution)
    frame = submission.read_predictions(args.submission)
    train_csv = (
        Path(args.train) if args.train else data.Layout(Path(args.solution).parent).train_csv
    )
    known_ids = data.read_train(train_csv.parent)["individual_id"] if train_csv.is_file() else None
    problems = submission.check_submission(
        frame, solution["image"].tolist(), known_ids, file_name=Path(args.submission).name
    )
    if problems:
        for problem in problems[:20]:
            print(problem, file=sys.stderr)
        if len(problems) > 20:
            print(f"... and {len(problems) - 20} more", file=sys.stderr)
        return 1
    predictions = dict(zip(frame["image"], frame["labels"], strict=True))
    ordered = [predictions[image] for image in solution["image"]]
    scores = metrics.map_at_k_split(solution["individual_id"].tolist(), ordered)
    _print_scores(Path(args.submission).name, scores)
    if known_ids is None:
        print(f"(no {train_csv}: prediction ids were not checked against train)")
    return 0


def cmd_folds(args) -> int:
    train = data.read_train(data.find_data_dir(args.data_dir))
    folds = data.make_folds(
        train, n_folds=args.n_folds, seed=args.seed, min_new_share=args.min_new_share
    )
    print(data.fold_report(folds).to_string(float_format=lambda v: f"{v:.3f}"))
    if args.out:
        out = Path(args.out)
        if out.exists():
            print(f"{out} exists; not overwritten", file=sys.stderr)
            return 1
        out.parent.mkdir(parents=True, exist_ok=True)
        folds.to_csv(out, index=False)
        print(f"wrote {out}")
    return 0


def cmd_baselines(args) -> int:
    report = baselines.difficulty_report(args.data_dir)
    for name, scores in report.items():
        _print_scores(name, scores)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


def _yaml_value(name: str, text: str):
    """A ``-p NAME VALUE`` value read as YAML; raises ValueError naming it."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        reason = str(getattr(error, "problem", None) or error).splitlines()[0]
        raise ValueError(f"-p {name} {text[:60]!r}: not a YAML value ({reason})") from None


def cmd_run(args) -> int:
    try:
        overrides = {name: _yaml_value(name, value) for name, value in args.parameter or []}
        for name in ("boxes", "crop_cache"):  # paths, made absolute (the notebooks run in the
            # repository's folder); a bare --boxes NAME may be an attached Kaggle dataset
            # (data.find_boxes). "-p boxes PATH" is taken as "--boxes PATH".
            value = getattr(args, name) or overrides.get(name)
            if value is None:
                continue
            value = str(value)
            path = Path(value)
            if path.exists():
                overrides[name] = str(path.resolve())
            elif (name == "boxes" and len(path.parts) == 1) or value == CROP_CACHE_NOTEBOOK:
                overrides[name] = value  # an attached dataset's name; notebook 00's output
            else:
                raise ValueError(f"--{name.replace('_', '-')} {path}: no such file or folder")
        summary = runner.run(
            args.profile, args.data, args.out, args.only, args.force, overrides, args.variant
        )
    except runner.NotebookFailed:
        return 1  # the runner has printed which notebook and cell failed
    except runner.RunBusy as error:  # another run writes the same run folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # an unknown notebook or parameter
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only or full --out, say
        print(f"error: {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"summary: {Path(args.out) / args.profile / 'summary.md'}")
    for model, scores in summary["scores"].items():
        print(f"{model:<18} MAP@5 {scores['map5']:.4f} ({scores['split']})")
    return 0


def cmd_export(args) -> int:

    try:
        with warnings.catch_warnings(record=True) as caught:  # printed as lines, below
            warnings.simplefilter("always", UserWarning)
            report = interop.write_export(args.catalogue, args.out, args.format, args.occasion)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    files = ", ".join(str(path) for path in report.pop("files"))
    details = ", ".join(f"{value} {key}" for key, value in report.items())
    print(f"{files}: {details}")
    return 0


def cmd_import(args) -> int:

    try:
        report = interop.read_coco(args.annotations, args.images, args.out)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, say: nothing was left behind (read_coco)
        print(f"error: {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: a catalogue of {report['photos']} photos of {report['individuals']} "
        f"individuals ({report['unnamed']} unnamed annotations left out)"
    )
    problems = validate.validate_dataset(args.out, decode_images=False)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def query_encounters(args, photos: list[Path]) -> dict[str, str] | None:
    """identify's photos' encounters (photo path -> encounter) with ``--by-encounter``: from
    ``--metadata`` (by file name), else from their EXIF; None without ``--by-encounter``."""
    exif_options = args.encounter_minutes is not None or args.encounter_metres is not None
    if not args.by_encounter:
        if args.metadata or exif_options:
            raise ValueError("--metadata and --encounter-minutes/metres need --by-encounter")
        return None
    if args.metadata:
        if exif_options:
            raise ValueError("encounters from --metadata or from EXIF, not both")
        by_name = data.read_encounters(args.metadata)
        listed = [p for p in photos if p.name in by_name]
        if not listed:
            raise ValueError(f"{args.metadata}: none of the photos' file names is listed")
        twice = [name for name, n in Counter(p.name for p in listed).items() if n > 1]
        if twice:
            raise ValueError(
                f"{args.metadata}: file name {twice[0]!r} is that of two photos: encounters "
                "by file name would be ambiguous"
            )
        return {str(p): by_name[p.name] for p in listed}
    if args.encounter_minutes is None:
        raise ValueError("--by-encounter needs --metadata or --encounter-minutes (EXIF)")
    return encounters.exif_encounters(photos, args.encounter_minutes, args.encounter_metres)


def candidate_filter(args):
    """identify's --species, --viewpoint, --between, --near and --within as a CandidateFilter.

    Raises
    ------
    ValueError
        Naming the option and value that cannot be read.
    """

    between = near = None
    if args.between:
        try:
            between = tuple(encounters.parse_date(text) for text in args.between)
        except ValueError as error:
            raise ValueError(f"--between: {error}") from None
    if args.near:
        try:
            latitude, longitude = (float(part) for part in args.near.split(","))
        except ValueError:
            raise ValueError(f"--near {args.near!r}: expected LAT,LON, e.g. 42.35,-70.35") from None
        near = (latitude, longitude)
    species = tuple(data.normalize_species(name) for name in args.species or ())
    return encounters.CandidateFilter(
        species=species, viewpoints=tuple(args.viewpoint or ()), between=between, near=near,
        within_km=args.within,
    )  # fmt: skip


def cmd_identify(args) -> int:

    try:
        photos = identify.photo_files(args.photos)
        boxes = data.read_boxes(args.boxes) if args.boxes else {}
        photo_encounters = query_encounters(args, photos)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not photos:
        print(f"error: no photos in {' '.join(args.photos)}", file=sys.stderr)
        return 2
    if args.evidence < 0:
        print(f"error: --evidence must be >= 0, got {args.evidence}", file=sys.stderr)
        return 2
    try:
        candidates = candidate_filter(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else identify.default_cache_dir(args.catalogue)
    try:
        identify.prepare_out(out, args.catalogue, args.force)
        with warnings.catch_warnings(record=True) as caught:  # printed as lines, below
            warnings.simplefilter("always", UserWarning)
            identifier = identify.Identifier(
                args.model, args.catalogue, cache, args.batch_size,
                local=False if args.no_local else None, known_precision=args.known_precision,
                precision=args.precision, new_share=args.new_share,
                crop_to_box=bool(args.boxes), candidates=candidates,
                engine=args.descriptor_index, progress=True,
            )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in caught:  # skipped catalogue photos, a cache set aside
        print(f"warning: {warning.message}", file=sys.stderr)
    trained_on_boxes = identifier.run.crop_to_box
    if trained_on_boxes is not None and trained_on_boxes != identifier.index.crop_to_box:
        print(
            "note: the model was trained on "
            + ("photos cropped to boxes" if trained_on_boxes else "whole photos")
            + "; these photos are matched "
            + (
                "cropped to --boxes" if identifier.index.crop_to_box else "whole (no --boxes given)"
            ),
            file=sys.stderr,
        )
    print(
        f"catalogue: {len(identifier.index.table)} photos of "
        f"{identifier.index.table['individual_id'].nunique()} individuals "
        f"({identifier.index.embedded} embedded now, the rest from "
        f"{cache / identify.CACHE_FILE})"
    )
    if identifier.index.note:
        print(identifier.index.note)
    if identifier.fused_head is not None:
        print(
            "ranked by the run's fused head (embedding + local features): "
            f"{identifier.index.features_computed} catalogue photos' features computed now; "
            f"known from a best probability of {identifier.matcher.threshold:.2f}"
        )
        answer = identifier.fused_head.answer
        print(
            f"per-photo answer (new_probability, photo_probability) for a share of "
            f"{answer.new_share:.2f} new photos"
            + (" (--new-share)" if args.new_share is not None else " (validation's; --new-share)")
        )
        named = identifier.matcher.precision
        if named is not None:
            print(
                f"--precision {args.precision}: on the run's validation photos the named whale "
                f"was right for {named['right']:.3f} of the {named['called']} called known "
                f"(95% Wilson lower bound {named['lower_bound']:.3f}; "
                f"{named['recall']:.0%} of the known photos were called known)"
            )
    try:
        matches = identifier.match(photos, args.top, boxes, photo_encounters)
    except ValueError as error:  # answering by encounter without a head that can
        print(f"error: {error}", file=sys.stderr)
        return 2
    matches["evidence"] = review.write_evidence(out, matches, identifier, boxes, args.evidence)
    matches.to_csv(out / "matches.csv", index=False)
    identifier.skipped.to_csv(out / "skipped.csv", index=False)
    for photo, reason in identifier.skipped.itertuples(index=False):
        print(f"skipped {photo}: {reason}", file=sys.stderr)
    matched = matches["photo"].nunique()
    if matched:
        review.write_review(out / "review.html", matches, identifier, title=str(out))
    new = matches.drop_duplicates("photo")["new_individual"].sum() if matched else 0
    if photo_encounters is not None and matched:
        photos_once = matches.drop_duplicates("photo")
        groups = photos_once["encounter"].where(
            photos_once["encounter"] != "", photos_once["photo"]
        )
        print(
            f"answered by encounter (rule {identifier.fused_head.encounter_answer.rule}, chosen on "
            f"the run's validation encounters): {groups.nunique()} encounter(s) of {matched} "
            "photo(s); matches.csv's encounter_answer and encounter_probability"
        )
    print(
        f"{matched} photo(s) matched ({new} new individual(s) by the threshold), "
        f"{len(identifier.skipped)} skipped: {out / 'matches.csv'}, {out / 'review.html'}"
    )
    return 0 if matched else 1


def cmd_enroll(args) -> int:

    try:
        added = enrolment.enroll(
            args.catalogue, args.decisions, args.new_id_prefix, args.species,
            reviewer=args.reviewer, wait=args.wait,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # busy, or a crashed enrolment to resolve by hand
        print(f"error: {error}", file=sys.stderr)
        return 1
    new = added["individual_id"].str.startswith(args.new_id_prefix).sum()
    print(f"enrolled {len(added)} photo(s) into {args.catalogue} ({new} new individual(s))")
    for row in added.itertuples(index=False):
        print(f"  {row.image}: {row.individual_id}")
    return 0


def cmd_curate_edit(args) -> int:
    """merge, rename, split, apply and undo: one transaction each, its id printed."""
    options = {"reviewer": args.reviewer, "wait": args.wait}
    try:
        if args.curate_command == "merge":
            edit = curation.merge(args.catalogue, args.keep, args.merged, **options)
        elif args.curate_command == "rename":
            edit = curation.rename(args.catalogue, args.individual, args.new_name, **options)
        elif args.curate_command == "split":
            photos = list(args.photos or [])
            if args.photos_from:
                photos += split_photos_file(args.photos_from)
            edit = curation.split(
                args.catalogue, args.individual, photos, args.into, args.new_id_prefix, **options
            )
        elif args.curate_command == "apply":
            edit = curation.apply(args.catalogue, args.decisions, **options)
        else:
            edit = curation.undo(args.catalogue, args.transaction, **options)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # busy, or an interrupted transaction to resolve by hand
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(edit.summary())
    moves = edit.changes.groupby(["previous_id", "individual_id"], sort=False).size()
    for (before, after), photos in moves.items():
        print(f"  {before} -> {after}: {photos} photo(s)")
    for row in edit.judged.itertuples(index=False):
        print(f"  {row.individual_id} / {row.other_id}: {row.action}")
    if not edit.repeated:
        print(
            f"undo with: python -m whaleutils curate undo --catalogue {args.catalogue} "
            f"{edit.transaction}"
        )
    return 0


def split_photos_file(path) -> list[str]:
    """The photo names of ``split --photos-from``: a CSV with an ``image`` column, or a text
    file of one name per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0].strip() if text.strip() else ""
    if "," in first or first == "image":
        frame = data.read_csv(path)
        if "image" not in frame.columns:
            raise ValueError(f"{path}: a CSV needs an image column (has {list(frame.columns)})")
        return [name for name in frame["image"].str.strip() if name]
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def cmd_curate_duplicates(args) -> int:

    for name in ("shortlist", "verify_photos", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    cache = Path(args.cache) if args.cache else identify.default_cache_dir(args.catalogue)
    try:
        duplicates.prepare_out(args.out, args.catalogue, args.force)
        crop = args.crop_to_box
        if crop is None:
            crop = bool(outputs.read_run_settings(Path(args.model)).crop_to_box)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            identifier = identify.Identifier(
                args.model, args.catalogue, cache, args.batch_size,
                local=False if args.no_local else None, crop_to_box=crop,
                engine=args.descriptor_index, progress=True,
            )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    table = identifier.index.table
    head = "fused head (embedding + local features)" if identifier.fused_head else "KNN head"
    print(
        f"catalogue: {len(table)} photos of {table['individual_id'].nunique()} individuals, "
        f"each matched against the others by the run's {head}"
        + (" cropped to their boxes" if crop else "")
    )
    started = [time.monotonic()]  # the time left, from the pace since matching began
    try:
        ranked, pairs = duplicates.find_duplicates(
            identifier, args.shortlist, args.verify_photos,
            lambda done, total: duplicates.print_progress(done, total, started), args.any_species,
            args.workers,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = duplicates.write_duplicates(
        args.out, ranked, pairs, identifier, args.shown, args.evidence
    )
    judged = curation.judged_pairs(curation.read_log(args.catalogue))
    left_out = sum(1 for verdict in judged.values() if verdict == "different")
    print(
        f"{len(ranked)} pairs of individuals ranked ({left_out} judged different before, left "
        f"out): {files['duplicates.csv']}, {files['review.html']}"
    )
    for row in ranked.head(10).itertuples(index=False):
        evidence = "" if row.probability != row.probability else f"p={row.probability:.2f} "
        inliers = "" if row.inliers != row.inliers else f"{int(row.inliers)} inliers "
        print(
            f"  {row.rank:>3}. {row.individual_a} / {row.individual_b}: {evidence}{inliers}"
            f"similarity {row.similarity:.3f}"
        )
    print(
        f"next: review {files['review.html']}, then python -m whaleutils curate apply "
        f"--catalogue {args.catalogue} duplicate_decisions.csv"
    )
    return 0


def cmd_curate_history(args) -> int:

    try:
        events = curation.history(args.catalogue, args.individual)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (Path(args.catalogue) / enrolment.JOURNAL_FILE).is_file():
        print(
            "note: an interrupted enroll or curate is pending; the next enroll or curate "
            "completes or undoes it",
            file=sys.stderr,
        )
    table = data.read_train(args.catalogue)
    now = int((table["individual_id"] == args.individual).sum())
    print(f"{args.individual}: {now} photo(s) in {args.catalogue} now")
    if events.empty:
        print("  no enrolment or edit recorded (in the catalogue from the start)")
    for event in events.itertuples(index=False):
        undone = " [undone]" if event.undone else ""
        by = f" by {event.reviewer}" if event.reviewer else ""
        print(f"  {event.time} {event.transaction} {event.action}: {event.what}{by}{undone}")
    return 0


def cmd_crops(args) -> int:

    try:
        boxes = data.find_boxes(args.boxes)
        index = crops.write_crop_cache(
            args.data, args.out, args.size, boxes, args.margin, args.box_jitter
        )
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for part, entry in index["parts"].items():
        print(f"{part}: {entry['images']} crops in {len(entry['shards'])} shard(s)")
    cropped = "cropped to boxes" if index["crop_to_box"] else "whole photos (no test boxes)"
    room = f", room for a box jitter of {args.box_jitter}" if args.box_jitter else ""
    print(f"{args.out}: {args.size} px, {cropped}{room}")
    return 0


def cmd_kaggle_stage(args) -> int:

    summary = kaggle_stage.stage(args.out, args.owner, args.metadata, wheelhouse=args.wheelhouse)
    print(f"staged {len(summary['kernels'])} kernels for {summary['owner']} in {args.out}:")
    for slug in summary["kernels"]:
        print(f"  {Path(args.out) / slug}")
    library = summary["library"]
    print(f"library dataset {library['id']}: {', '.join(library['files'])}")
    print(f"next: python -m whaleutils kaggle push --stage {args.out} [--with-library]")
    return 0


def cmd_kaggle_wheelhouse(args) -> int:

    wheels = kaggle_metadata.load_metadata(args.metadata)["library"]["wheels"]
    files = kaggle_stage.download_wheels(args.out, wheels)
    print(f"{args.out}: {', '.join(files)}")
    compat = Path(args.out) / preflight.COMPAT_FOLDER
    files = kaggle_stage.download_wheels(compat, [preflight.GPU_IMAGE_KERAS])
    print(f"{compat}: {', '.join(files)} (the GPU image's Keras, for the tests; not staged)")
    print(f"next: python -m whaleutils kaggle stage --out DIR --wheelhouse {args.out}")
    return 0


def _add_descriptor_index(parser) -> None:
    parser.add_argument(
        "--descriptor-index", choices=("auto", "flann", "faiss", "exact"), default="auto",
        help="the index of the catalogue's local descriptors (fused head): FLANN kd-trees, "
        "faiss' compressed inverted file (a quarter of the memory: large catalogues) or brute "
        "force; auto: faiss above 4 million descriptors (about 13,000 photos), else FLANN",
    )  # fmt: skip


def cmd_kaggle_push(args) -> int:

    results = kaggle_push.push(
        args.stage, args.only, args.with_library, args.timeout, skip=args.skip
    )
    for result in results:
        print(result.line(), file=sys.stdout if result.ok else sys.stderr)
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} pushes failed: {failed}", file=sys.stderr)
        return 1
    print(f"all {len(results)} pushes landed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m whaleutils",
        description="Photo-identification of whales and dolphins: data, scoring, baselines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("synth", help="generate the synthetic Happywhale-format data set")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new or empty folder to write")
    defaults = synth.SynthConfig()
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--individuals", type=int, default=defaults.individuals, help="individuals in train"
    )
    p.add_argument("--max-side", type=int, default=defaults.max_side, help="longest image side, px")
    p.add_argument(
        "--max-photos", type=int, default=defaults.max_photos, help="cap on photos per individual"
    )
    p.add_argument(
        "--test-ratio", type=float, default=defaults.test_ratio, help="test photos per train photo"
    )
    p.add_argument(
        "--new-share",
        type=float,
        default=defaults.new_share,
        help="share of new_individual test images",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    p.set_defaults(handler=cmd_synth)

    p = commands.add_parser("validate", help="check a data set; exit 1 with one line per problem")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--headers-only", action="store_true", help="read image headers, not every byte")
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "prepare", help="turn a photo catalogue into a data set with a solution"
    )
    p.add_argument("--labels", required=True, help="CSV with image, individual_id[, species]")
    p.add_argument("--images", required=True, help="folder the image paths are relative to")
    p.add_argument("--out", required=True, help="new or empty folder to write")
    p.add_argument(
        "--test-share", type=float, default=0.2, help="share of a known individual's photos in test"
    )
    p.add_argument(
        "--new-share", type=float, default=0.1, help="share of individuals held out entirely"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="symlink photos instead of copying")
    p.set_defaults(handler=cmd_prepare)

    p = commands.add_parser("score", help="MAP@5 of a submission: overall, known, new")
    p.add_argument("submission", metavar="SUBMISSION")
    p.add_argument("solution", metavar="SOLUTION", help="test_solution.csv (image, individual_id)")
    p.add_argument(
        "--train", help="train.csv whose ids predictions must use (default: beside SOLUTION)"
    )
    p.set_defaults(handler=cmd_score)

    p = commands.add_parser(
        "folds", help="assign K folds and report images, known and new per fold"
    )
    p.add_argument(
        "data_dir", metavar="DATA_DIR", nargs="?", default=None, help="default: Kaggle's input"
    )
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-new-share", type=float, default=0.15)
    p.add_argument("--out", help="write the folds as CSV here (never overwrites)")
    p.set_defaults(handler=cmd_folds)

    p = commands.add_parser(
        "baselines", help="MAP@5 of the species oracle and raw-pixel NN baselines"
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="a data set with test_solution.csv")
    p.add_argument("--json", action="store_true", help="also print the scores as JSON")
    p.set_defaults(handler=cmd_baselines)

    p = commands.add_parser("run", help="execute the notebook suite with papermill (the main job)")
    p.add_argument("--profile", choices=runner.PROFILES, default="local")
    p.add_argument("--data", help="data set directory (default: generate the synthetic one)")
    p.add_argument("--out", default="runs", help="runs folder; this run goes to OUT/PROFILE")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    p.add_argument("--force", action="store_true", help="run notebooks again even if complete")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a parameter of every notebook that has it, over the profile (VALUE is read "
        "as YAML), e.g. -p backend jax; complete notebooks are skipped unless --force",
    )
    p.add_argument("--boxes", help="CSV (or folder of CSVs) of image,box for train and test photos")
    p.add_argument("--crop-cache", help="a crop cache (python -m whaleutils crops) to read")
    p.add_argument(
        "--variant",
        help="write NOTEBOOK-VARIANT folders (e.g. --only 04_effnet_arcface -p fold 1 "
        "--variant fold1); the blend reads every variant",
    )
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser(
        "identify", help="match new photos against a catalogue; write matches.csv, review.html"
    )
    p.add_argument("--model", required=True, help="a trained notebook's output folder (RUN_DIR)")
    p.add_argument("--catalogue", required=True, help="a Happywhale-format folder (DATA_DIR)")
    p.add_argument("--photos", required=True, nargs="+", help="photo files or folders")
    p.add_argument(
        "--out", required=True, help="a new or empty folder for matches.csv, review.html, ..."
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="--out may hold an earlier identify's results: those files are replaced, no other",
    )
    p.add_argument(
        "--cache",
        help="folder of the catalogue's embeddings and features cache (default: one per "
        "catalogue under $XDG_CACHE_HOME or ~/.cache, whaleutils/identify/)",
    )
    p.add_argument("--top", type=int, default=5, help="candidates per photo")
    p.add_argument(
        "--boxes",
        help="CSV of image,box (left top right bottom) for the photos: crops them, and the "
        "catalogue photos to their train.csv boxes (without it every photo is used whole)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--no-local",
        action="store_true",
        help="rank by the embedding's KNN head alone, even if the run has a fused head (local/)",
    )
    _add_descriptor_index(p)
    p.add_argument(
        "--known-precision",
        type=float,
        metavar="P",
        help="fused head: call a photo known only where that verdict was right at least P of "
        "the time on the run's validation photos (default: the run's threshold, for MAP@5)",
    )
    p.add_argument(
        "--precision",
        type=float,
        metavar="P",
        help="fused head: name a photo's best candidate (else new) only where the named whale "
        "was right at least P of the time on the run's validation photos; prints the share's "
        "95%% Wilson lower bound (not with --known-precision)",
    )
    p.add_argument(
        "--new-share",
        type=float,
        metavar="S",
        help="fused head: the share of these photos you expect to be of new animals, in (0, 1); "
        "the per-photo answer (new_probability, photo_probability) assumes it instead of "
        "validation's",
    )
    p.add_argument(
        "--by-encounter",
        action="store_true",
        help="fused head: answer the photos of one encounter as one query (their evidence "
        "added per candidate whale); encounters from --metadata, else from the photos' EXIF "
        "(--encounter-minutes, --encounter-metres)",
    )
    p.add_argument(
        "--metadata",
        help="CSV of image,encounter (as test_metadata.csv has them) for the photos",
    )
    p.add_argument(
        "--encounter-minutes",
        type=float,
        metavar="N",
        help="--by-encounter from EXIF: one camera's photos taken within N minutes of the "
        "encounter's previous one",
    )
    p.add_argument(
        "--encounter-metres",
        type=float,
        metavar="M",
        help="--by-encounter from EXIF: and within M metres of it (both photos need GPS)",
    )
    p.add_argument(
        "--evidence",
        type=int,
        default=3,
        metavar="N",
        help="fused head: for each photo's best N candidates with a geometric match, draw the "
        "matched keypoints at full resolution into OUT/evidence/ (shown by review.html); 0: none",
    )
    g = p.add_argument_group(
        "candidates", "match only comparable catalogue photos (train.csv's encounter columns)"
    )  # (the export and import commands follow identify's)
    g.add_argument("--species", nargs="+", help="only these species (e.g. humpback_whale)")
    g.add_argument("--viewpoint", nargs="+", help="only photos of these viewpoints (e.g. left)")
    g.add_argument(
        "--between", nargs=2, metavar=("FIRST", "LAST"), help="only photos dated FIRST..LAST"
    )
    g.add_argument("--near", metavar="LAT,LON", help="only photos taken --within KM of here")
    g.add_argument("--within", type=float, metavar="KM", help="the distance for --near")
    p.set_defaults(handler=cmd_identify)

    p = commands.add_parser(
        "export", help="write a catalogue as Wild Me COCO, Darwin Core or a capture history"
    )
    p.add_argument("--catalogue", required=True, help="a Happywhale-format folder (DATA_DIR)")
    p.add_argument("--format", required=True, choices=["coco", "dwc", "capture-history"])
    p.add_argument("--out", required=True, help="a new file (capture-history: also OUT.inp)")
    p.add_argument(
        "--occasion",
        default="month",
        help="capture-history: an occasion is a day, week, month (default), year, or N days",
    )
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("import", help="make a catalogue from another tool's export")
    p.add_argument("--format", required=True, choices=["coco"])
    p.add_argument("--annotations", required=True, help="the COCO JSON file")
    p.add_argument("--images", required=True, help="the folder of the photos it names")
    p.add_argument("--out", required=True, help="a new or empty folder for the catalogue")
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser("enroll", help="add reviewed photos to a catalogue")
    p.add_argument("--catalogue", required=True, help="the Happywhale-format catalogue folder")
    p.add_argument("--decisions", required=True, help="the CSV exported from review.html")
    p.add_argument("--new-id-prefix", default="new-", help="prefix of new individuals' ids")
    p.add_argument("--species", default="unknown", help="species of new individuals")
    p.add_argument(
        "--reviewer",
        default=os.environ.get("USER", ""),
        help="who decided, for the catalogue's decisions_log.csv (default: $USER)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for another enroll on the same catalogue before giving up",
    )
    p.set_defaults(handler=cmd_enroll)

    p = commands.add_parser(
        "curate", help="keep a catalogue's ids clean: duplicates, merge, rename, split, undo"
    )
    curate_commands = p.add_subparsers(dest="curate_command", required=True, metavar="ACTION")

    def edit_parser(name: str, help: str):
        c = curate_commands.add_parser(name, help=help)
        c.add_argument("--catalogue", required=True, help="the Happywhale-format catalogue")
        c.add_argument(
            "--reviewer",
            default=os.environ.get("USER", ""),
            help="who decided, for the catalogue's curation_log.csv (default: $USER)",
        )
        c.add_argument(
            "--wait", type=float, default=60.0,
            help="seconds to wait for another enroll or curate on the catalogue",
        )  # fmt: skip
        c.set_defaults(handler=cmd_curate_edit)
        return c

    c = curate_commands.add_parser(
        "duplicates",
        help="rank pairs of ids by the evidence that they are one animal; write "
        "duplicates.csv and review.html",
    )
    c.add_argument("--model", required=True, help="a trained notebook's output folder (RUN_DIR)")
    c.add_argument("--catalogue", required=True, help="the Happywhale-format catalogue")
    c.add_argument("--out", required=True, help="a new or empty folder")
    c.add_argument(
        "--force", action="store_true",
        help="--out may hold an earlier duplicates' results: those files are replaced, no other",
    )  # fmt: skip
    c.add_argument("--cache", help="the catalogue's cache folder (default: identify's)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--no-local", action="store_true", help="the KNN head alone")
    _add_descriptor_index(c)
    c.add_argument(
        "--crop-to-box", action=argparse.BooleanOptionalAction, default=None,
        help="crop the photos to their train.csv boxes (default: as the run was trained)",
    )  # fmt: skip
    c.add_argument(
        "--shortlist", type=int, metavar="N",
        help="candidate ids per photo (default: the fused head's; fewer is faster)",
    )  # fmt: skip
    c.add_argument(
        "--verify-photos", type=int, metavar="N",
        help="photos of a candidate checked geometrically (default: the fused head's)",
    )  # fmt: skip
    c.add_argument(
        "--any-species", action="store_true",
        help="rank pairs of two species too (default: one species; a merge refuses two)",
    )  # fmt: skip
    c.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, metavar="N",
        help="threads matching at once (default: one per core)",
    )  # fmt: skip
    c.add_argument("--shown", type=int, default=100, help="pairs on the review page")
    c.add_argument(
        "--evidence", type=int, default=40, metavar="N",
        help="draw the matched keypoints of the best N pairs (shown by review.html)",
    )  # fmt: skip
    c.set_defaults(handler=cmd_curate_duplicates)

    c = edit_parser("merge", "MERGED's photos become KEEP's (one transaction)")
    c.add_argument("keep", metavar="KEEP", help="the id that stays")
    c.add_argument("merged", metavar="MERGED", help="the id whose photos move to KEEP")
    c = edit_parser("rename", "give an individual a new id")
    c.add_argument("individual", metavar="ID")
    c.add_argument("new_name", metavar="NEW", help="an id the catalogue does not have")
    c = edit_parser("split", "move some of an individual's photos to a new individual")
    c.add_argument("individual", metavar="ID")
    c.add_argument("--photos", nargs="+", metavar="IMAGE", help="the photos' file names")
    c.add_argument(
        "--photos-from", metavar="FILE",
        help="a text file of file names, one per line, or a CSV with an image column",
    )  # fmt: skip
    c.add_argument("--into", metavar="NEW", help="the new id (default: a fresh one)")
    c.add_argument("--new-id-prefix", default="new-", help="prefix of a fresh id")
    c = edit_parser("apply", "apply the decisions exported from duplicates' review page")
    c.add_argument("decisions", metavar="DECISIONS", help="individual_a,individual_b,decision CSV")
    c = edit_parser("undo", "reverse an edit (its transaction id, as the edit printed it)")
    c.add_argument("transaction", metavar="TRANSACTION")
    c = curate_commands.add_parser("history", help="what happened to an id: enrolled, edited")
    c.add_argument("--catalogue", required=True, help="the Happywhale-format catalogue")
    c.add_argument("individual", metavar="ID")
    c.set_defaults(handler=cmd_curate_history)

    p = commands.add_parser(
        "crops", help="write the crop cache: every photo cropped and resized once, TFRecords"
    )
    p.add_argument("--data", required=True, help="the data set (DATA_DIR)")
    p.add_argument("--boxes", help="CSV (or folder of CSVs) of image,box for train and test")
    p.add_argument("--size", type=int, required=True, help="side of the model's crop, px")
    p.add_argument(
        "--margin", type=float, default=BOX_MARGIN, help="box grown by this share a side"
    )
    p.add_argument(
        "--box-jitter",
        type=float,
        default=0.0,
        help="room around each crop for a training box jitter of up to this share of the box",
    )
    p.add_argument("--out", required=True, help="new or empty folder")
    p.set_defaults(handler=cmd_crops)

    p = commands.add_parser("kaggle", help="stage and push the suite as Kaggle kernels")
    kaggle_commands = p.add_subparsers(dest="kaggle_command", required=True, metavar="ACTION")
    metadata_file = str(Path(__file__).resolve().parents[1] / "kaggle-metadata.json")
    k = kaggle_commands.add_parser(
        "stage", help="write one folder per kernel and the whaleutils dataset folder"
    )
    k.add_argument("--out", required=True, help="new or empty folder (or an earlier stage)")
    k.add_argument("--owner", help="Kaggle user owning the kernels (default: the configured one)")
    k.add_argument(
        "--metadata",
        default=metadata_file,
        help="the suite's kernel list (default: the repository's kaggle-metadata.json)",
    )
    k.add_argument(
        "--wheelhouse",
        help="take the pinned wheels from this folder (see `kaggle wheelhouse`), not the index",
    )
    k.set_defaults(handler=cmd_kaggle_stage)
    k = kaggle_commands.add_parser(
        "wheelhouse",
        help="download the library's pinned wheels into a folder, for offline staging (and "
        "the GPU image's Keras into DIR/compat/, for the tests)",
    )
    k.add_argument("out", metavar="DIR", help="folder for the wheels (created if needed)")
    k.add_argument("--metadata", default=metadata_file, help="the suite's kernel list")
    k.set_defaults(handler=cmd_kaggle_wheelhouse)
    k = kaggle_commands.add_parser("push", help="push staged kernels with the kaggle CLI")
    k.add_argument("--stage", required=True, help="the folder written by `kaggle stage`")
    k.add_argument("--only", nargs="+", metavar="SLUG", help="push only these kernels")
    k.add_argument(
        "--skip", nargs="+", metavar="SLUG", help="push all but these (e.g. a finished cache)"
    )
    k.add_argument(
        "--with-library",
        action="store_true",
        help="first version (or create) the whaleutils dataset",
    )
    k.add_argument("--timeout", type=float, default=600, help="seconds per CLI call")
    k.set_defaults(handler=cmd_kaggle_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 1
    except OSError as error:  # no permission, a full disk, a file where a folder should be
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as error:
        print(f"error: a file is not UTF-8 text ({error.reason})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
