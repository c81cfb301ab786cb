"""What the book's reader sees: tables with named columns and units, figure captions, a provenance box,
Colab and download links.

    from l2s_utils.study import reader
    reader.table(summary, caption="...")        # "accuracy (%) [95% CI]" as "61.0 [54.0, 68.0]", no index
    reader.caption(st, "Accuracy vs length", n=summary.n.max())
    reader.provenance(st, "01_task_vector_merging")   # profile, commit, organism, seeds, wall time, date

Tables are HTML (``IPython.display.HTML``) inside a box that scrolls horizontally when it is wider than
the page, so no column is ever cut off. Column names come from :data:`COLUMNS`; a column not listed keeps
its name with underscores turned into spaces.
"""

from __future__ import annotations

import html
import math
import re
import time
from pathlib import Path

import pandas as pd

from . import gitinfo

ROOT = Path(__file__).resolve().parents[2]
BOOK_CONFIG = ROOT / "book" / "_config.yml"

# internal column -> what a reader sees (with units)
COLUMNS = {
    "model": "model", "benchmark": "benchmark", "n": "problems", "accuracy": "accuracy (%)",
    "mean_tokens": "mean length (tokens)", "length_change_pct": "length vs System 2 (%)",
    "reflective_pct": "reflective responses (%)", "truncated_pct": "hit the token limit (%)",
    "keyword_freq": "reflection keywords per reflective response", "aes": "AES (higher is better)",
    "level": "difficulty level", "reflective": "reflective responses (%)", "alpha": "alpha", "rank": "rank r",
    "scale": "scale", "parameters": "parameters", "method": "method", "content": "calibration content",
    "n_samples": "calibration samples", "strict": "accuracy, strict protocol (%)",
    "qwen-toolkit": "accuracy, Qwen toolkit protocol (%)", "toolkit_minus_strict": "toolkit - strict (points)",
    "check": "check", "description": "bar", "value": "measured", "bar": "threshold", "passed": "passed",
    "kind": "kind", "contender": "profile label", "setup": "one-off step", "setup_s": "one-off cost (s)",
    "decode_tokens_pct": "generated tokens vs System 2 (%)", "cost": "cost",
}
CI_SUFFIX = " [95% CI]"


# columns shown with one decimal whatever their values (percentages, accuracy points)
ONE_DECIMAL = re.compile(r"accuracy|_pct$|%|reflective|points|acc_lo|acc_hi|retained")
ZERO_DECIMALS = re.compile(r"tokens|^n$|_n$|responses|parameters|rank$|^level$")


def _fmt(v, digits: int = 1) -> str:
    """One cell as text: NaN/None as "-", never "nan" or "-0.0"; integers with thousands separators."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
        if isinstance(v, float) and math.isnan(v):
            return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        t = f"{v:.{digits}f}"
        return t[1:] if re.fullmatch(r"-0\.?0*", t) else t  # -0.0 -> 0.0
    return str(v)


def num(v, digits: int = 1, suffix: str = "", missing: str = "n/a") -> str:
    """A number for a sentence: ``missing`` for NaN/None (never "nan"), no "-0.0", ``suffix`` appended."""
    t = _fmt(v, digits)
    return missing if t == "-" else t + suffix


def signed(v, digits: int = 1, suffix: str = "%", missing: str = "n/a") -> str:
    """A change for a sentence: "+12.0%", "-3.5%", "0.0%" (no sign on zero), ``missing`` for NaN."""
    t = num(v, digits, "", missing)
    if t == missing:
        return t
    return (t if t.startswith("-") or float(t.replace(",", "")) == 0 else "+" + t) + suffix


def auto_digits(values, column: str = "") -> int:
    """Decimals for a column: 1 for percentages and accuracy, 0 for token counts and counts; values with at most
    three decimals (parameters: alpha 0.1, 0.25) as written; otherwise enough for three significant digits of the typical value and one of the spread, between 0 and 4."""
    if ONE_DECIMAL.search(column):
        return 1
    x = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()
    x = x[~x.isin([float("inf"), float("-inf")])]
    if ZERO_DECIMALS.search(column) or not len(x) or (x == x.round()).all():
        return 0
    for d in range(1, 4):  # parameter values (alpha 0.1, 0.25) as written
        if ((x - x.round(d)).abs() < 1e-9).all():
            return d
    nz = x[x != 0].abs()
    if not len(nz):
        return 1
    d = 2 - math.floor(math.log10(float(nz.median())))
    spread = float(x.max() - x.min())
    if spread > 0:
        d = max(d, -math.floor(math.log10(spread)))
    return max(0, min(4, d))


def with_ci(df: pd.DataFrame, value: str = "accuracy", lo: str = "acc_lo", hi: str = "acc_hi",
            digits: int = 1) -> pd.DataFrame:
    """``value`` as the text "61.0 [54.0, 68.0]" (the 95% interval) in place of the three columns."""
    if not {value, lo, hi} <= set(df.columns):
        return df
    out = df.drop(columns=[lo, hi]).copy()
    out[value] = [f"{_fmt(v, digits)} [{_fmt(a, digits)}, {_fmt(b, digits)}]" for v, a, b in zip(df[value], df[lo], df[hi])]
    return out.rename(columns={value: COLUMNS.get(value, value) + CI_SUFFIX})


def readable(df: pd.DataFrame, digits: int | None = None) -> pd.DataFrame:
    """Columns renamed for readers (units in the name), intervals merged, every cell formatted as text with the
    column's precision (``digits``, or :func:`auto_digits` per column); columns with no value at all and a
    ``benchmark`` column with one value (the caption names it) left out; repeated rows shown once."""
    # a meaningful index (layer names, levels) becomes a column; a plain row number is dropped
    df = df.reset_index(drop=isinstance(df.index, pd.RangeIndex))
    df = df[[c for c in df.columns if not df[c].isna().all()]]
    if "benchmark" in df.columns and df["benchmark"].nunique() == 1 and len(df.columns) > 2:
        df = df.drop(columns="benchmark")
    out = with_ci(df, digits=1 if digits is None else digits)
    out = with_ci(out, "mean_tokens", "tokens_lo", "tokens_hi", digits=0)
    out = out.rename(columns={c: COLUMNS.get(c, str(c).replace("_", " ")) for c in out.columns})
    for c in out.columns:
        d = auto_digits(out[c], str(c)) if digits is None else digits
        out[c] = [_fmt(v, d) for v in out[c]]
    return out.drop_duplicates().reset_index(drop=True)


def all_zero(df: pd.DataFrame, columns=None) -> bool:
    """Whether every value of the numeric ``columns`` (default: all numeric columns) is 0 or missing."""
    cols = list(columns) if columns is not None else list(df.select_dtypes("number").columns)
    if not len(df) or not cols:
        return not len(df)
    vals = df[cols].apply(pd.to_numeric, errors="coerce")
    return bool(((vals == 0) | vals.isna()).all().all())


def table_html(df: pd.DataFrame, caption: str | None = None, digits: int | None = None) -> str:
    """An HTML table without an index, inside a horizontally scrolling box (class ``l2s-table``)."""
    t = readable(df, digits)
    cell = "padding:3px 8px;border-bottom:1px solid #ddd;"
    # headers wrap (at most ~12 characters a line), values do not: most tables then fit the text column
    head_cell = cell + "white-space:normal;min-width:4em;max-width:9em;vertical-align:bottom;"
    cell += "white-space:nowrap;"

    def align(v: str) -> str:  # numbers (and "61.0 [54.0, 68.0]") right, text left
        return "right" if re.fullmatch(r"[-+0-9.,\[\] ]+|-", v) else "left"

    # a column of long texts (a check's description, a path, a contender's name) wraps, so that the table fits the
    # text column; so does a value with its interval ("61.0 [54.0, 68.0]", "42.6 (26.3 to 52.6)"), between the value
    # and the interval only
    wraps = [t[c].str.len().max() > 18 and not t[c].map(lambda v: align(str(v)) == "right").all() for c in t.columns]
    long_cell = cell.replace("white-space:nowrap;", "white-space:normal;min-width:8em;overflow-wrap:anywhere;")
    ci_cell = cell.replace("white-space:nowrap;", "white-space:normal;")

    def td(v, wrap: bool) -> str:
        v = str(v)
        m = re.fullmatch(r"(\S+) ([\[(][^\])]*[\])])", v)
        style, text = (long_cell if wrap else cell), html.escape(v)
        if m and not wrap:  # the value, then its interval on the next line when the column is narrow
            style = ci_cell
            text = " ".join(f'<span style="white-space:nowrap">{html.escape(x)}</span>' for x in m.groups())
        return f'<td style="{style}text-align:{align(v)}">{text}</td>'

    head = "".join(f'<th style="{head_cell}text-align:left;border-bottom:2px solid #999">{html.escape(str(c))}</th>'
                   for c in t.columns)
    body = "".join("<tr>" + "".join(td(v, w) for v, w in zip(row, wraps)) + "</tr>" for row in t.itertuples(index=False))
    cap = (f'<caption style="caption-side:top;text-align:left;font-style:italic">{html.escape(caption)}</caption>'
           if caption else "")
    return (f'<div class="l2s-table" style="overflow-x:auto;max-width:100%;margin:0.5em 0 1em 0">'
            f'<table class="l2s-data" style="border-collapse:collapse;font-size:0.88em">{cap}<thead><tr>{head}</tr>'
            f'</thead><tbody>{body}</tbody></table></div>')


def settings(records: list[dict], key: str) -> pd.DataFrame:
    """Settings of a few things side by side, one column per thing (named by ``records[i][key]``) and one row per
    setting: a table that stays narrow however many settings there are. Numbers to 3 significant digits, a setting
    a thing does not have as "-"."""
    def show(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    names = [str(r[key]) for r in records]
    fields = [k for k in dict.fromkeys(k for r in records for k in r) if k != key]
    return pd.DataFrame({"setting": [f.replace("_", " ") for f in fields],
                         **{n: [show(r.get(f)) for f in fields] for n, r in zip(names, records)}})


def sampled(df: pd.DataFrame) -> pd.DataFrame:
    """Sampled metrics (``Study.sampled``) for reading: avg@k, pass@k, maj@k each as "value [95% CI]"."""
    out = df.copy()
    for m in ("avg", "pass", "maj"):
        out = with_ci(out, f"{m}@k", f"{m}_lo", f"{m}_hi")
    out = out.rename(columns={"k": "k (samples)", "median_tokens": "median length (tokens)"})
    keep = ["model", "k (samples)", "problems", *(f"{m}@k{CI_SUFFIX}" for m in ("avg", "pass", "maj")),
            "mean_tokens", "median length (tokens)"]
    return out[[c for c in keep if c in out.columns]]


def table(df: pd.DataFrame, caption: str | None = None, digits: int | None = None, columns=None,
          if_zero: str | None = None, zero_columns=None):
    """Display object for a notebook: :func:`table_html` as ``IPython.display.HTML``.

    ``columns``: the columns to show (the reader's; the rest stay in the chapter's download); ``digits``: one
    precision for every column (default: chosen per column, :func:`auto_digits`). When every value of
    ``zero_columns`` (default: every numeric column) is 0 or missing, the table says nothing: the sentence
    ``if_zero`` is shown instead (default: one naming the columns)."""
    from IPython.display import HTML

    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    if all_zero(df, zero_columns):
        cols = list(zero_columns) if zero_columns is not None else list(df.select_dtypes("number").columns)
        text = if_zero or ("Nothing to show: " + (", ".join(COLUMNS.get(c, str(c).replace("_", " ")) for c in cols)
                                                  or "the table") + " are zero for every row.")
        prefix = f"<em>{html.escape(caption)}</em> " if caption else ""
        return HTML(f'<p class="l2s-zero">{prefix}{html.escape(text)}</p>')
    return HTML(table_html(df, caption, digits))


def caption(st, what: str, n: int | None = None, ci: bool = True, per: str = "model"):
    """A figure caption naming the profile, what n counts (problems per ``per``: "model", "level and model",
    "alpha", ...) and the interval."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown

    plt.show()  # the figure(s) drawn so far come before their caption (inline backend: shown and closed)
    parts = [f"*Figure: {what}. Profile `{st.name}`"]
    if n is not None:
        parts.append(f"n = {int(n)} problems per {per}")
    if ci:
        parts.append("bars: 95% bootstrap confidence intervals over problems")
    return Markdown(", ".join(parts) + ".*")


def header(st, notebook: str):
    """The line under a chapter's title: the profile and its description, Open in Colab, downloads."""
    from IPython.display import HTML

    url = colab_url(notebook)
    links = [f'<a href="{url}">Open in Colab</a>'] if url else []
    links += [f'<a href="../_static/downloads/{notebook}.ipynb">download .ipynb</a>',
              f'<a href="../_static/downloads/{notebook}.md">download .md</a>']
    desc = html.escape(str(st.profile.get("description", "")).strip())
    return HTML(f'<p class="l2s-header"><strong>Profile <code>{html.escape(st.name)}</code></strong>: {desc}<br>'
                + " &middot; ".join(links) + "</p>")


# -- provenance -----------------------------------------------------------------------------------
def commit() -> str:
    """The repository's commit (short hash, "+ local changes" when the work tree differs), or "unknown ..."."""
    return gitinfo.describe(ROOT)


def repository() -> dict:
    """The repository setting of the book (``book/_config.yml``: repository.url, .branch); url may be empty."""
    import yaml

    try:
        cfg = yaml.safe_load(BOOK_CONFIG.read_text()) or {}
    except OSError:
        cfg = {}
    repo = cfg.get("repository") or {}
    return {"url": str(repo.get("url") or "").rstrip("/"), "branch": str(repo.get("branch") or "main")}


def colab_url(notebook: str, repo: dict | None = None) -> str | None:
    """Colab's address of ``notebooks/<notebook>.ipynb`` on the configured GitHub repository (None if unset)."""
    repo = repo or repository()
    m = re.match(r"^https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?$", repo["url"])
    if not m:
        return None
    return (f"https://colab.research.google.com/github/{m.group(1)}/{m.group(2)}/blob/{repo['branch']}/"
            f"notebooks/{notebook}.ipynb")


def provenance_record(st, notebook: str | None = None) -> dict:
    """What produced a chapter: profile, commit, models (organism recipe hash, seed, source), wall time, date."""
    import torch
    import transformers

    rec = {"profile": st.name, "commit": commit()}
    if st.organism:
        orgs = []
        for scale in dict.fromkeys([st.profile["models"]["scale"], *st.scales]):
            org = st.pair(scale)["organism"]
            m = org.manifest
            orgs.append(f"{scale}-{m.get('recipe', '?')} (seed {m['spec']['seed']}, "
                        f"{'shipped weights' if org.source == 'shipped' else 'trained here'})")
        rec["organism"] = ", ".join(orgs)
    else:
        m = st.profile["models"]
        rec["models"] = f"{m['system1']} / {m['system2']}"
    rec["seeds"] = f"profile {st.profile.get('seed', 0)}, sampling {st.profile['sampling'].get('seed', 0)}"
    rec["wall time"] = f"{time.perf_counter() - st.started:.0f} s (this chapter, cached stages included)"
    rec["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    rec["versions"] = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if notebook:
        url = colab_url(notebook)
        rec["open"] = (f'<a href="{url}">Open in Colab</a>' if url else
                       "Colab: set repository.url in book/_config.yml (l2s set-repository URL)")
    return rec


def provenance(st, notebook: str | None = None):
    """The provenance box shown at the end of every chapter (HTML)."""
    from IPython.display import HTML

    rec = provenance_record(st, notebook)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v if k == 'open' else html.escape(str(v))}</td></tr>"
                   for k, v in rec.items())
    return HTML('<div class="l2s-provenance" style="border:1px solid #ccc;border-radius:6px;padding:0.5em 1em;'
                'margin:1em 0;font-size:0.85em;background:#f8f9fa"><strong>How this chapter was produced</strong>'
                f'<table class="l2s-provenance-table">{rows}</table></div>')


GITHUB = re.compile(r"^https://github\.com/[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+?(?:\.git)?$")


def set_repository(url: str, branch: str = "main", root: Path = ROOT) -> list[Path]:
    """Record the repository's GitHub URL once: ``book/_config.yml`` (repository.url, .branch) and the
    ``repo_url`` parameter of every notebook (what the Colab set-up cell clones). Returns the files written.
    Nothing is written when the URL is not a GitHub repository URL (Colab opens notebooks from GitHub)."""
    url = url.strip().rstrip("/")
    if not GITHUB.match(url):
        raise ValueError(f"{url!r} is not a GitHub repository URL (https://github.com/OWNER/REPO); "
                         "Colab opens notebooks from GitHub")
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
        raise ValueError(f"{branch!r} is not a branch name")
    cfg = root / "book" / "_config.yml"
    text = cfg.read_text()
    if not re.search(r"(?m)^repository:\n  url: .*\n  branch: .*$", text):
        raise ValueError(f"{cfg}: no 'repository:' block with url and branch to fill")
    new_cfg = re.sub(r"(?m)^repository:\n  url: .*\n  branch: .*$",
                     f'repository:\n  url: "{url}"\n  branch: {branch}', text)
    clone = url if url.endswith(".git") else url + ".git"
    updates = {cfg: new_cfg}
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        t = nb.read_text()
        n = re.subn(r'repo_url = \\"[^"\\]*\\"', f'repo_url = \\"{clone}\\"', t)
        if n[1] != 1:
            raise ValueError(f"{nb}: expected one repo_url parameter, found {n[1]}")
        updates[nb] = n[0]
    for f, t in updates.items():  # validated everything first: all files or none
        f.write_text(t)
    return list(updates)


# -- records of runs over organism seeds ---------------------------------------------------------

SEEDS_RECORD = ROOT / "benchmarks" / "results" / "contenders-seeds.json"


def contenders_over_seeds(st, path: Path = SEEDS_RECORD):
    """Chapter 07's comparison over organism seeds, from the record ``benchmarks/contenders_seeds.py`` writes: per
    model the mean and range over seeds of accuracy, mean tokens and length change vs that seed's System 2, then the
    ranking (an order that flips between seeds is a tie). Only a record of this profile and of today's organism
    counts (its version and its seed-0 recipe hash); otherwise one sentence says how to make it."""
    import json

    from IPython.display import HTML, Markdown

    from ..organism.training import MAIN_SCALE, ORGANISM_VERSION, SCALES, recipe_hash

    recipe = recipe_hash(SCALES[MAIN_SCALE])
    doc = json.loads(path.read_text()) if path.is_file() else None
    if (doc is None or doc.get("profile") != st.name or doc.get("organism_version") != ORGANISM_VERSION
            or doc.get("recipe_seed0") != recipe):
        return Markdown(f"*No record over organism seeds for profile `{st.name}` and organism v{ORGANISM_VERSION} "
                        f"(recipe {recipe}): "
                        "`python benchmarks/contenders_seeds.py` writes it (it trains and evaluates every contender on "
                        "seeds 0-2 of the main pair).*")
    rng = lambda r, k, d=1, s="": f"{r[k]:.{d}f}{s} ({r[k + '_min']:.{d}f} to {r[k + '_max']:.{d}f})"  # noqa: E731
    df = pd.DataFrame([{"kind": r["kind"], "model": r["model"], "accuracy % (min to max)": rng(r, "accuracy"),
                        "mean tokens (min to max)": rng(r, "mean_tokens", 0),
                        "vs System 2 % (min to max)": rng(r, "length_change_pct")} for r in doc["spread"]])
    tiers = "; ".join(f"{i}. {' = '.join(t)}" for i, t in enumerate(doc["ranking"], 1))
    cap = (f"Seeds {', '.join(map(str, doc['seeds']))} of the main pair (profile {doc['profile']}, organism v"
           f"{doc['organism_version']}; {doc['machine']}; {doc['created'][:10]}; {doc['wall_s'] / 60:.0f} min): mean over "
           "seeds, range in brackets; each seed's own System 2 is the length reference")
    return HTML(table_html(df, cap) + f"<p><strong>Ranking by accuracy</strong> (tied where the order flips between "
                                      f"seeds): {html.escape(tiers)}.</p>")
