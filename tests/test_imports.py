"""Every module of unetkit imports.

Most tests import only what they use, so a module whose imports break (a name a library gained in
a later version than the declared floor, tools/test_lowest_deps.sh) could go unnoticed; this test
imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import unetkit

MODULES = sorted(info.name for info in pkgutil.walk_packages(unetkit.__path__, prefix="unetkit."))


def test_the_package_has_its_subpackages():
    # A walk that found nothing would make the test below vacuous.
    for sub in ("data", "planning", "preprocessing", "models", "training", "inference", "evaluation",
                "benchmark", "cli"):
        assert f"unetkit.{sub}" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
