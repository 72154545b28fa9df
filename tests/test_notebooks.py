"""The notebooks execute top to bottom in a fresh kernel, with the results they claim."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_RUN = Path(__file__).resolve().parent.parent / "notebooks" / "run.py"
_spec = importlib.util.spec_from_file_location("notebooks_run", _RUN)
assert _spec is not None and _spec.loader is not None
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)

EXPECTED = {
    "end_to_end.ipynb": ["100.0000 % elements bit-exact", "TFLite int8 accuracy",
                         "image/png"],
    "custom_quantizer.ipynb": ["reloaded predictions identical: True",
                               "quantizer class 'StdClipQuantizer'"],
}


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.extend(str(k) + str(v) for k, v in out.get("data", {}).items())
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_notebook_executes(name):
    nb = runner.execute(name)  # raises nbclient's CellExecutionError on any failure
    text = _text(nb)
    for expected in EXPECTED[name]:
        assert expected in text, (name, expected)
