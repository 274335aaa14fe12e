"""scikit-dimension 0.5.0's shipped reference values (``skdim/tests/reference/fixtures.json``:
R intrinsicDimension / ider, DADApy, the authors' MATLAB / Octave code) and the deterministic
data sets they were computed on, for parity checks of our estimators. Needs ``skdim`` installed
(the ``test`` / ``geometry`` extras)."""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib


@functools.cache
def load() -> tuple[dict, dict, dict]:
    """``(fixtures, id_datasets, dup_datasets)``: the reference values by package and data set,
    and the data sets ``{name: array}`` (with and without duplicate points)."""
    import skdim

    folder = pathlib.Path(skdim.__file__).parent / "tests" / "reference"
    if not (folder / "fixtures.json").is_file():
        raise FileNotFoundError(f"{folder}: scikit-dimension's reference fixtures are missing "
                                "(expected scikit-dimension 0.5.0)")
    spec = importlib.util.spec_from_file_location("skdim_reference_data", folder / "data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    fixtures = json.loads((folder / "fixtures.json").read_text())
    return fixtures, data.id_datasets(), data.dup_datasets()
