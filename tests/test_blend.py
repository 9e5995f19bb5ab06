import numpy as np
import pytest

from whaleutils import blend, embed, metrics

W = blend.RANK_WEIGHTS


def blend_loop(members, alphas, counts, rank_weights=W, frequency_penalty=0.033, new_penalty=4.0):
    """The scoring rule as a plain loop over images, members and ranks: the reference."""
    out = []
    for i in range(len(members[0])):
        scores = {}
        for alpha, member in zip(alphas, members, strict=True):
            for rank, label in enumerate(member[i]):
                weight = rank_weights[rank]
                if label == "new_individual" and rank >= 2:
                    weight /= new_penalty
                scores[label] = scores.get(label, 0.0) + alpha * weight
        for label in scores:
            scores[label] -= frequency_penalty * (
                0 if label == "new_individual" else counts.get(label, 0)
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
    images, members = blend.load_members([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert images == ["x.jpg", "y.jpg"]
    assert members[1] == [["e", "d", "c", "b", "a"], ["f", "e", "d", "c", "b"]]
    (tmp_path / "c.csv").write_text("image,predictions\nx.jpg,a b c d e\nz.jpg,a b c d e\n")
    with pytest.raises(
        ValueError,
        match=r"c.csv: covers other images .* 1 missing \(e.g. \['y.jpg'\]\), 1 extra \(e.g. \['z.jpg'\]\)",
    ):
        blend.load_members([tmp_path / "a.csv", tmp_path / "c.csv"])


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
    joined = blend.load_member_embeddings([tmp_path / "one"], "valid", ["a", "b", "c"])
    np.testing.assert_array_equal(joined[0], vectors)
    with pytest.raises(
        ValueError, match=r"two/valid.npz: rows do not align .* row 1 is 'c', expected 'b'"
    ):
        blend.load_member_embeddings([tmp_path / "one", tmp_path / "two"], "valid", ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"row 3 is '\(end of file\)', expected 'd'"):
        blend.load_member_embeddings([tmp_path / "one"], "valid", ["a", "b", "c", "d"])


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
