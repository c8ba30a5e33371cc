"""The package's shape, checked: short functions, and imports that only go down the floors (notebook order).

The floors are the notebooks' numbers: `files` (00a) at the bottom, `cli` (12) near the top, `testing` (90) last.
A module may import (at module level or inside a function) only modules on lower floors; so there are no cycles.
"""
import ast, re
from pathlib import Path

PKG = Path(__file__).parents[1]/"brain_tumor_cls"
NBS = Path(__file__).parents[1]/"nbs"


def floors() -> dict:
    "module name -> its notebook's sort key (the floor)."
    out = {}
    for nb in NBS.glob("[0-9]*.ipynb"):
        m = re.search(r'#\| default_exp (\w+)', nb.read_text("utf-8"))
        if m: out[m.group(1)] = nb.name
    return out


def imports_of(path: Path) -> set:
    "brain_tumor_cls modules imported anywhere in a module (relative or absolute)."
    tree, out = ast.parse(path.read_text("utf-8")), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if n.level == 1 and mod: out.add(mod.split(".")[0])
            elif n.level == 1: out |= {a.name for a in n.names}
            elif mod.startswith("brain_tumor_cls."): out.add(mod.split(".")[1])
            elif mod == "brain_tumor_cls": out |= {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("brain_tumor_cls.")}
    return out


def test_no_function_over_60_lines():
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p in PKG.glob("*.py") if p.name != "_modidx.py"
            for n in ast.walk(ast.parse(p.read_text("utf-8"))) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_imports_only_go_down():
    fl = floors()
    up = [f"{m} ({fl[m]}) imports {d} ({fl[d]})" for m in fl if (PKG/f"{m}.py").exists()
          for d in imports_of(PKG/f"{m}.py") if d in fl and d != m and fl[d] > fl[m]]
    assert not up, up


def test_cli_is_small():
    assert len((PKG/"cli.py").read_text("utf-8").splitlines()) < 250
