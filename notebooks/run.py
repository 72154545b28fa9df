"""Execute the notebooks (and with ``--inplace`` store their outputs).

    python notebooks/run.py --inplace        # re-execute and save outputs
    python notebooks/run.py                  # execute only (what the tests do)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("end_to_end.ipynb", "custom_quantizer.ipynb")


def execute(name: str, inplace: bool = False, timeout: int = 900) -> object:
    """Run every cell of ``notebooks/<name>`` in a fresh kernel; raise on any error."""
    import nbformat
    from nbclient import NotebookClient

    path = HERE / name
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    if inplace:  # keep what a reader needs: results, not the kernel's log stream
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return nb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inplace", action="store_true", help="save the outputs into the files")
    p.add_argument("names", nargs="*", default=list(NOTEBOOKS))
    args = p.parse_args(argv)
    for name in args.names:
        t0 = time.perf_counter()
        execute(name, args.inplace)
        print(f"{name}: ok ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
