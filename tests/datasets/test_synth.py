import json

import pandas as pd
import pytest
from conftest import HAPPYWHALE_METADATA, SMALL_CONFIG, require

from whaleutils.analysis import baselines
from whaleutils.datasets import data, synth, validate


def _files(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_whatever_the_workers(small_synth, tmp_path):
    again = tmp_path / "again"
    synth.generate(again, SMALL_CONFIG, workers=2)
    assert _files(again) == _files(small_synth)


def test_other_seed_gives_other_images(tmp_path):
    a = synth.generate(tmp_path / "a", synth.SynthConfig(seed=1, individuals=6, max_side=64))
    b = synth.generate(tmp_path / "b", synth.SynthConfig(seed=2, individuals=6, max_side=64))

    def photos(folder):  # the pixels only: names and the config card differ by construction
        return {content for name, content in _files(folder).items() if name.endswith(".jpg")}

    assert a["train_images"] > 0 and b["train_images"] > 0
    assert not photos(tmp_path / "a") & photos(tmp_path / "b")  # no photo in common


def test_small_set_is_a_sound_data_set(small_synth):
    assert validate.validate_dataset(small_synth) == []
    train = data.read_train(small_synth)
    solution = data.read_solution(small_synth / "test_solution.csv")
    assert train["individual_id"].nunique() == SMALL_CONFIG.individuals
    assert (train["box"] != "").mean() > 0.95  # train rows carry a box around the animal
    known = solution[solution["individual_id"] != "new_individual"]
    assert set(known["individual_id"]) <= set(train["individual_id"])
    sizes = [max(data.parse_box(b)[2:]) for b in train["box"] if b]
    assert max(sizes) <= SMALL_CONFIG.max_side


def test_generate_keeps_a_finished_set_and_refuses_others(small_synth, tmp_path):
    assert synth.generate(small_synth, SMALL_CONFIG)["train_images"] > 0  # kept as it is
    with pytest.raises(FileExistsError, match="another synthetic data set"):
        synth.generate(small_synth, synth.SynthConfig(seed=99, individuals=40, max_side=160))
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.generate(user_folder, SMALL_CONFIG)
    assert (user_folder / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"individuals": 2}, "individuals=2"),
        ({"max_side": 8}, "max_side=8"),
        ({"new_share": 1.0}, "new_share=1.0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synth.SynthConfig(**kwargs)


def test_shipped_profile_is_what_the_script_derives():
    from scripts.derive_synth_profile import derive_profile

    root = require(HAPPYWHALE_METADATA)
    derived = derive_profile(
        pd.read_csv(root / "train.csv"), pd.read_csv(root / "test_image_sizes.csv")
    )
    assert json.loads(json.dumps(derived)) == synth.load_profile()
    assert derived["n_images"] == 51_033 and derived["n_individuals"] == 15_587


def test_label_structure_follows_the_real_statistics():
    plan = synth.plan_labels(synth.SynthConfig())
    train, test = plan[plan["split"] == "train"], plan[plan["split"] == "test"]
    photos = train["individual_id"].value_counts()
    # Real train.csv: 59% of individuals have one photo; a long tail, here capped at 20.
    assert 0.45 < (photos == 1).mean() < 0.7
    assert photos.max() == 20
    assert 0.12 < test["is_new"].mean() < 0.18  # about 15% new_individual test images
    typos = set(train["species_raw"]) - set(train["species"])
    assert typos and typos <= set(data.SPECIES_ALIASES)
    assert (data.normalize_species(train["species_raw"]) == train["species"]).all()
    assert (plan[["width", "height"]].max(axis=1) <= 512).all()


@pytest.mark.slow
def test_default_set_is_honestly_difficult(default_synth):
    """Fixed once (see README): learned identity features are needed on the default set."""
    report = baselines.difficulty_report(default_synth)
    print(json.dumps(report, indent=1))
    assert report["species_oracle"]["map5"] < 0.25
    assert report["raw_pixel_nn"]["map5"] < 0.35
    # The baselines are not broken either: each finds some identities.
    assert report["species_oracle"]["map5_known"] > 0.1
    assert report["raw_pixel_nn"]["map5"] > 0.0
