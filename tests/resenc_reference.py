"""nnU-Net v2.8.1's ResEnc planners as a reference: the fingerprints they are run on, and how.

The fingerprints are the default planner's parity cases (``test_planning.CASES``) plus nnU-Net's own
fingerprint of Hippocampus (tests/fixtures/resenc_plans/hippocampus_fingerprint_nnunet.json, made by
``nnUNetv2_extract_fingerprint``). :func:`run_nnunet_resenc` feeds them to nnU-Net's planner classes in
the comparison venv (benchmarks/nnunet_resenc_plans.py); its output is kept as a fixture so that the
default test run does not need nnU-Net. Regenerate the fixture with::

    PYTHONPATH=$PWD/src python tests/resenc_reference.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures" / "resenc_plans"
REFERENCE_PLANS = FIXTURES / "nnunet_v2.8.1_resenc_plans.json"
HIPPOCAMPUS_FINGERPRINT = FIXTURES / "hippocampus_fingerprint_nnunet.json"
HIPPOCAMPUS = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2}}
WORKER = TESTS.parent / "benchmarks" / "nnunet_resenc_plans.py"


def reference_cases() -> dict[str, dict]:
    """Case name -> fingerprint and dataset.json fields, as the nnU-Net worker reads them."""
    sys.path.insert(0, str(TESTS))
    from test_planning import CASES

    cases = {name: dict(case) for name, case in CASES.items()}
    cases["hippocampus"] = dict(HIPPOCAMPUS, fingerprint_file=str(HIPPOCAMPUS_FINGERPRINT))
    return cases


def case_fingerprint(case: dict) -> dict:
    """The fingerprint dict unetkit's planner takes for a reference case."""
    if "fingerprint_file" in case:
        return json.loads(Path(case["fingerprint_file"]).read_text())
    return {"spacings": case["spacings"], "shapes_after_crop": case["shapes"],
            "median_relative_size_after_cropping": case["rel"], "foreground_intensity_properties_per_channel": {}}


def run_nnunet_resenc(cases: dict[str, dict], nnunet_python: str | Path) -> dict:
    """nnU-Net's ResEnc M/L/XL plans for ``cases`` (the worker's JSON output)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        done = subprocess.run([str(nnunet_python), str(WORKER), str(path)], capture_output=True, text=True,
                              check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{WORKER.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    from references import NNUNET_PYTHON

    result = run_nnunet_resenc(reference_cases(), NNUNET_PYTHON)
    REFERENCE_PLANS.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(REFERENCE_PLANS)
