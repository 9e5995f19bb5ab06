# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Exploratory data analysis
#
# **Purpose.** Know the data before modelling: how many photos each species and each individual
# has, how the species names are spelled, how large the animal is in the frame, and whether the
# paper's statements about the data hold on the data loaded here.
#
# **Inputs.** A Happywhale-format data set (`data_dir`; on Kaggle the competition input).
# **Outputs** (in `out_dir`): `species_counts.csv`, `paper_claims.csv`, and the figures
# `species.png`, `photos_per_individual.png`, `box_sizes.png`, `samples.png`.
# **Accelerator:** none. **Expected time:** under a minute (the real metadata, no images: seconds).

# %% tags=["parameters"]
data_dir = None  # None: Kaggle's /kaggle/input/happy-whale-and-dolphin
out_dir = "runs/local/01_eda"
species_in_grid = 8
photos_per_species = 4
seed = 0

# %% [markdown]
# ## Setup

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from whaleutils.contracts import outputs
from whaleutils.datasets import data, eda

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
data_path = data.find_data_dir(data_dir)
train = data.read_train(data_path)
layout = data.Layout(data_path)
has_images = layout.images("train").is_dir()
print(f"{data_path}: {len(train):,} training rows; images present: {has_images}")

# %% [markdown]
# ## Species, raw and normalised
# The competition's `train.csv` spells some species two ways (`bottlenose_dolpin`, `kiler_whale`)
# and names the short-finned pilot whale three ways; `data.normalize_species` merges them.

# %%
species = eda.species_counts(train)
species.to_csv(out / "species_counts.csv", index=False)
print(
    f"{train['species_raw'].nunique()} raw species strings -> {train['species'].nunique()} species"
)
figure = eda.plot_species(train)
figure.savefig(out / "species.png", dpi=110)
plt.show()

# %% [markdown]
# ## Photos per individual
# A long tail: most individuals have one photo, so most test photos of them will be of animals
# seen once or never. This is why the model is a metric-learning embedding with a
# nearest-neighbour head rather than a classifier.

# %%
figure = eda.plot_photos_per_individual(train)
figure.savefig(out / "photos_per_individual.png", dpi=110)
plt.show()

# %% [markdown]
# ## Boxes
# Training rows carry a box around the animal; cropping to it removes most of the water.

# %%
boxes = eda.box_sizes(train, layout.images("train") if has_images else None)
figure = eda.plot_box_sizes(boxes)
figure.savefig(out / "box_sizes.png", dpi=110)
plt.show()

# %% [markdown]
# ## Sample photos per species

# %%
files = [
    "species_counts.csv",
    "paper_claims.csv",
    "species.png",
    "photos_per_individual.png",
    "box_sizes.png",
]
if has_images:
    top_species = train["species"].value_counts().index[:species_in_grid].tolist()
    figure = eda.plot_samples(train, layout.images("train"), top_species, photos_per_species, seed)
    figure.savefig(out / "samples.png", dpi=110)
    plt.show()
    files.append("samples.png")

# %% [markdown]
# ## The paper's claims against this data
# On the real competition metadata (`../shared/data/happywhale`) the counts agree with the paper;
# the top-five share depends on whether the typos are merged. On the synthetic set the numbers
# differ by design (it is a small sample of the same distributions).

# %%
claims = eda.paper_claims(train)
claims.to_csv(out / "paper_claims.csv", index=False)
claims

# %% [markdown]
# ## What to look at
# `species.png` (the raw spellings beside the normalised species), `photos_per_individual.png`
# (the long tail: most individuals have one photo, so they can only be new in validation) and
# `paper_claims.csv` (which of the paper's statements about the data hold here).

# %%
outputs.write_outputs(out, files)
