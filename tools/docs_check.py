"""Offline docs check: the work `nbdev_docs` does before Quarto renders.

`proc_nbs` builds `_proc/` with the `show_doc` cells and runs every export and import
cell of every notebook, so a broken import or a heavy module-level cell fails here.
It uses the spawn start method, hence the `__main__` guard.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    from nbdev.serve import proc_nbs
    cache = proc_nbs(force=True)
    nbs = sorted(p.name for p in Path(cache).glob('*.ipynb'))
    if not nbs: sys.exit('docs check: _proc/ holds no notebooks')
    print(f'docs check: processed {len(nbs)} notebooks into {cache}')
