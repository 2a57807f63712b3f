import pandas as pd

from pipeline.config import Params, from_dict
from pipeline.protocol import describe_protocol


def test_the_protocol_names_folds_grouping_standardisation_and_chance():
    params = from_dict(Params, {"data": {"labels": ["a", "b", "c", "d"], "folds": 0},
                                "train": {"speaker_standardization": True}}, "")
    manifest = pd.DataFrame({"clip_id": list("pqrstu"), "fold": [0, 0, 1, 1, 2, -1],
                             "speaker": list("xxyyzw"), "label": ["a", "a", "a", "b", "c", "d"]})
    protocol = describe_protocol(params, manifest)
    assert protocol["folds"] == {"scheme": "leave one speaker out", "count": 3, "group_by": "speaker"}
    assert protocol["speaker_standardization"] == "transductive" and protocol["transductive"]
    assert protocol["chance"] == {"uar": 0.25, "accuracy": 0.5}
    assert protocol["test_set"]["clips"] == 1
    assert protocol["summary"].startswith("leave one speaker out (3 folds); speaker standardisation: transductive")
    honest = describe_protocol(from_dict(Params, {"data": {"labels": ["a", "b"], "folds": 5},
                                                  "train": {"speaker_standardization": "train-speakers",
                                                            "feature_normalization": "utterance"}}, ""))
    assert not honest["transductive"] and honest["folds"]["count"] == 5
    assert "non-transductive" in honest["summary"] and "feature normalisation: utterance" in honest["summary"]
    assert honest["chance"] == {"uar": 0.5}
