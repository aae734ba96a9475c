"""dataset.json is read as nnU-Net v2 writes it, and every malformation is named."""

from __future__ import annotations

import json

import pytest

from unetkit.data.dataset import load_dataset
from unetkit.data.errors import DatasetJsonError


def _rewrite(root, **changes):
    spec = json.loads((root / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    (root / "dataset.json").write_text(json.dumps(spec))


def test_reads_cases_in_channel_order(raw3d):
    ds = load_dataset(raw3d)
    cases = ds.training_cases()
    assert len(cases) == 8 and ds.num_channels == 1
    assert cases[0].name == "case_000" and cases[0].label.name == "case_000.nii.gz"
    assert ds.foreground_labels == [1, 2] and ds.num_segmentation_heads == 3


@pytest.mark.parametrize("changes, fragment", [
    ({"labels": None}, "'labels'"),
    ({"file_ending": "nii"}, "file_ending"),
    ({"file_ending": ".xyz"}, "not supported"),
    ({"channel_names": {"1": "CT"}}, "indices"),
    ({"labels": {"tumour": 1}}, "background"),
    ({"labels": {"background": 0, "a": 1.5}}, "'a'"),
    ({"numTraining": -1}, "numTraining"),
    ({"labels": {"background": 0, "a": 1, "ignore": 1}}, "ignore"),
    ({"labels": {"background": 0, "whole": [1, 2], "core": [2]}}, "regions_class_order"),
])
def test_malformed_dataset_json_names_the_key(raw3d, changes, fragment):
    _rewrite(raw3d, **changes)
    with pytest.raises(DatasetJsonError) as info:
        load_dataset(raw3d)
    assert "dataset.json" in str(info.value) and fragment in str(info.value)


def test_not_json(raw3d):
    (raw3d / "dataset.json").write_text("{ not json")
    with pytest.raises(DatasetJsonError, match="not valid JSON"):
        load_dataset(raw3d)


def test_regions_and_ignore_label(raw3d):
    _rewrite(raw3d, labels={"background": 0, "whole": [1, 2], "core": 2, "ignore": 3},
             regions_class_order=[1, 2])
    ds = load_dataset(raw3d)
    assert ds.has_regions and ds.ignore_label == 3
    assert ds.num_segmentation_heads == 2


def test_explicit_mapping_cannot_escape_the_folder(raw3d):
    _rewrite(raw3d, dataset={"case_000": {"images": ["../outside_0000.nii.gz"], "label": "labelsTr/case_000.nii.gz"}})
    ds = load_dataset(raw3d)
    with pytest.raises(DatasetJsonError, match="escapes"):
        ds.training_cases()
