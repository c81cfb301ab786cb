"""Profiles, and the whole study on the smoke profile: notebooks (papermill), the book, a browser screenshot."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from l2s_utils.study.chapters import chapter_names
from l2s_utils.study.profiles import ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[1]
GIVEN_BOOK = os.environ.get("L2S_TEST_BOOK")  # check a built book instead of building the smoke one
BOOK_PROFILE = os.environ.get("L2S_TEST_BOOK_PROFILE", "smoke") if GIVEN_BOOK else "smoke"
CHAPTERS = tuple(chapter_names())  # book/_toc.yml, the one chapter list


def test_shipped_profiles_load():
    for name in ("toy", "toy-vllm", "smoke", "qwen-1.5b", "qwen-7b", "qwen-14b", "qwen-32b", "qwen3-8b"):
        p = load_profile(name)
        assert p["name"] == name and p["merge"]
    q7 = load_profile("qwen-7b")
    assert q7["merge"]["ties"] == {"method": "l2s_ties", "k": 0.8, "alpha": 1.0} and q7["sampling"]["max_tokens"] == 10240
    assert q7["sampling"]["max_tokens_system1"] == 8192 and q7["backend"]["name"] == "vllm"
    assert load_profile("qwen-14b")["merge"]["sens"] == {"alpha": 0.8, "T": 6.0}


def test_qwen3_8b_profile_matches_the_authors_readme():
    """The qwen3-8b profile runs what the L2S authors' README reports (data/paper/readme_qwen3_8b.csv)."""
    import pandas as pd

    p = load_profile("qwen3-8b")
    readme = pd.read_csv(ROOT / "data" / "paper" / "readme_qwen3_8b.csv")
    assert p["models"] == {"kind": "hub", "system1": "Qwen/Qwen3-8B", "system2": "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"}
    merged = readme[readme.role == "merged"].iloc[0]
    assert p["merge"]["ties"] == {"method": "l2s_ties", "k": merged.k, "alpha": merged.alpha} == \
        {"method": "l2s_ties", "k": 0.7, "alpha": 0.7}
    assert [b["name"] for b in p["benchmarks"]] == ["aime24"] == sorted(set(readme.benchmark))
    sp = p["sampling"]
    assert (sp["temperature"], sp["top_p"], sp["n"], sp["max_tokens"]) == \
        (merged.temperature, merged.top_p, merged.samples, merged.max_new_tokens) == (0.6, 0.95, 16, 32768)
    assert p["backend"]["max_model_len"] >= sp["max_tokens"] + 1024  # room for the prompt
    assert readme.set_index("role")[["accuracy", "mean_length"]].to_dict("index") == {
        "system2": {"accuracy": 70.63, "mean_length": 11328.25}, "merged": {"accuracy": 74.58, "mean_length": 6448.5}}
    assert readme.source.str.contains("hahahawu/Long-to-Short-via-Model-Merging").all()
    assert "readme_qwen3_8b.csv" in (ROOT / "data" / "paper" / "README.md").read_text()


@pytest.mark.parametrize("mutate,match", [
    (lambda p: p.update(colour="red"), r"profile bad\.colour: unknown key"),
    (lambda p: p["sampling"].update(max_tokens="lots"), r"profile bad\.sampling\.max_tokens: must be int"),
    (lambda p: p.pop("merge"), r"missing required key 'merge'"),
    (lambda p: p["merge"].update(tie={}), r"profile bad\.merge\.tie: unknown merge_method"),
    (lambda p: p["models"].update(kind="cloud"), r"models\.kind: must be 'organism' or 'hub'"),
    (lambda p: p["backend"].update(tensor_parallel_size=True), r"tensor_parallel_size: must be int"),
    (lambda p: p["models"].update(seed=-1), r"models\.seed: must be"),
    (lambda p: p["models"].update(seed="one"), r"models\.seed: must be int"),
    (lambda p: p.update(models={"kind": "hub", "system1": "a", "system2": "b", "seed": 1}),
     r"models\.seed: the organism's training seed; a 'hub' profile trains no organism"),
])
def test_bad_profiles_name_the_key(tmp_path, mutate, match):
    prof = yaml.safe_load((ROOT / "data" / "profiles" / "smoke.yaml").read_text())
    mutate(prof)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(prof))
    with pytest.raises(ProfileError, match=match):
        load_profile(f)
    with pytest.raises(ProfileError, match="known profiles"):
        load_profile("nope")


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """Run the whole study on the smoke profile into a copy of the book sources -- or, with ``L2S_TEST_BOOK``
    set to a built book directory (e.g. a fresh clone's ``make book``: ``L2S_TEST_BOOK=book
    L2S_TEST_BOOK_PROFILE=toy``), run every book check on that book instead."""
    from l2s_utils.study.driver import run_study

    if GIVEN_BOOK:
        book = Path(GIVEN_BOOK).resolve()
        index = book / "_build" / "html" / "index.html"
        assert index.is_file(), f"L2S_TEST_BOOK={GIVEN_BOOK}: no built book there ({index} missing)"
        return book, index

    tmp = tmp_path_factory.mktemp("study")
    book = tmp / "book"
    def build_outputs(d, names):  # the sources only: _static keeps its shipped files (MathJax, CSS)
        outputs = {"_build", "chapters", "_generated"} if Path(d) == ROOT / "book" else set()
        if Path(d) == ROOT / "book" / "_static":
            outputs |= {"downloads", "headline.png"}
        return [n for n in names if n in outputs]

    shutil.copytree(ROOT / "book", book, ignore=build_outputs)
    index = run_study("smoke", out=tmp / "runs", book=book, progress=False)
    return book, index


def test_notebooks_execute_without_errors(smoke_book):
    book, _ = smoke_book
    for name in CHAPTERS:
        nb = json.loads((book / "chapters" / f"{name}.ipynb").read_text())
        assert nb["metadata"]["papermill"]["parameters"]["profile"] == BOOK_PROFILE
        figures = 0
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", (name, out.get("ename"), out.get("evalue"))
                figures += "image/png" in out.get("data", {})
        assert figures >= 1, f"{name}: no figure output"


def test_book_has_every_chapter_with_figures_and_tables(smoke_book):
    book, index = smoke_book
    assert index.is_file()
    html = book / "_build" / "html"
    for page in ("intro", "methods", "reproduce", "references"):
        assert (html / f"{page}.html").is_file(), page
    for name in CHAPTERS:
        page = (html / "chapters" / f"{name}.html").read_text()
        assert len(re.findall(r'<img [^>]*src="[^"]*_images/', page)) >= 1, f"{name}: no figure from the notebook"
        assert "<table" in page, f"{name}: no table"
        assert BOOK_PROFILE in page  # every chapter names the profile that produced it
    assert (html / "_static" / "headline.png").is_file() or list((html / "_images").glob("headline*"))


def test_rerun_reuses_everything(smoke_book, tmp_path):
    from l2s_utils.study.driver import run_notebooks

    if GIVEN_BOOK:
        pytest.skip("L2S_TEST_BOOK: a given book's run directory is not known here")
    book, _ = smoke_book
    report = run_notebooks("smoke", book.parent / "runs", book / "chapters", progress=False)
    assert all(r["status"] == "unchanged" for r in report)


def test_chapter_renders_in_a_browser(smoke_book, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium (.ci/run installs Debian's chromium; install it to run this check)")
    book, _ = smoke_book
    page = book / "_build" / "html" / "chapters" / "01_task_vector_merging.html"
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,6000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file()
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    pixels = list(img.getdata())
    non_white = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    colourful = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60) / len(pixels)
    assert non_white > 0.01, "the page rendered blank"
    assert colourful * len(pixels) > 3000, "no coloured figure visible on the page"


def _pages(html: Path) -> list[Path]:
    """The book's pages, without Sphinx's generated ones and the redirect stub index.html (no body)."""
    return sorted(p for p in html.rglob("*.html") if not p.relative_to(html).parts[0].startswith("_")
                  and p.name not in ("genindex.html", "search.html") and not p.name.startswith("_check_")
                  and "</body>" in p.read_text())


def test_every_page_reads_cleanly(smoke_book):
    """No machine path anywhere, no warning, traceback or stderr in any output, no raw DataFrame (index,
    internal column names), a figure in every chapter, folded code, every internal link resolving."""
    book, _ = smoke_book
    html = book / "_build" / "html"
    machine = [str(ROOT), str(book.parent), "/tmp/", "/home/", "/root/"]
    pages = _pages(html)
    assert len(pages) >= 4 + len(CHAPTERS)
    for p in pages:
        text = p.read_text()
        for m in machine:
            assert m not in text, f"{p.name}: machine path {m!r}"
        for bad in ("Traceback (most recent call last)", "Warning:", 'class="output stderr"', "TqdmWarning"):
            assert bad not in text, f"{p.name}: {bad!r} in the page"
        for href in re.findall(r'href="([^"#?]+)(?:[?#][^"]*)?"', text):
            if re.match(r"^[a-z]+:", href) or href.startswith("//"):
                continue  # external
            assert (p.parent / href).resolve().exists(), f"{p.name}: broken link {href}"
    for name in CHAPTERS:
        page = (html / "chapters" / f"{name}.html").read_text()
        assert "toggle-details" in page or "hide-input" in page, f"{name}: code not folded"
        assert "injected-parameters" not in page, f"{name}: papermill's parameters cell shown"
        shown = re.sub(r"<details.*?</details>", "", page, flags=re.S)  # without the folded code
        for raw in ("acc_lo", "mean_tokens", "length_change_pct", "<th></th>", 'class="dataframe"'):
            assert raw not in shown, f"{name}: raw table ({raw!r}) outside the folded code"
        assert "How this chapter was produced" in page and "commit" in page, f"{name}: no provenance box"
        assert f"_static/downloads/{name}.md" in page and (html / "_static" / "downloads" / f"{name}.md").is_file()
    intro = (html / "references.html").read_text()
    assert "wu2025unlocking" in intro and "Cite this study" in intro and "Wu, Han" in intro


PROBE_JS = r"""<script>
async function l2sProbe() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  var clipped = [];
  document.querySelectorAll('table').forEach(function (t, i) {
    var box = null;  // the nearest ancestor that scrolls sideways
    for (var a = t.parentElement; a && a !== document.body; a = a.parentElement) {
      var o = getComputedStyle(a).overflowX;
      if (o === 'auto' || o === 'scroll') { box = a; break; }
    }
    var main = document.querySelector('main') || document.body;
    var wide = t.scrollWidth > t.clientWidth + 2 || t.scrollWidth > t.parentElement.clientWidth + 2
               || t.getBoundingClientRect().right > main.getBoundingClientRect().right + 2;
    // a table wider than the text column hides columns: clipped, or behind a sideways scrollbar a reader misses
    var hidden = box ? box.scrollWidth > box.clientWidth + 2 : wide;
    if (hidden) clipped.push(i + ': ' + (t.innerText || '').slice(0, 60).replace(/\s+/g, ' '));
  });
  // the text a reader sees: no code, no folded cell, no rendered math
  var skip = 'pre, code, script, style, mjx-container, .MathJax, details:not([open]) > :not(summary), .cell_input';
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), parts = [], n;
  while ((n = walker.nextNode())) {
    var el = n.parentElement;
    if (el && !el.closest(skip) && el.getClientRects().length > 0) parts.push(n.nodeValue);
  }
  var text = parts.join(' ');
  var found = [];
  [[/\bnan\b/i, 'nan'], [/(^|[^\w.])-0\.0+(?![0-9])/, '-0.0'], [/OWNER\/REPO|<this repository>/, 'placeholder'],
   [/\\\(|\\\)|\\\[|\$\$/, 'raw TeX']].forEach(function (p) {
    var m = text.match(p[0]);
    if (m) found.push(p[1] + ': ...' + text.slice(Math.max(0, m.index - 40), m.index + 40) + '...');
  });
  var math = document.querySelectorAll('span.math, div.math').length;
  var typeset = document.querySelectorAll('mjx-container').length;
  var pre = document.createElement('pre'); pre.id = 'l2s-probe';
  pre.textContent = 'PROBE:' + JSON.stringify({clipped: clipped, text: found, math: math, typeset: typeset});
  document.body.appendChild(pre);
}
window.addEventListener('load', function () { setTimeout(l2sProbe, 50); });
</script>"""


def test_every_page_in_a_browser_reads_cleanly(smoke_book):
    """In headless Chromium, after the bundled MathJax has typeset: no table wider than the text column (clipped, or
    scrolled sideways inside its box: either way a reader does not see every column), and in the text a reader sees no "nan", no "-0.0", no placeholder, no raw TeX."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium (.ci/run installs Debian's chromium; install it to run this check)")
    book, _ = smoke_book
    html = book / "_build" / "html"
    problems, typeset = {}, 0
    for p in _pages(html):
        probe = p.with_name(f"_check_{p.name}")
        probe.write_text(p.read_text().replace("</body>", PROBE_JS + "</body>"))
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                            "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()],
                           capture_output=True, text=True, timeout=180)
        probe.unlink()
        m = re.search(r"PROBE:(\{.*?\})</pre>", r.stdout, flags=re.S)
        assert m, f"{p.name}: the page did not finish loading in chromium ({r.stderr[-300:]})"
        res = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        if res["clipped"] or res["text"] or res["math"] and not res["typeset"]:
            problems[p.name] = {k: res[k] for k in ("clipped", "text")} | (
                {"math not typeset": res["math"]} if res["math"] and not res["typeset"] else {})
        typeset += res["typeset"]
    assert not problems, f"pages a reader would see broken: {problems}"
    assert typeset > 0, "no equation typeset anywhere (MathJax did not run)"


def test_pages_load_nothing_from_the_network(smoke_book):
    """Offline: every script and stylesheet, MathJax included, comes from the book itself."""
    book, _ = smoke_book
    html = book / "_build" / "html"
    for p in _pages(html):
        text = p.read_text()
        remote = re.findall(r'<script[^>]*\ssrc="((?:https?:)?//[^"]+)"', text)
        remote += re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="((?:https?:)?//[^"]+)"', text)
        assert not remote, f"{p.name} loads {remote}"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_downloads_carry_no_machine_path(smoke_book):
    """Every file a reader can download (chapters as .ipynb / .md, the student copy, the page sources) is free of
    the build machine's paths."""
    book, _ = smoke_book
    html = book / "_build" / "html"
    machine = [str(ROOT), str(book.parent), "/tmp/", "/home/", "/root/", "/work/"]
    files = [f for d in (html / "_static" / "downloads", html / "_sources") if d.is_dir() for f in d.rglob("*")
             if f.is_file() and f.suffix in (".ipynb", ".md", ".txt", ".py")]
    files += list((book / "chapters").glob("*.ipynb"))
    assert any(f.name.endswith(".student.ipynb") for f in files), "no student copy of the exercises"
    for f in files:
        text = f.read_text(errors="replace")
        for m in machine:
            assert m not in text, f"{f.relative_to(book)}: machine path {m!r}"


def test_intro_and_every_results_chapter_open_with_a_verdict(smoke_book):
    """The intro's verdict table and headline figure come from this run; each results chapter shows its verdict
    box before its first table."""
    book, _ = smoke_book
    html = book / "_build" / "html"
    intro = (html / "intro.html").read_text()
    assert "What this run found" in intro and "l2s-verdict" in intro and BOOK_PROFILE in intro
    assert re.search(r'<img [^>]*src="[^"]*headline[^"]*\.png"', intro), "no headline figure in the intro"
    for name in CHAPTERS:
        if "exercises" in name:
            continue
        page = (html / "chapters" / f"{name}.html").read_text()
        assert "l2s-verdict" in page, f"{name}: no verdict box"
        first_table = page.find('class="l2s-data"')
        assert first_table == -1 or page.index("l2s-verdict") < first_table, f"{name}: a table before the verdict"
        assert re.search(r"Verdict: (reproduced|partly reproduced|not reproduced|not measured)", page), name
