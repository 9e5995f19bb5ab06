"""scripts/channel_fusion.py: two channels' candidate pairs joined, a missing candidate's
evidence imputed as weak."""

import numpy as np
import pandas as pd

from scripts import channel_fusion


def pairs(rows):
    columns = ["query", "individual", "similarity", "similarity_rank", "lnbnn", "lnbnn_rank",
               "inliers", "matches", "photo"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_the_union_of_two_channels_with_weak_evidence_where_one_is_silent():
    sift = pairs([("q", "a", 0.9, 1, 5.0, 1, 30, 40, 0), ("q", "b", 0.5, 2, 2.0, 2, 4, 9, 3)])
    xfeat = pairs([("q", "a", 0.9, 1, 7.0, 1, 20, 25, 1), ("q", "c", np.nan, 0, 3.0, 2, 6, 8, 5)])
    joined = channel_fusion.join_channels(sift, xfeat).set_index("individual")
    assert sorted(joined.index) == ["a", "b", "c"]
    assert joined.loc["a", "lnbnn_1"] == 5.0 and joined.loc["a", "lnbnn_2"] == 7.0
    # b: XFeat did not list it: its lowest score, the rank after its last, no inliers
    assert joined.loc["b", "lnbnn_2"] == 3.0 and joined.loc["b", "lnbnn_rank_2"] == 3
    assert joined.loc["b", "inliers_2"] == 0 and joined.loc["c", "inliers_1"] == 0
    assert joined.loc["c", "lnbnn_1"] == 2.0 and joined.loc["c", "lnbnn_rank_1"] == 3
    one = channel_fusion.channel(joined.reset_index(), "_2")
    assert list(one.columns) == ["query", "individual", "similarity", "similarity_rank",
                                 "lnbnn", "lnbnn_rank", "inliers"]  # fmt: skip
