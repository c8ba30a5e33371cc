"""Render every LaTeX formula of every notebook with KaTeX; fail on a broken one.

The docs site renders maths with KaTeX/MathJax in the browser, where a broken formula
shows up as red source text nobody notices. This check extracts `$...$` and `$$...$$`
from the markdown cells (code spans and fenced code left out) and renders each with
KaTeX in Node (`throwOnError: true`). Needs `node` and KaTeX from the npm registry:
`npm install --prefix .ci/node katex`.
"""
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT/'.ci'/'node'

_fence = re.compile(r'```.*?```', re.S)
_code = re.compile(r'`[^`\n]*`')
_display = re.compile(r'\$\$(.+?)\$\$', re.S)
# pandoc's rule for inline maths: no space after the opening $, none before the closing $,
# and the closing $ not followed by a digit.
_inline = re.compile(r'(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\d)')

def formulas(md:str):
    "Yield (latex, display) pairs found in a markdown string"
    md = _code.sub('', _fence.sub('', md))
    for m in _display.finditer(md): yield m.group(1).strip(), True
    md = _display.sub('', md)
    for m in _inline.finditer(md): yield m.group(1).strip(), False

def notebook_formulas(nbs=ROOT/'nbs'):
    out = []
    for nb in sorted(Path(nbs).glob('*.ipynb')):
        for i, cell in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
            if cell['cell_type'] != 'markdown': continue
            src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
            out += [dict(where=f'{nb.name} cell {i}', tex=t, display=d) for t, d in formulas(src)]
    return out

JS = r"""
const katex = require('katex');
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const bad = [];
for (const it of items) {
  try { katex.renderToString(it.tex, {displayMode: it.display, throwOnError: true}); }
  catch (e) { bad.push({where: it.where, tex: it.tex, error: String(e.message || e)}); }
}
process.stdout.write(JSON.stringify(bad));
"""

def render_errors(items):
    "Render `items` with KaTeX in node; return the ones that fail"
    r = subprocess.run(['node', '-e', JS], input=json.dumps(items), capture_output=True, text=True,
                       env={'NODE_PATH': str(NODE_DIR/'node_modules'), 'PATH': '/usr/bin:/usr/local/bin:/bin'})
    if r.returncode: sys.exit(f'KaTeX check could not run (is katex installed in {NODE_DIR}?):\n{r.stderr}')
    return json.loads(r.stdout)

if __name__ == '__main__':
    # The check must be able to fail: a broken formula has to be caught.
    probe = [dict(where='self-test', tex=r'\frac{1}{', display=True), dict(where='self-test', tex=r'\alpha_k^c', display=False)]
    assert [b['tex'] for b in render_errors(probe)] == [r'\frac{1}{'], 'KaTeX self-test failed'
    items = notebook_formulas()
    bad = render_errors(items)
    for b in bad: print(f"{b['where']}: {b['tex']!r}\n    {b['error']}")
    if bad: sys.exit(f'{len(bad)} of {len(items)} formulas fail to render')
    print(f'LaTeX check: {len(items)} formulas in {len({i["where"].split()[0] for i in items})} notebooks render with KaTeX')
