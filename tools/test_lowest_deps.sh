#!/usr/bin/env bash
# Install the lowest versions that pyproject.toml declares and run fast tests against them, so that
# every ">=" floor in [project] dependencies is one that works, not a guess.
#
#   tools/test_lowest_deps.sh [VENV_DIR] [PYTEST_TARGET ...]
#
# VENV_DIR (default /tmp/unetkit-lowest-deps) is deleted and made anew; it must lie outside the
# repository. PYTEST_TARGETs replace the default fast subset (pass `tests` for the whole fast suite).
# Environment: PYTHON (interpreter for the venv, default python3), TORCH_VERSION (default 2.13.0);
# pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS, ...) choose where torch's wheel comes from.
#
# torch is the exception: it is installed at TORCH_VERSION, not at its floor (the floor's CPU build is
# not on this project's machines, and pip would otherwise fetch a multi-GB CUDA build). Its floor is
# derived from the torch APIs the code calls (docs/dependencies.md), not tested here.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd -P)
venv=${1:-/tmp/unetkit-lowest-deps}
shift $(( $# > 0 ? 1 : 0 ))
python=${PYTHON:-python3}
torch_version=${TORCH_VERSION:-2.13.0}

venv_abs=$(realpath -m "$venv")
case "$venv_abs/" in
    "$repo"/*) echo "error: $venv_abs lies inside the repository $repo; give a folder outside it" >&2; exit 2 ;;
esac
# The folder is deleted below: refuse one that holds anything but an earlier venv.
if [[ -e "$venv_abs" && ! -f "$venv_abs/pyvenv.cfg" && -n "$(ls -A "$venv_abs" 2>/dev/null)" ]]; then
    echo "error: $venv_abs exists and is not a virtual environment; give a new or empty folder" >&2; exit 2
fi

# The default subset: every test file (new ones included) except the model zoo and
# kernel-workaround ones (torch-only code, minutes of CPU), test_ddp and test_demo (long) and
# test_stats_crosscheck (needs the dev extra's pandas/statsmodels). It imports every unetkit module
# (test_imports) and runs the code paths of each pinned library; docs/dependencies.md says which
# test covers which.
default_tests=(
    tests --ignore=tests/test_models.py --ignore-glob='tests/test_zoo_*.py'
    --ignore=tests/test_kernel_workarounds.py --ignore=tests/test_ddp.py --ignore=tests/test_demo.py
    --ignore=tests/test_stats_crosscheck.py
)
if (( $# == 0 )); then set -- "${default_tests[@]}"; fi

start=$SECONDS
rm -rf "$venv_abs"
"$python" -m venv "$venv_abs"
vpy=$venv_abs/bin/python

# Pins derived from pyproject.toml on every run, so that they cannot drift from the declared floors.
constraints=$venv_abs/lowest-constraints.txt
"$vpy" - "$repo/pyproject.toml" "$torch_version" > "$constraints" <<'PY'
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

pyproject, torch_version = sys.argv[1], sys.argv[2]
with open(pyproject, "rb") as fh:
    deps = tomllib.load(fh)["project"]["dependencies"]
for dep in deps:
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][^,;\s]*)\s*", dep)
    if match is None:
        sys.exit(f"{pyproject}: dependency {dep!r} is not of the form 'name>=floor'; "
                 "this script pins every dependency to its floor")
    name, floor = match.groups()
    print(f"{name}=={torch_version if name.lower() == 'torch' else floor}")
PY
echo "== constraints (from pyproject.toml; torch at $torch_version, not its floor)"
cat "$constraints"

# torch first, alone, so that nothing later can make pip pick another torch build.
"$vpy" -m pip install --quiet -c "$constraints" "torch==$torch_version"
# unetkit with every dependency at its floor; pytest latest (the dev extra's other tools are not needed).
"$vpy" -m pip install --quiet -c "$constraints" -e "$repo" pytest
echo "== installed versions of the pinned dependencies"
"$vpy" - "$constraints" <<'PY'
import sys
from importlib.metadata import version

from pip._vendor.packaging.version import Version

wrong = []
for line in open(sys.argv[1]):
    name, wanted = line.strip().split("==")
    got = version(name)
    print(f"{name}=={got}")
    if Version(Version(got).public) != Version(wanted):  # 1.24 == 1.24.0; 2.13.0+cpu == 2.13.0
        wrong.append(f"{name}: installed {got}, pinned {wanted}")
if wrong:
    sys.exit("pins not honoured: " + "; ".join(wrong))
PY
echo "== install took $((SECONDS - start)) s; running: pytest -q -m 'not slow' -x $*"
cd "$repo"
# CI unset: the independent references (MONAI, Ray, ...) come with the dev extra, not installed here,
# so their tests skip instead of failing as they must under .ci/run.
env -u PYTHONPATH -u CI "$vpy" -m pytest -q -p no:cacheprovider -m "not slow" -x "$@"
echo "== total $((SECONDS - start)) s"
