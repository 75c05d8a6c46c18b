"""`make docs`: the course site has a page per notebook, in reading order, and headless Chromium draws each
page with all its images. Skipped where Chromium is not installed (Debian: apt-get install -y chromium)."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_site  # noqa: E402

needs_chromium = pytest.mark.skipif(make_site.chromium() is None,
                                    reason="chromium is not installed (Debian: apt-get install -y chromium): "
                                           "the site cannot be opened in a headless browser here")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_site"
    return out, make_site.build(out)


@pytest.mark.slow
def test_a_page_per_notebook_in_reading_order(site):
    out, pages = site
    order = make_site.reading_order()
    assert [p["source"] for p in pages] == order
    assert order[0].name == "index.ipynb" and order.index(ROOT / "nbs/07_one_clip.ipynb") < order.index(ROOT / "nbs/08_demo.ipynb")
    index = (out / "index.html").read_text(encoding="utf-8")
    toc = re.findall(r'<li><a href="([^"]+)"', index.split('<nav class="aacnb-toc">')[1].split("</nav>")[0])
    assert toc == [p["file"] for p in pages]
    assert all((out / f).is_file() for f in toc)
    lesson = (out / "07_one_clip.html").read_text(encoding="utf-8")
    code = "".join(re.findall(r'<div class="highlight[^"]*">(.*?)</div>', lesson, re.S))
    assert "study_models" in code and "#| eval" not in code          # directive lines are not shown,
    assert "from fastcore.test import" not in lesson                   # nor `#| hide` cells
    assert lesson.count("<audio") >= 2


@pytest.mark.slow
@needs_chromium
def test_each_page_shows_its_images_in_chromium(site):
    out, pages = site
    assert sum(p["images"] for p in pages) >= 9          # the lessons' figures, at least
    for page in pages:
        r = make_site.chromium_run(["--dump-dom", "--virtual-time-budget=5000", (out / page["file"]).as_uri()])
        m = re.search(r'<html[^>]*data-images-loaded="(\d+)/(\d+)"', r.stdout)
        assert m, f"{page['file']}: the page did not finish loading in chromium: {r.stderr[-1000:]}"
        loaded, total = int(m.group(1)), int(m.group(2))
        assert total >= page["images"], f"{page['file']}: {total} <img> for {page['images']} image outputs"
        assert loaded == total, f"{page['file']}: only {loaded} of {total} images could be drawn"


@pytest.mark.slow
@needs_chromium
def test_screenshot_of_the_index(site, tmp_path):
    from PIL import Image
    out, _ = site
    png = make_site.screenshot(out / "index.html", tmp_path / "index.png")
    img = Image.open(png)
    assert img.size == (1100, 760)
    assert len(img.convert("RGB").getcolors(1 << 16)) > 8     # text and the contents, not a blank page


def test_readme_shows_the_site():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/index.png)" in readme
    png = ROOT / "docs" / "index.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
