"""Build the course site: every notebook as a static HTML page (nbconvert, the JupyterLab look), with the
outputs it is committed with, and a table of contents in reading order on every page.

    python scripts/make_site.py                         # write _site/ (git-ignored)
    python scripts/make_site.py --out DIR               # elsewhere
    python scripts/make_site.py --screenshot docs/index.png   # and a picture of its index (needs chromium)

Quarto (nbdev's own site builder) cannot be installed on these machines, so the pages come from nbconvert.
Reading order: nbs/index.ipynb (the home page), the numbered notebooks by number, then nbs/experiments/.
Nothing is executed here: the teaching notebooks carry their outputs (`scripts/run_lessons.py`), the others
show their code and prose. Each page records, once loaded, how many of its images decoded
(`<html data-images-loaded="N/M">`), which `tests/test_site.py` reads back from headless Chromium.
"""
import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]

STYLE = """
<style>
  body { margin: 0; }
  .aacnb-toc { position: fixed; top: 0; left: 0; bottom: 0; width: 250px; overflow-y: auto; padding: 14px 10px;
               box-sizing: border-box; background: #f6f7f9; border-right: 1px solid #ddd; font: 13px/1.35 sans-serif; }
  .aacnb-toc h2 { font-size: 15px; margin: 0 0 8px; }
  .aacnb-toc h3 { font-size: 12px; margin: 12px 0 4px; color: #666; text-transform: uppercase; }
  .aacnb-toc ol { margin: 0; padding-left: 0; list-style: none; }
  .aacnb-toc li { margin: 2px 0; }
  .aacnb-toc a { color: #1a5fb4; text-decoration: none; }
  .aacnb-toc a.current { font-weight: bold; color: #000; }
  .aacnb-toc .lesson::after { content: " \\25B6"; color: #2a9d4b; font-size: 10px; }
  .aacnb-page { margin-left: 250px; }
</style>
"""

# Records how many images decoded once the page has loaded: what the site test checks in headless Chromium.
IMAGES_LOADED = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll(".aacnb-page img"));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.documentElement.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
</script>
"""


def reading_order(nbs: Path = ROOT / "nbs") -> list[Path]:
    "index.ipynb, the numbered notebooks in order, then the experiments."
    numbered = sorted(p for p in nbs.glob("*.ipynb") if p.name != "index.ipynb")
    return [nbs / "index.ipynb", *numbered, *sorted((nbs / "experiments").glob("*.ipynb"))]


def page_name(nb: Path, nbs: Path = ROOT / "nbs") -> str:
    "index.ipynb -> index.html, 07_one_clip.ipynb -> 07_one_clip.html, experiments/x.ipynb -> experiments-x.html."
    return nb.relative_to(nbs).with_suffix(".html").as_posix().replace("/", "-")


def title_of(nb: dict, fallback: str) -> str:
    "The notebook's first `# heading`."
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", "".join(cell["source"]), re.M)
            if m:
                return m.group(1).strip()
    return fallback


def image_outputs(nb: dict) -> int:
    "How many pictures the notebook's outputs hold (each becomes one <img> on its page)."
    return sum(1 for c in nb["cells"] for o in c.get("outputs", []) for k in o.get("data", {})
               if k in ("image/png", "image/jpeg"))


def toc_html(pages: list[dict], current: str, lessons: set[str]) -> str:
    groups = [("Start", [p for p in pages if p["file"] == "index.html"]),
              ("Notebooks", [p for p in pages if p["file"] != "index.html" and not p["file"].startswith("experiments-")]),
              ("Experiments (run by the study)", [p for p in pages if p["file"].startswith("experiments-")])]
    out = ['<nav class="aacnb-toc"><h2>aacnb course</h2>']
    for head, group in groups:
        out.append(f"<h3>{html.escape(head)}</h3><ol>")
        for p in group:
            cls = " ".join(c for c in ("current" if p["file"] == current else "",
                                        "lesson" if p["file"] in lessons else "") if c)
            out.append(f'<li><a href="{p["file"]}" class="{cls}">{html.escape(p["title"])}</a></li>')
        out.append("</ol>")
    out.append('<p style="color:#666;font-size:11px">&#9654; carries its pictures and sound</p></nav>')
    return "\n".join(out)


def _local_links(body: str) -> str:
    "Links between notebooks (`07_one_clip.ipynb`, `nbs/x.ipynb`, `experiments/x.ipynb`) point at their pages."
    def sub(m):
        target = m.group(2)
        name = target.split("/")[-1][:-len(".ipynb")]
        prefix = "experiments-" if "experiments/" in target else ""
        return f'{m.group(1)}"{prefix}{name}.html"'
    return re.sub(r'(href=)"((?:\.\./|nbs/)?(?:experiments/)?[\w.-]+\.ipynb)"', sub, body)


def for_readers(nb):
    "As nbdev's own docs show a notebook: `#| hide` cells left out, `#| ...` directive lines not shown."
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code":
            if any(l.strip() in ("#| hide", "#|hide") for l in lines):
                continue
            cell.source = "\n".join(l for l in lines if not l.startswith("#|"))
        cells.append(cell)
    nb.cells = cells
    return nb


def build(out: Path, nbs: Path = ROOT / "nbs") -> list[dict]:
    "Write the site into `out` (replaced atomically); return its pages: file, title, source, images."
    import nbformat
    from nbconvert import HTMLExporter
    sys.path.insert(0, str(ROOT / "scripts"))
    from run_lessons import LESSONS
    exporter = HTMLExporter(template_name="lab")
    order = reading_order(nbs)
    nbs_json = {p: json.loads(p.read_text(encoding="utf-8")) for p in order}
    pages = [dict(file=page_name(p, nbs), title=title_of(nbs_json[p], p.stem), source=p,
                  images=image_outputs(nbs_json[p])) for p in order]
    lessons = {page_name(ROOT / l, nbs) for l in LESSONS}
    tmp = Path(tempfile.mkdtemp(prefix=".site-", dir=out.parent if out.parent.exists() else None))
    try:
        for page in pages:
            body, _ = exporter.from_notebook_node(for_readers(nbformat.read(page["source"], as_version=4)))
            body = _local_links(body).replace("<title>Notebook</title>", f"<title>{html.escape(page['title'])} - aacnb</title>")
            head_end, body_start = body.index("</head>"), re.search(r"<body[^>]*>", body)
            body = (body[:head_end] + STYLE + IMAGES_LOADED + body[head_end:body_start.end()]
                    + toc_html(pages, page["file"], lessons) + '<div class="aacnb-page">'
                    + body[body_start.end():].replace("</body>", "</div></body>"))
            (tmp / page["file"]).write_text(body, encoding="utf-8")
        if (ROOT / "docs").is_dir():  # pictures the home page (README) shows, at the same relative path
            shutil.copytree(ROOT / "docs", tmp / "docs")
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pages


def chromium() -> str | None:
    "The Chromium binary (Debian's package: /usr/bin/chromium), or None."
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium_run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    "Headless Chromium with a throw-away profile and no background network (this machine's network is closed)."
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found: install it (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="aacnb-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def screenshot(page: Path, png: Path, size: str = "1100,760") -> Path:
    "A PNG of `page` as headless Chromium draws it, reduced to a palette (a small file for the README)."
    from PIL import Image
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "shot.png"
        r = chromium_run([f"--screenshot={raw}", f"--window-size={size}", "--virtual-time-budget=5000",
                          page.resolve().as_uri()])
        if not raw.exists():
            raise RuntimeError(f"chromium wrote no screenshot of {page}: {r.stderr[-2000:]}")
        img = Image.open(raw).convert("RGB").quantize(colors=64)
        png.parent.mkdir(parents=True, exist_ok=True)
        part = png.with_name(png.name + ".partial")
        img.save(part, format="PNG", optimize=True)
        os.replace(part, png)
    return png


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_site"))
    ap.add_argument("--screenshot", default=None, help="also write a PNG of the index page here")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    pages = build(out)
    print(f"make_site: {len(pages)} pages, {sum(p['images'] for p in pages)} images -> {out}/index.html")
    if a.screenshot:
        print(f"make_site: screenshot -> {screenshot(out / 'index.html', Path(a.screenshot))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
