import json

import numpy as np
import pytest

from whaleutils.analysis import blend, out_of_fold
from whaleutils.contracts import metrics
from whaleutils.retrieval import embed

W = blend.RANK_WEIGHTS


def blend_loop(members, alphas, counts, rank_weights=W, frequency_penalty=0.033, new_penalty=4.0):
    """The scoring rule as a plain loop over images, members and ranks: the reference. A member
    with None for an image does not vote there; ``counts`` is one mapping or one per image."""
    out = []
    for i in range(len(members[0])):
        scores = {}
        gallery = counts if isinstance(counts, dict) else counts[i]
        for alpha, member in zip(alphas, members, strict=True):
            for rank, label in enumerate(member[i] or []):
                weight = rank_weights[rank]
                if label == "new_individual" and rank >= 2:
                    weight /= new_penalty
                scores[label] = scores.get(label, 0.0) + alpha * weight
        for label in scores:
            scores[label] -= frequency_penalty * (
                0 if label == "new_individual" else gallery.get(label, 0)
            )
        out.append(sorted(scores, key=lambda label: (-scores[label], label))[:5])
    return out


def test_rank_weights_hand_checked():
    a = [["p", "q", "r", "s", "t"]]
    b = [["q", "p", "r", "s", "t"]]
    # equal alphas: p = 10 + 6.5 = q; tie broken by id: p before q.
    assert blend.rank_blend([a, b], [1, 1], {}, frequency_penalty=0) == [["p", "q", "r", "s", "t"]]
    # alpha_b = 1.2: q = 6.5 + 12 = 18.5 > p = 10 + 7.8 = 17.8.
    assert blend.rank_blend([a, b], [1, 1.2], {}, frequency_penalty=0)[0][:2] == ["q", "p"]


def test_frequency_penalty_hand_checked():
    a = [["p", "q", "r", "s", "t"]]
    # p: 10 - 0.033 * 200 = 3.4 < q: 6.5 - 0 = 6.5 -> q first; r 3.3 < p 3.4.
    assert blend.rank_blend([a], [1], {"p": 200})[0][:3] == ["q", "p", "r"]


def test_new_individual_penalty_applies_from_rank_three():
    a = [["p", "q", "new_individual", "s", "t"]]
    b = [["new_individual", "q", "p", "s", "t"]]
    # new: 10 (b, rank 1) + 3.3 / 4 (a, rank 3) = 10.825; p: 10 + 3.3 = 13.3; q: 13.
    result = blend.rank_blend([a, b], [1, 1], {}, frequency_penalty=0)
    assert result == [["p", "q", "new_individual", "s", "t"]]
    # Without the penalty new would score 13.3 = p, and win the tie by string order? "new..." < "p".
    unpenalised = blend.rank_blend(
        [a, b], [1, 1], {}, frequency_penalty=0, new_individual_penalty=1.0
    )
    assert unpenalised[0][0] == "new_individual"


def test_matches_loop_reference_on_random_members():
    rng = np.random.default_rng(0)
    pool = [f"id{i}" for i in range(15)] + ["new_individual"]
    members = [[list(rng.choice(pool, 5, replace=False)) for _ in range(200)] for _ in range(6)]
    counts = {f"id{i}": int(rng.integers(1, 50)) for i in range(15)}
    alphas = rng.uniform(0, 2, 6).round(1)
    assert blend.rank_blend(members, alphas, counts) == blend_loop(members, alphas, counts)


def test_results_are_five_distinct_ids_and_deterministic():
    rng = np.random.default_rng(1)
    pool = [f"id{i}" for i in range(8)]
    members = [[list(rng.choice(pool, 5, replace=False)) for _ in range(50)] for _ in range(3)]
    first = blend.rank_blend(members, [1, 1, 1], {})
    assert all(len(set(row)) == 5 for row in first)
    assert first == blend.rank_blend(members, [1, 1, 1], {})


@pytest.mark.parametrize(
    ("members", "alphas", "message"),
    [
        (
            [[["a", "b", "c", "d", "e"]], [["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"]]],
            [1, 1],
            "member 1 has 2 images",
        ),
        ([[["a", "a", "c", "d", "e"]]], [1], "5 distinct labels"),
        ([[["a", "b", "c", "d", "e"]]], [1, 1], "one weight per member"),
        ([[["a", "b", "c", "d", "e"]]], [-1], ">= 0"),
        ([], [], "no members"),
    ],
)
def test_bad_input(members, alphas, message):
    with pytest.raises(ValueError, match=message):
        blend.rank_blend(members, alphas, {})


def _noisy_members(truth, pool, n_members, rng, accuracy):
    members = []
    for j in range(n_members):
        rows = []
        for label in truth:
            others = [p for p in pool if p != label]
            row = list(rng.choice(others, 5, replace=False))
            if rng.random() < accuracy[j]:
                row[int(rng.integers(0, 3))] = label
            rows.append(row)
        members.append(rows)
    return members


def test_search_never_scores_below_the_start_and_favours_good_members():
    rng = np.random.default_rng(2)
    pool = [f"id{i}" for i in range(30)] + ["new_individual"]
    truth = list(rng.choice(pool, 400))
    members = _noisy_members(truth, pool, 4, rng, accuracy=[0.9, 0.2, 0.2, 0.5])
    counts = {p: 1 for p in pool}
    start = metrics.map_at_k(truth, blend.rank_blend(members, [1, 1, 1, 1], counts))
    alphas, trace = blend.search_alphas(members, truth, counts, return_trace=True)
    searched = metrics.map_at_k(truth, blend.rank_blend(members, alphas, counts))
    assert searched >= start
    assert searched == pytest.approx(
        trace["score"].iloc[-1]
    )  # the fast scorer agrees with the metric
    assert trace["score"].iloc[0] == pytest.approx(start)
    assert alphas[0] > alphas[1] and alphas[0] > alphas[2]
    assert trace["score"].is_monotonic_increasing


@pytest.mark.parametrize("seed", range(5))
def test_search_property_on_random_data(seed):
    rng = np.random.default_rng(seed)
    pool = [f"id{i}" for i in range(12)] + ["new_individual"]
    truth = list(rng.choice(pool, 120))
    members = _noisy_members(truth, pool, 3, rng, accuracy=rng.uniform(0, 1, 3))
    counts = {p: int(rng.integers(1, 30)) for p in pool}
    alphas = blend.search_alphas(members, truth, counts, step=0.2)
    start = metrics.map_at_k(truth, blend.rank_blend(members, [1, 1, 1], counts))
    assert metrics.map_at_k(truth, blend.rank_blend(members, alphas, counts)) >= start - 1e-12


def test_load_members_aligns_and_checks(tmp_path):
    (tmp_path / "a.csv").write_text("image,predictions\nx.jpg,a b c d e\ny.jpg,b c d e f\n")
    (tmp_path / "b.csv").write_text(
        "image,predictions,scores\ny.jpg,f e d c b,1 1 1 1 1\nx.jpg,e d c b a,1 1 1 1 1\n"
    )
    images, members = out_of_fold.load_members([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert images == ["x.jpg", "y.jpg"]
    assert members[1] == [["e", "d", "c", "b", "a"], ["f", "e", "d", "c", "b"]]
    (tmp_path / "c.csv").write_text("image,predictions\nx.jpg,a b c d e\nz.jpg,a b c d e\n")
    with pytest.raises(
        ValueError,
        match=r"c.csv: covers other images .* 1 missing \(e.g. \['y.jpg'\]\), 1 extra \(e.g. \['z.jpg'\]\)",
    ):
        out_of_fold.load_members([tmp_path / "a.csv", tmp_path / "c.csv"])


def test_concatenated_embeddings_average_the_cosines():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    joined = blend.concatenate_embeddings([a, b], [3.0, 1.0])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = 0.75 * unit(a) @ unit(a).T + 0.25 * unit(b) @ unit(b).T
    np.testing.assert_allclose(joined @ joined.T, expected, atol=1e-6)
    with pytest.raises(ValueError, match="member 1 embeddings have shape"):
        blend.concatenate_embeddings([a, b[:3]])


def test_member_embeddings_must_align_with_the_split(tmp_path):
    vectors = embed.l2_normalize(np.eye(3, 4))
    for name, images in (("one", ["a", "b", "c"]), ("two", ["a", "c", "b"])):
        embed.save_embeddings(tmp_path / name / "valid.npz", images, vectors)
    joined = out_of_fold.load_member_embeddings([tmp_path / "one"], "valid", ["a", "b", "c"])
    np.testing.assert_array_equal(joined[0], vectors)
    with pytest.raises(
        ValueError, match=r"two/valid.npz: rows do not align .* row 1 is 'c', expected 'b'"
    ):
        out_of_fold.load_member_embeddings(
            [tmp_path / "one", tmp_path / "two"], "valid", ["a", "b", "c"]
        )
    with pytest.raises(ValueError, match=r"row 3 is '\(end of file\)', expected 'd'"):
        out_of_fold.load_member_embeddings([tmp_path / "one"], "valid", ["a", "b", "c", "d"])


def test_search_never_ends_below_its_best_member():
    """Five weak members and one good one: from all ones no single step of one weight lifts
    the blend to the good member's level; the second start, the good member alone, does."""
    rng = np.random.default_rng(7)
    pool = [f"id{i}" for i in range(40)] + ["new_individual"]
    truth = list(rng.choice(pool, 500))
    members = _noisy_members(truth, pool, 6, rng, accuracy=[0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    counts = {p: 1 for p in pool}
    best_alone = metrics.map_at_k(truth, blend.rank_blend(members, [0, 0, 0, 0, 0, 1], counts))
    all_ones = metrics.map_at_k(truth, blend.rank_blend(members, [1] * 6, counts))
    alphas, trace = blend.search_alphas(members, truth, counts, return_trace=True)
    searched = metrics.map_at_k(truth, blend.rank_blend(members, alphas, counts))
    assert searched >= best_alone > all_ones
    assert trace["start"].iloc[0] == "member 5 alone"
    assert searched == pytest.approx(trace["score"].iloc[-1])


def test_members_missing_images_and_per_image_galleries_match_the_loop():
    rng = np.random.default_rng(3)
    pool = [f"id{i}" for i in range(12)] + ["new_individual"]
    n = 150
    members = [[list(rng.choice(pool, 5, replace=False)) for _ in range(n)] for _ in range(4)]
    for j, member in enumerate(members[1:], start=1):  # members 1-3 miss a third of the images
        for i in range(n):
            if (i + j) % 3 == 0:
                member[i] = None
    galleries = [{f"id{i}": int(rng.integers(1, 80)) for i in range(12)} for _ in range(3)]
    counts = [galleries[i % 3] for i in range(n)]  # three folds, three galleries
    alphas = rng.uniform(0, 2, 4).round(1)
    assert blend.rank_blend(members, alphas, counts) == blend_loop(members, alphas, counts)
    # a member that misses an image adds no candidate to it, even at weight 0
    row = next(i for i in range(n) if members[1][i] is None)
    assert set(blend.rank_blend(members, [1, 1, 1, 1], counts)[row]) <= set(
        sum((m[row] for m in members if m[row] is not None), [])
    )


def test_blend_input_errors_for_missing_rows_and_galleries():
    a = [["p", "q", "r", "s", "t"], None]
    with pytest.raises(ValueError, match="image 1: no member has a prediction for it"):
        blend.rank_blend([a, a], [1, 1], {})
    with pytest.raises(ValueError, match="individual_counts has 1 galleries for 2 images"):
        blend.rank_blend([a, [a[0], a[0]]], [1, 1], [{}])


def write_oof(folder, rows):
    """An oof_predictions.csv of (image, five labels) rows, as the heads write them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,predictions"] + [f"{image},{' '.join(labels)}" for image, labels in rows]
    (folder / "oof_predictions.csv").write_text("\n".join(lines) + "\n")
    return folder


def labels_of(image, model):
    """Five labels that say which model predicted which image."""
    return [f"{model}-{image}", "x1", "x2", "x3", "x4"]


def test_out_of_fold_assembly_by_hand_with_three_folds(tmp_path):
    """Six photos in three folds; model A trained on every fold, B on folds 0 and 2 only. Each
    photo's prediction by A comes from the A model validated on its fold (which never trained
    on it); B does not vote on fold 1's photos."""
    fold_of = {"p0": 0, "p1": 1, "p2": 2, "p3": 0, "p4": 1, "p5": 2}
    members = []
    for name, folds in (("A", (0, 1, 2)), ("B", (0, 2))):
        for fold in folds:
            mine = [image for image, f in fold_of.items() if f == fold]
            folder = write_oof(
                tmp_path / f"{name}{fold}", [(i, labels_of(i, f"{name}{fold}")) for i in mine]
            )
            members.append(out_of_fold.Member(name, fold, 3, 0, folder))
    oof = out_of_fold.assemble_oof(members, fold_of)
    assert oof.images == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert oof.folds.tolist() == [0, 1, 2, 0, 1, 2]
    assert oof.names == ["A", "B"]
    firsts = [[None if row is None else row[0] for row in rows] for rows in oof.predictions]
    assert firsts == [
        ["A0-p0", "A1-p1", "A2-p2", "A0-p3", "A1-p4", "A2-p5"],
        ["B0-p0", None, "B2-p2", "B0-p3", None, "B2-p5"],
    ]
    assert oof.coverage() == {"A": 6, "B": 4}
    # on test every member votes, a name's weight shared among its folds
    shared = out_of_fold.fold_member_alphas(members, ["A", "B"], [0.6, 1.0])
    assert shared == pytest.approx([0.2, 0.2, 0.2, 0.5, 0.5])
    # a model asked to predict a photo it trained on is refused, naming file and photo
    write_oof(tmp_path / "A1", [("p1", labels_of("p1", "A1")), ("p0", labels_of("p0", "A1"))])
    with pytest.raises(ValueError, match=r"A1/oof_predictions.csv: image 'p0' lies in fold 0, but"):
        out_of_fold.assemble_oof(members, fold_of)
    write_oof(tmp_path / "A1", [("p9", labels_of("p9", "A1"))])
    with pytest.raises(ValueError, match="image 'p9' is not a training image of these folds"):
        out_of_fold.assemble_oof(members, fold_of)


def write_output(folder, fold, member=None, n_folds=3, snapshots=(), fold_groups=None):
    """A notebook output folder as find_members sees it: scores.json and predictions."""
    write_oof(folder, [])
    split = {"fold": fold, "n_folds": n_folds, "seed": 0, "fold_groups": fold_groups}
    scores = {"valid": {"map5": 0.5}, "split": split}
    (folder / "scores.json").write_text(
        json.dumps({**scores, **({"member": member} if member else {})})
    )
    for name in snapshots:
        write_oof(folder / "snapshots" / name, [])
    return folder


def test_find_members_reads_every_fold_and_snapshot(tmp_path):
    runs = tmp_path / "runs"
    write_output(runs / "kernel-a" / "04_effnet_arcface", 0, "b5 380px", snapshots=["epoch-005"])
    write_output(runs / "kernel-b" / "04_effnet_arcface", 1, "b5 380px", snapshots=["epoch-005"])
    write_output(runs / "03_resnet_arcmargin", 0)
    (runs / "kernel-b" / "04_effnet_arcface" / "snapshots" / "epoch-010").mkdir()  # no files
    found = out_of_fold.find_members(runs, ["03_resnet_arcmargin", "04_effnet_arcface"])
    assert [(m.name, m.fold, m.folder.relative_to(runs).as_posix()) for m in found] == [
        ("03_resnet_arcmargin", 0, "03_resnet_arcmargin"),
        ("b5 380px", 0, "kernel-a/04_effnet_arcface"),
        ("b5 380px epoch-005", 0, "kernel-a/04_effnet_arcface/snapshots/epoch-005"),
        ("b5 380px", 1, "kernel-b/04_effnet_arcface"),
        ("b5 380px epoch-005", 1, "kernel-b/04_effnet_arcface/snapshots/epoch-005"),
    ]
    # the blend's folds are the ones its members recorded
    assert out_of_fold.fold_assignment(found) == {"n_folds": 3, "seed": 0, "fold_groups": None}
    with pytest.raises(ValueError, match="no blend members: run the training notebooks"):
        out_of_fold.fold_assignment([])
    write_output(runs / "04_effnet_arcface-again", 1, "b5 380px")
    with pytest.raises(
        ValueError, match=r"two members named 'b5 380px' on fold 1: .* different `member` names"
    ):
        out_of_fold.find_members(runs, ["04_effnet_arcface"])
    write_output(runs / "04_effnet_arcface-again", 1, "b5 380px", n_folds=5)
    with pytest.raises(
        ValueError, match=r"different fold assignments \(n_folds, seed, fold_groups\)"
    ):
        out_of_fold.find_members(runs, ["04_effnet_arcface"])
    # folds by encounter are another assignment (the photo-by-photo ones record None)
    write_output(runs / "04_effnet_arcface-again", 2, "b5 380px", fold_groups="encounter")
    with pytest.raises(ValueError, match=r"\(3, 0, 'encounter'\) in .*04_effnet_arcface-again"):
        out_of_fold.find_members(runs, ["04_effnet_arcface"])
    (runs / "04_effnet_arcface-again" / "scores.json").write_text('{"valid": {}}')
    with pytest.raises(ValueError, match="no 'split'.*run notebook 04_effnet_arcface again"):
        out_of_fold.find_members(runs, ["04_effnet_arcface"])
    with pytest.raises(FileNotFoundError, match="no output of notebook 02_basic_cnn"):
        out_of_fold.find_members(runs, ["02_basic_cnn"])
