import matplotlib.pyplot as plt
import pandas as pd
from conftest import HAPPYWHALE_METADATA, require

from whaleutils.datasets import data, eda


def test_paper_claims_on_the_real_metadata():
    train = data.read_train(require(HAPPYWHALE_METADATA))
    claims = eda.paper_claims(train).set_index("claim")
    print("\n" + claims.to_string())
    assert (
        claims.loc["training images", "this data"] == 51_033
        and claims.loc["training images", "agrees"]
    )
    assert claims.loc["individuals", "this data"] == 15_587 and claims.loc["individuals", "agrees"]
    # Top five species: bottlenose (incl. the typo), beluga, humpback, blue, false killer whale.
    top5 = (9664 + 1117 + 7443 + 7392 + 4830 + 3326) / 51_033
    assert claims.loc[
        "top five species' share of images (normalised species)", "this data"
    ] == round(top5, 4)


def test_species_counts_keep_raw_spellings_under_their_species():
    train = pd.DataFrame(
        {
            "species": ["killer_whale", "killer_whale", "beluga"],
            "species_raw": ["kiler_whale", "killer_whale", "beluga"],
            "individual_id": ["a", "b", "c"],
        }
    )
    table = eda.species_counts(train)
    assert table[["species", "species_raw", "images", "species_images"]].values.tolist() == [
        ["killer_whale", "kiler_whale", 1, 2],
        ["killer_whale", "killer_whale", 1, 2],
        ["beluga", "beluga", 1, 1],
    ]


def test_figures_draw(small_synth):
    train = data.read_train(small_synth)
    for figure in (
        eda.plot_species(train),
        eda.plot_photos_per_individual(train),
        eda.plot_box_sizes(eda.box_sizes(train, small_synth / "train_images")),
        eda.plot_samples(
            train, small_synth / "train_images", train["species"].unique()[:2].tolist(), 2
        ),
    ):
        assert figure.axes
        plt.close(figure)
