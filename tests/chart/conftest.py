"""Fixtures of the chart tests (helpers live in chartlib.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from chartlib import CASES, render


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(name, values) of the defaults and of each example file."""
    return request.param, CASES[request.param]


@pytest.fixture
def objects(case: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return render(case[1])


@pytest.fixture(scope="session")
def inferd_bin() -> Path:
    """The release binary `make chart-test` names in INFERD_BIN (never built here)."""
    value = os.environ.get("INFERD_BIN")
    if not value:
        pytest.fail("INFERD_BIN is not set: run `make chart-test` or point it at inferd")
    path = Path(value)
    if not os.access(path, os.X_OK):
        pytest.fail(f"INFERD_BIN={path} is not an executable: run `make build` first")
    return path
