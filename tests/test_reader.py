"""What the book's reader sees (l2s_utils.study.reader, driver tags and downloads): formulas of the
table formatting, the repository setting, and bad inputs that must write nothing."""

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from l2s_utils.study import reader
from l2s_utils.study.driver import export_downloads, reader_tags

ROOT = Path(__file__).resolve().parents[1]


def test_ci_and_names_for_readers():
    df = pd.DataFrame({"model": ["System 2", "TIES"], "n": [194, 194], "accuracy": [82.474, 78.35],
                       "acc_lo": [77.3, 72.16], "acc_hi": [87.63, 84.0], "mean_tokens": [215.2, 214.9],
                       "length_change_pct": [0.0, -0.14], "aes": [float("nan"), 0.5]})
    t = reader.readable(df)
    assert list(t.columns) == ["model", "problems", "accuracy (%) [95% CI]", "mean length (tokens)",
                               "length vs System 2 (%)", "AES (higher is better)"]
    assert t.iloc[0, 2] == "82.5 [77.3, 87.6]" and t.iloc[1, 2] == "78.3 [72.2, 84.0]"
    assert t.iloc[0, 1] == "194" and t.iloc[0, 5] == "-" and t.iloc[1, 4] == "-0.1"
    html = reader.table_html(df, caption="c")
    assert "overflow-x:auto" in html and ">c</caption>" in html
    assert "acc_lo" not in html and "mean_tokens" not in html and "<th></th>" not in html  # no index, no raw names


def test_meaningful_index_is_kept_plain_index_dropped():
    pivot = pd.DataFrame({"System 2": [0.0, 0.0], "TA": [1.5, -2.0]}, index=pd.Index([1, 2], name="level"))
    t = reader.readable(pivot)
    assert list(t.columns) == ["difficulty level", "System 2", "TA"] and list(t["difficulty level"]) == ["1", "2"]
    assert list(reader.readable(pd.DataFrame({"x": [1.0]}).set_index(pd.RangeIndex(1))).columns) == ["x"]


def test_colab_url_from_the_repository_setting():
    assert reader.colab_url("01_x", {"url": "", "branch": "main"}) is None
    assert reader.colab_url("01_x", {"url": "https://github.com/a-b/c.d.git", "branch": "dev"}) == \
        "https://colab.research.google.com/github/a-b/c.d/blob/dev/notebooks/01_x.ipynb"


def _root_copy(tmp_path):
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    shutil.copy(ROOT / "book" / "_config.yml", root / "book" / "_config.yml")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    return root


def test_set_repository_writes_config_and_every_notebook(tmp_path):
    root = _root_copy(tmp_path)
    written = reader.set_repository("https://github.com/owner/l2s-merging/", "main", root=root)
    assert len(written) == 1 + len(list((ROOT / "notebooks").glob("*.ipynb")))
    import yaml

    cfg = yaml.safe_load((root / "book" / "_config.yml").read_text())
    assert cfg["repository"] == {"url": "https://github.com/owner/l2s-merging", "branch": "main"}
    for nb in (root / "notebooks").glob("*.ipynb"):
        params = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert 'repo_url = "https://github.com/owner/l2s-merging.git"' in "".join(params[0]["source"]), nb.name
    # the link a chapter shows points at a notebook that exists in the repository
    url = reader.colab_url("01_task_vector_merging", {"url": cfg["repository"]["url"], "branch": "main"})
    assert url.endswith("/notebooks/01_task_vector_merging.ipynb")
    assert (ROOT / url.split("/blob/main/")[1]).is_file()


@pytest.mark.parametrize("url,branch", [("http://github.com/a/b", "main"), ("https://gitlab.com/a/b", "main"),
                                        ("https://github.com/a", "main"), ("https://github.com/a/b", "x y")])
def test_set_repository_refuses_bad_input_and_writes_nothing(tmp_path, url, branch):
    root = _root_copy(tmp_path)
    before = {f: f.read_bytes() for f in root.rglob("*") if f.is_file()}
    with pytest.raises(ValueError):
        reader.set_repository(url, branch, root=root)
    assert {f: f.read_bytes() for f in root.rglob("*") if f.is_file()} == before


def test_set_repository_refuses_a_notebook_without_the_parameter(tmp_path):
    root = _root_copy(tmp_path)
    nb = root / "notebooks" / "00_testbed.ipynb"
    nb.write_text(nb.read_text().replace("repo_url", "repository_url"))
    before = (root / "book" / "_config.yml").read_text()
    with pytest.raises(ValueError, match="expected one repo_url"):
        reader.set_repository("https://github.com/a/b", root=root)
    assert (root / "book" / "_config.yml").read_text() == before


def test_every_notebook_has_the_reader_cells():
    for f in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(f.read_text())["cells"]
        tags = [t for c in cells for t in c["metadata"].get("tags", [])]
        assert tags.count("parameters") == 1 and tags.count("setup") == 1, f.name
        src = "".join("".join(c["source"]) for c in cells)
        # the header (profile, Colab, downloads) comes from the package's setup (l2s_utils/study/chapters.py)
        assert "reader.provenance(st" in src and f'setup(profile, out, "{f.stem}")' in src, f.name
        assert "<this repository>" not in src, f.name
        assert all("id" in c for c in cells), f.name


def test_reader_tags_fold_code_and_remove_the_injected_cell(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["a = 1"], "outputs": []},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": ["a = 2"], "outputs": []},
                    {"cell_type": "code", "metadata": {"tags": ["setup"]}, "source": ["import x"], "outputs": []},
                    {"cell_type": "code", "metadata": {}, "source": ["x.f()"], "outputs": []},
                    {"cell_type": "code", "metadata": {"tags": ["remove-input"]}, "source": ["y"], "outputs": []},
                    {"cell_type": "markdown", "metadata": {}, "source": ["# t"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    f = tmp_path / "n.ipynb"
    f.write_text(json.dumps(nb))
    reader_tags(f)
    tags = [c["metadata"].get("tags") for c in json.loads(f.read_text())["cells"]]
    assert tags == [["parameters", "hide-cell"], ["injected-parameters", "remove-cell"], ["setup", "remove-input"],
                    ["hide-input"], ["remove-input"], None]


def test_markdown_download_has_text_code_outputs_and_figures(tmp_path):
    import base64

    png = base64.b64encode(b"\x89PNG fake").decode()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": ["out = '/secret'"],
                     "outputs": []},
                    {"cell_type": "code", "metadata": {}, "source": ["f()"], "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": ["hello\n"]},
                        {"output_type": "display_data", "data": {"image/png": png, "text/plain": ["<Figure>"]}, "metadata": {}},
                        {"output_type": "display_data", "data": {"text/markdown": ["**bold**"]}, "metadata": {}}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    f = tmp_path / "ch.ipynb"
    f.write_text(json.dumps(nb))
    export_downloads(f, tmp_path / "dl")
    md = (tmp_path / "dl" / "ch.md").read_text()
    assert md.startswith("# Title") and "```python\nf()\n```" in md and "hello" in md and "**bold**" in md
    assert "/secret" not in md and "![figure 1](ch_files/figure-1.png)" in md
    assert (tmp_path / "dl" / "ch_files" / "figure-1.png").read_bytes() == b"\x89PNG fake"
    assert (tmp_path / "dl" / "ch.ipynb").read_text() == f.read_text()


def test_paper_by_scale_normalises_to_system2():
    from l2s_utils.study.paper import paper_by_scale

    d = paper_by_scale()
    s2 = d[d.model == "System 2"]
    assert list(s2.scale) == ["1.5B", "7B", "14B", "32B"]
    assert all(math.isclose(v, 100.0) for v in s2["accuracy retained (%)"]) and all(s2.length_change_pct == 0)
    ta7 = d[(d.scale == "7B") & (d.model == "Task Arithmetic")].iloc[0]
    assert math.isclose(ta7["accuracy retained (%)"], 100 * ta7.accuracy / s2[s2.scale == "7B"].accuracy.iloc[0])


def test_paper_beside_ours_puts_system2_at_100_with_one_row_and_colour_per_method():
    import matplotlib
    matplotlib.use("Agg")
    from l2s_utils.study import paper_summary, plots

    ours = pd.DataFrame({"model": ["System 1", "System 2", "Task Arithmetic"], "accuracy": [40.0, 80.0, 60.0],
                         "acc_lo": [35.0, 75.0, 55.0], "acc_hi": [45.0, 85.0, 65.0],
                         "length_change_pct": [-80.0, 0.0, -50.0]})
    fig = plots.paper_beside_ours(ours, paper_summary(), "ours")
    length, acc = fig.axes[:2]

    def points(ax):
        return {ln.get_label(): (ln.get_xdata()[0], ln.get_ydata()[0], ln.get_color()) for ln in ax.lines
                if ln.get_label().startswith(("ours: ", "paper: "))}

    pl, pa = points(length), points(acc)
    assert pl["ours: System 2"][0] == 0.0 and pa["ours: System 2"][0] == 100.0 and pa["paper: System 2"][0] == 100.0
    assert pl["ours: Task Arithmetic"][0] == -50.0 and pa["ours: Task Arithmetic"][0] == 75.0
    # TA at 7B: 53.5 of System 2's 54.5 at -48.7% (Table 1 averages), on TA's row, in TA's colour
    assert math.isclose(pa["paper: Task Arithmetic"][0], 100 * 53.5 / 54.5, rel_tol=1e-3)
    assert pl["paper: Task Arithmetic"][0] == -48.7
    assert pl["paper: Task Arithmetic"][1] == pl["ours: Task Arithmetic"][1] != pl["ours: System 2"][1]
    assert pl["paper: Task Arithmetic"][2] == pl["ours: Task Arithmetic"][2] == plots.style("Task Arithmetic")[0]
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_scale_beside_paper_labels_one_tick_per_scale():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l2s_utils.study import plots
    from l2s_utils.study.paper import paper_by_scale

    ours = pd.DataFrame({"parameters": [39_904, 408_960] * 2, "model": ["Task Arithmetic"] * 2 + ["Ties-Merging"] * 2,
                         "accuracy retained (%)": [80.0, 99.0, 70.0, 100.0]})
    fig = plots.scale_beside_paper(ours, paper_by_scale(), "accuracy retained (%)", "retained", "ours")
    fig.canvas.draw()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.04M", "0.41M"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["1.5B", "7B", "14B", "32B"]
    plt.close(fig)


def test_tables_never_show_nan_or_minus_zero_and_repeat_no_row():
    df = pd.DataFrame({"model": ["TA", "TA", "TIES"], "aes": [-0.0001, -0.0001, float("nan")],
                       "length_change_pct": [-0.04, -0.04, 3.0], "accuracy": [50.0, 50.0, float("nan")]})
    t = reader.readable(df)
    assert len(t) == 2  # the repeated row once
    cells = " ".join(" ".join(r) for r in t.values.tolist())
    assert "nan" not in cells and "-0.0" not in cells.split() and "-0" not in cells.split()
    assert reader.num(float("nan"), suffix="%") == "n/a" and reader.num(-0.04) == "0.0"
    assert reader.signed(-0.04) == "0.0%" and reader.signed(12.0) == "+12.0%" and reader.signed(-3.46) == "-3.5%"


def test_precision_is_chosen_per_column():
    assert reader.auto_digits([38.2, 233.0], "mean length (tokens)") == 0
    assert reader.auto_digits([61.04, 80.0], "accuracy (%)") == 1
    assert reader.auto_digits([1.2312, 1.9], "loss on system1 traces") == 2
    assert reader.auto_digits([0.998, 1.003], "System 1 (K sigma)") == 3
    assert reader.auto_digits([3, 4], "rank r") == 0
    path = pd.DataFrame({"alpha": [0.0, 0.1, 0.3], "accuracy": [40.0, 41.24, 70.0], "mean_tokens": [30.2, 38.7, 233.1],
                         "loss on system1 traces": [1.2345, 1.5, 1.75]})
    t = reader.readable(path)
    assert list(t["alpha"]) == ["0.0", "0.1", "0.3"] and list(t["accuracy (%)"]) == ["40.0", "41.2", "70.0"]
    assert list(t["mean length (tokens)"]) == ["30", "39", "233"] and t["loss on system1 traces"][0] == "1.23"


def test_all_zero_table_becomes_a_sentence_and_a_single_benchmark_column_goes():
    sc = pd.DataFrame({"model": ["System 2", "TA"], "flags per response": [0.0, 0.0],
                       "corrections that are right (%)": [float("nan")] * 2, "accuracy (%)": [90.0, 80.0]})
    out = reader.table(sc, if_zero="No response flagged a slip.",
                       zero_columns=["flags per response", "corrections that are right (%)"]).data
    assert "<table" not in out and "No response flagged a slip." in out
    assert "<table" in reader.table(sc).data  # accuracy is not zero
    t = reader.readable(pd.DataFrame({"model": ["a", "b"], "benchmark": ["toy", "toy"], "accuracy": [1.0, 2.0]}))
    assert "benchmark" not in t.columns


def test_captions_say_what_n_counts():
    class St:
        name = "toy"

    assert "n = 40 problems per level and model" in reader.caption(St(), "x", n=40, per="level and model").data
    assert "n = 194 problems per model" in reader.caption(St(), "x", n=194).data


def test_executed_notebooks_keep_no_machine_path(tmp_path):
    from l2s_utils.study.driver import ROOT as REPO, strip_machine_paths

    out = tmp_path / "runs"
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
                     "source": ['# Parameters\n', 'profile = "smoke"\n', f'out = "{out}"\n'], "outputs": []},
                    {"cell_type": "code", "metadata": {}, "source": ["x"], "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": [f"wrote {REPO}/runs/a and {out}/b\n"]}]}],
          "metadata": {"papermill": {"input_path": f"{REPO}/notebooks/x.ipynb", "output_path": f"{tmp_path}/x.ipynb",
                                     "parameters": {"profile": "smoke", "out": str(out)}}},
          "nbformat": 4, "nbformat_minor": 5}
    f = tmp_path / "x.ipynb"
    f.write_text(json.dumps(nb))
    strip_machine_paths(f, out)
    text = f.read_text()
    assert str(REPO) not in text and str(tmp_path) not in text and "/tmp/" not in text
    d = json.loads(text)
    assert "input_path" not in d["metadata"]["papermill"] and d["metadata"]["papermill"]["parameters"]["out"] is None
    assert "out = None" in "".join(d["cells"][0]["source"]) and 'profile = "smoke"' in "".join(d["cells"][0]["source"])


def test_book_sources_are_offline_and_link_their_references():
    import re

    import yaml

    cfg = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    mj = cfg["sphinx"]["config"]["mathjax_path"]
    assert not re.match(r"^[a-z]+://|^//", mj), "MathJax from the network"
    assert (ROOT / "book" / "_static" / mj).is_file() and (ROOT / "book" / "_static" / "mathjax" / "LICENSE").is_file()
    fonts = ROOT / "book" / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) > 10
    refs = (ROOT / "book" / "references.md").read_text().split("## Cite this study")[0]
    items = [ln for ln in refs.splitlines() if ln.startswith("- ")]
    assert len(items) >= 10 and all("](https://" in ln for ln in items), "a reference without a link"
    for page in ("reproduce.md", "intro.md", "methods.md"):
        text = (ROOT / "book" / page).read_text()
        assert "OWNER/REPO" not in text and "<this repository>" not in text, page


def test_development_history_is_in_the_changelog_not_in_reader_pages():
    import re

    assert (ROOT / "CHANGELOG.md").is_file()
    pages = [(p.name, p.read_text()) for p in (ROOT / "book").glob("*.md")]
    pages += [(f.name, "".join("".join(c["source"]) for c in json.loads(f.read_text())["cells"] if c["cell_type"] == "markdown"))
              for f in (ROOT / "notebooks").glob("*.ipynb")]
    for name, text in pages:
        for pattern in (r"organism v\d+", r"\bv1\d weights", r"before this change", r"is removed\b", r"as before\b"):
            assert not re.search(pattern, text), (name, pattern)


def test_exercises_fold_hints_and_solutions_and_get_a_student_copy(tmp_path):
    from l2s_utils.study.driver import student_copy

    ex = next(f for f in (ROOT / "notebooks").glob("*exercises*.ipynb"))
    nb = json.loads(ex.read_text())
    assert nb["metadata"]["l2s"]["student_copy"]
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert md.count(":class: dropdown") >= 3, "hints folded in dropdowns"
    assert "Challenge (open-ended)" in md and "What the exercises found" in md
    assert "Open in Colab" not in md
    solutions = [c for c in nb["cells"] if "l2s_skeleton" in c["metadata"]]
    assert len(solutions) >= 3 and all("hide-cell" in c["metadata"]["tags"] for c in solutions)
    executed = json.loads(json.dumps(nb))
    executed["metadata"]["papermill"] = {"parameters": {"profile": "toy"}}
    executed["cells"].insert(2, {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
                                 "source": ["out = 'x'"], "outputs": [], "execution_count": 1})
    for c in executed["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["answer\n"]}]
    student = student_copy(executed)
    code = [c for c in student["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "papermill" not in student["metadata"] and len(student["cells"]) == len(nb["cells"])
    texts = ["".join(c["source"]) for c in code]
    assert "ex1 = st.summary" not in "\n".join(texts) and sum("# your code" in t for t in texts) >= 3


def test_contenders_over_seeds_shows_only_a_record_of_this_profile_and_organism(tmp_path):
    """The seeds table comes from the record; another profile's or another organism version's or recipe's record is not shown."""
    import json
    from types import SimpleNamespace

    from l2s_utils.organism.training import MAIN_SCALE, ORGANISM_VERSION, SCALES, recipe_hash
    from l2s_utils.study import reader

    st = SimpleNamespace(name="toy")
    f = tmp_path / "rec.json"
    assert "No record over organism seeds" in reader.contenders_over_seeds(st, f).data
    doc = {"profile": "toy", "organism_version": ORGANISM_VERSION, "recipe_seed0": recipe_hash(SCALES[MAIN_SCALE]), "seeds": [0, 1, 2], "machine": "m", "created": "2026-12-07",
           "wall_s": 600.0, "ranking": [["System 2", "TIES"], ["System 1"]],
           "spread": [{"kind": "merge", "model": "TIES", "accuracy": 80.0, "accuracy_min": 75.5, "accuracy_max": 84.25,
                       "mean_tokens": 200.0, "mean_tokens_min": 190.0, "mean_tokens_max": 210.4,
                       "length_change_pct": -33.3, "length_change_pct_min": -40.0, "length_change_pct_max": -30.06}]}
    f.write_text(json.dumps(doc))
    html = re.sub(r"<span[^>]*>|</span>", "", reader.contenders_over_seeds(st, f).data)  # a value, its range: spans
    assert "80.0 (75.5 to 84.2)" in html and "200 (190 to 210)" in html and "-33.3 (-40.0 to -30.1)" in html
    assert "1. System 2 = TIES; 2. System 1" in html and "10 min" in html
    f.write_text(json.dumps({**doc, "organism_version": "0"}))
    assert "No record" in reader.contenders_over_seeds(st, f).data
    f.write_text(json.dumps({**doc, "recipe_seed0": "000000000000"}))  # the same version, another recipe
    assert "No record" in reader.contenders_over_seeds(st, f).data
    assert "No record" in reader.contenders_over_seeds(SimpleNamespace(name="smoke"), f).data
