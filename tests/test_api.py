"""Package surface: __all__ resolves, one Keras import point, no env side effects."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import tfmot_ext

PKG = Path(tfmot_ext.__file__).parent


def test_all_names_resolve():
    for name in tfmot_ext.__all__:
        assert hasattr(tfmot_ext, name), name
    for mod in pkgutil.iter_modules([str(PKG)]):
        m = importlib.import_module(f"tfmot_ext.{mod.name}")
        assert hasattr(m, "__all__"), mod.name
        for name in m.__all__:
            assert hasattr(m, name), f"{mod.name}.{name}"


def test_keras_is_imported_only_in_compat():
    pattern = re.compile(r"^\s*(import|from)\s+(tf_keras|keras|tensorflow\.keras)\b", re.M)
    offenders = [p.name for p in PKG.glob("*.py")
                 if p.name != "_compat.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_import_sets_no_environment_variable_beyond_tfmot():
    code = (
        "import os, json; import tensorflow_model_optimization; a = dict(os.environ); "
        "import tfmot_ext; b = dict(os.environ); print(json.dumps(a == b))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "true"


def test_version():
    assert re.match(r"\d+\.\d+", tfmot_ext.__version__)
