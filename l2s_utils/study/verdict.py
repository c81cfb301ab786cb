"""Verdicts: does this run reproduce the paper's claim? One box at the top of every page, written from numbers.

    from l2s_utils.study import verdict
    v = verdict.merges(summary, st.name, ["Task Arithmetic", "Ties-Merging"])   # a Verdict
    display(v)                  # the box (HTML admonition) in a notebook
    v.save(st.out, "01_task_vector_merging", summary)   # out/verdicts/<chapter>.json (+ the summary as CSV)
    verdict.intro_markdown(out)  # the intro's section: every chapter's verdict, from the saved files

A :class:`Verdict` holds the paper's claim with its number (from ``data/paper/*.csv``), this run's number with
its 95% interval (from the run's summary), an outcome -- one of :data:`OUTCOMES` -- and a one-sentence reason
computed from the numbers. The rules, each a function below:

- :func:`premise` (the testbed): **reproduced** when every premise check passes; **partly** when System 2 is
  at least twice as long as System 1 and more accurate (the intervals do not overlap) but a check fails;
  **not reproduced** otherwise.
- :func:`merges` (a chapter of merge methods), per method with a paper number (Table 1, 7B averages):
  it *shortens* when its length change is at most half the paper's (paper -48.7% -> ours at most -24.4%) and
  the upper end of its interval is below 0; it *keeps accuracy* when the upper end of the interval of its
  accuracy relative to System 2 reaches the paper's relative accuracy minus 5 points. A method is reproduced
  when both hold, partly when one holds, not reproduced when neither. The chapter: **reproduced** when every
  method is, **not reproduced** when none is even partly, **partly** otherwise.
- :func:`scale` (the ladder): two trends of the paper across its scales (1.5B-32B, the methods run at every
  scale): the length cut shrinks and the accuracy kept grows with model size. Each trend is reproduced when the
  Spearman correlation of our ladder (log parameters against the mean over the same methods) has the paper's
  sign and is at least 0.5 in size. **reproduced**: both; **partly**: one; **not reproduced**: neither;
  **not measured**: fewer than three scales.
- :func:`adaptive` (self-correction and adaptive length), for task arithmetic: it *shortens easy problems
  most* when its length change on the easiest level is at least 10 points below that on the hardest; it *drops
  reflection on easy problems* when its reflective share on the easiest level is at least 20 points below
  System 2's (the paper, GSM8K: 98.3% -> 56.7%). Both: **reproduced**; one: **partly**; neither: **not
  reproduced**.

- :func:`contenders` (long-to-short without merging), per trained baseline with a reported length cut
  (``data/paper/long_to_short_reported.csv``: TLDR about -50%, SelfBudgeter up to -74.5%, DPO -15% in Table 1):
  the family's shortest contender that keeps accuracy (else its most accurate) *shortens* when its length change
  is at most half the reported cut and the upper end of its interval is below 0, and *keeps accuracy* when the
  upper end of its accuracy interval reaches System 2's accuracy minus 5 points (the papers report "minimal" or
  no loss). Per family and for the chapter as for :func:`merges`; **not measured** when the profile trains none.

Lengths' intervals are System 2's mean length divided into the bootstrap interval of the method's mean length
(System 2's own uncertainty left out).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .reader import num, signed

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "data" / "paper"
OUTCOMES = ("reproduced", "partly reproduced", "not reproduced", "not measured")
CSS = {"reproduced": "reproduced", "partly reproduced": "partly", "not reproduced": "not-reproduced",
       "not measured": "not-measured"}
ADMONITION = {"reproduced": "tip", "partly reproduced": "warning", "not reproduced": "danger",
              "not measured": "note"}
PAPER_NAMES = {"Qwen2.5-Math-7B": "System 1", "DeepSeek-R1-Distill-Qwen-7B": "System 2"}
KEEP_POINTS = 5.0  # accuracy: within this many points (of System 2's accuracy) of the paper's
EASY_GAP = 10.0  # adaptive length: easy problems shortened this many points more than hard ones
REFLECTION_DROP = 20.0  # adaptive length: reflective share on easy problems this many points below System 2's
MIN_RHO = 0.5


@dataclass
class Verdict:
    """One claim of the paper against this run. ``rows``: a detail table (one dict per method), may be empty."""

    title: str
    claim: str
    measured: str
    outcome: str
    reason: str
    profile: str
    rows: list[dict] = field(default_factory=list)
    chapter: str = ""
    kind: str = ""  # the rule that decided: premise | merges | scale | adaptive

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {OUTCOMES}")

    # -- rendering ---------------------------------------------------------------------------------
    def html(self) -> str:
        e = html.escape
        table = ""
        if self.rows:
            cols = list(self.rows[0])
            table = ("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{e(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                               for r in self.rows) + "</tbody></table>")
        return (f'<div class="admonition {ADMONITION[self.outcome]} l2s-verdict {CSS[self.outcome]}">'
                f'<p class="admonition-title">Verdict: {e(self.outcome)} &mdash; {e(self.title)}</p>'
                f"<p><strong>The paper.</strong> {e(self.claim)}</p>"
                f"<p><strong>This run</strong> (profile <code>{e(self.profile)}</code>). {e(self.measured)}</p>{table}"
                f'<p><span class="l2s-outcome">{e(self.outcome.capitalize())}:</span> {e(self.reason)}</p></div>')

    def _repr_html_(self) -> str:
        return self.html()

    def markdown(self, link: str | None = None) -> str:
        """A MyST admonition: the claim, ours, the outcome and why (and a link to the chapter)."""
        see = f" See [the chapter]({link})." if link else ""
        return (f":::{{admonition}} {self.outcome.capitalize()}: {self.title}\n:class: {ADMONITION[self.outcome]} "
                f"l2s-verdict {CSS[self.outcome]}\n\n**The paper.** {self.claim}\n\n**This run.** {self.measured}\n\n"
                f"**{self.outcome.capitalize()}:** {self.reason}{see}\n:::\n")

    def row(self, link: str) -> str:
        """One row of the intro's table: the claim (linked to its chapter), the outcome, why."""
        cell = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        return f"| [{cell(self.title[0].upper() + self.title[1:])}]({link}) | **{self.outcome}** | {cell(self.reason)} |"

    # -- files -------------------------------------------------------------------------------------
    def save(self, out: str | Path, chapter: str, summary: pd.DataFrame | None = None) -> Path:
        """``out/verdicts/<chapter>.json`` (and the run's summary beside it as ``<chapter>.summary.csv``)."""
        d = Path(out) / "verdicts"
        d.mkdir(parents=True, exist_ok=True)
        self.chapter = chapter
        f = d / f"{chapter}.json"
        tmp = f.with_suffix(".json.partial")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(f)
        if summary is not None:
            summary.to_csv(d / f"{chapter}.summary.csv", index=False)
        return f


def load(out: str | Path, chapters) -> list[Verdict]:
    """The saved verdicts of ``chapters`` (names, in order) under ``out``; chapters without one are skipped."""
    found = []
    for ch in chapters:
        f = Path(out) / "verdicts" / f"{ch}.json"
        if f.is_file():
            found.append(Verdict(**json.loads(f.read_text())))
    return found


# -- the paper's numbers ---------------------------------------------------------------------------------
def paper_table1() -> pd.DataFrame:
    """Table 1's averages (7B) by our model names: model, accuracy, length_change_pct, retained (% of System 2)."""
    t = pd.read_csv(PAPER / "table1_7b_summary.csv")
    t["model"] = t.method.replace(PAPER_NAMES)
    s2 = t.set_index("model").avg_accuracy["System 2"]
    return pd.DataFrame({"model": t.model, "accuracy": t.avg_accuracy, "length_change_pct": t.avg_length_change_pct,
                         "retained": 100 * t.avg_accuracy / s2})


def _ours(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: accuracy relative to System 2 with its interval, length change with its interval."""
    s = summary.set_index("model")
    s2a, s2t = s.accuracy["System 2"], s.mean_tokens["System 2"]
    out = pd.DataFrame({"retained": 100 * s.accuracy / s2a, "ret_lo": 100 * s.acc_lo / s2a, "ret_hi": 100 * s.acc_hi / s2a,
                        "length": 100 * (s.mean_tokens / s2t - 1)})
    if {"tokens_lo", "tokens_hi"} <= set(s.columns):
        out["len_lo"], out["len_hi"] = 100 * (s.tokens_lo / s2t - 1), 100 * (s.tokens_hi / s2t - 1)
    else:
        out["len_lo"] = out["len_hi"] = out["length"]
    return out


def _combine(outcomes: list[str]) -> str:
    if outcomes and all(o == "reproduced" for o in outcomes):
        return "reproduced"
    if not outcomes or all(o == "not reproduced" for o in outcomes):
        return "not reproduced"
    return "partly reproduced"


# -- the rules -------------------------------------------------------------------------------------------
def premise(summary: pd.DataFrame, checks: list[dict] | pd.DataFrame, profile: str) -> Verdict:
    """The testbed: System 2 several times longer and more accurate than System 1 (Table 1's 7B pair), and every
    bar of the organism's premise (``premise_checks``)."""
    t1 = pd.read_csv(PAPER / "table1_7b.csv")
    means = t1.groupby("method", sort=False).agg(accuracy=("accuracy", "mean"), length=("mean_length", "mean"))
    p1, p2 = means.loc["Qwen2.5-Math-7B"], means.loc["DeepSeek-R1-Distill-Qwen-7B"]
    s = summary.set_index("model")
    s1, s2 = s.loc["System 1"], s.loc["System 2"]
    ratio = s2.mean_tokens / s1.mean_tokens if s1.mean_tokens else float("inf")
    checks = pd.DataFrame(checks)
    passed, total = int(checks.passed.sum()), len(checks)
    claim = (f"System 2 (R1-Distill-Qwen-7B) writes {p2.length / p1.length:.1f}x longer responses than System 1 "
             f"(Qwen2.5-Math-7B; {p2.length:,.0f} vs {p1.length:,.0f} tokens, mean over Table 1's six benchmarks) and "
             f"is more accurate ({p2.accuracy:.1f}% vs {p1.accuracy:.1f}%): it buys accuracy with length.")
    measured = (f"System 2 writes {num(ratio)}x longer responses ({num(s2.mean_tokens, 0)} vs {num(s1.mean_tokens, 0)} "
                f"tokens) at {num(s2.accuracy)}% [{num(s2.acc_lo)}, {num(s2.acc_hi)}] vs System 1's "
                f"{num(s1.accuracy)}% [{num(s1.acc_lo)}, {num(s1.acc_hi)}]; {passed} of {total} premise checks pass.")
    longer, better = ratio >= 2, s2.acc_lo > s1.acc_hi
    failed = [str(c) for c in checks[~checks.passed.astype(bool)].check] if total else []
    if passed == total and longer and better:
        outcome, reason = "reproduced", (f"System 2 is {num(ratio)}x longer and clearly more accurate, and every one of "
                                         f"the {total} premise checks passes.")
    elif longer and better:
        outcome, reason = "partly reproduced", (f"System 2 is {num(ratio)}x longer and clearly more accurate, but "
                                                f"{total - passed} check(s) fail: {', '.join(failed)}.")
    else:
        what = [w for w, ok in (("at least twice as long", longer), ("clearly more accurate", better)) if not ok]
        outcome, reason = "not reproduced", f"System 2 is not {' and not '.join(what)} than System 1 on this run."
    return Verdict("the testbed shows the premise", claim, measured, outcome, reason, profile, kind="premise")


def merges(summary: pd.DataFrame, profile: str, methods=None, title: str = "merging shortens at System 2's accuracy"
           ) -> Verdict:
    """Merge methods against Table 1 (7B averages): each shortens by about the paper's cut while keeping about the
    paper's share of System 2's accuracy (the rule in the module's docstring). ``methods``: display names (default:
    every merge of ``summary`` that Table 1 reports)."""
    paper = paper_table1().set_index("model")
    ours = _ours(summary)
    names = [m for m in (methods or summary.model) if m in paper.index and m in ours.index
             and m not in ("System 1", "System 2")]
    if not names:
        return Verdict(title, "Table 1 reports none of this chapter's methods.", "-", "not measured",
                       "There is no paper number to compare with.", profile, kind="merges")
    rows, outcomes = [], []
    for m in names:
        p, o = paper.loc[m], ours.loc[m]
        shortens = o.length <= p.length_change_pct / 2 and o.len_hi < 0
        keeps = o.ret_hi >= p.retained - KEEP_POINTS
        outcome = "reproduced" if shortens and keeps else "partly reproduced" if shortens or keeps else "not reproduced"
        outcomes.append(outcome)
        rows.append({"method": m, "paper: length": signed(p.length_change_pct), "paper: accuracy kept": num(p.retained, 0, "%"),
                     "ours: length [95% CI]": f"{signed(o.length)} [{signed(o.len_lo, suffix='')}, {signed(o.len_hi, suffix='')}]",
                     "ours: accuracy kept [95% CI]": f"{num(o.retained, 0, '%')} [{num(o.ret_lo, 0)}, {num(o.ret_hi, 0)}]",
                     "shortens": "yes" if shortens else "no", "keeps accuracy": "yes" if keeps else "no"})
    pl = [paper.loc[m].length_change_pct for m in names]
    pr = [paper.loc[m].retained for m in names]
    claim = (f"At 7B, {_list(names)} change{'s' if len(names) == 1 else ''} the response length by {_range(pl)} relative to System 2 while keeping "
             f"{_range(pr, '%', 0, signed_=False)} of its accuracy (Table 1, averages over six benchmarks).")
    best = min(names, key=lambda m: ours.loc[m].length)
    ob = ours.loc[best]
    measured = (f"Length change vs System 2 from {signed(ours.loc[names].length.min())} to "
                f"{signed(ours.loc[names].length.max())}, accuracy kept from {num(ours.loc[names].retained.min(), 0, '%')} "
                f"to {num(ours.loc[names].retained.max(), 0, '%')}; the shortest, {best}: {signed(ob.length)} at "
                f"{num(ob.retained, 0, '%')} of System 2's accuracy [{num(ob.ret_lo, 0)}, {num(ob.ret_hi, 0)}].")
    n_short = sum(r["shortens"] == "yes" for r in rows)
    n_keep = sum(r["keeps accuracy"] == "yes" for r in rows)
    n = len(rows)
    outcome = _combine(outcomes)
    if outcome == "reproduced":
        reason = (f"all {n} merges shorten by at least half the paper's cut and keep System 2's accuracy within "
                  f"{KEEP_POINTS:g} points of the paper's share.")
    elif n_short == 0 and n_keep == n:
        reason = (f"every merge keeps System 2's accuracy, but none shortens by half the paper's cut (the shortest, "
                  f"{best}, changes length by {signed(ob.length)}).")
    elif n_short == 0:
        reason = (f"no merge shortens by half the paper's cut (the shortest, {best}: {signed(ob.length)}), and "
                  f"{n - n_keep} of {n} lose more accuracy than the paper's.")
    else:
        reason = (f"{n_short} of {n} merges shorten by at least half the paper's cut and {n_keep} of {n} keep the paper's "
                  f"share of System 2's accuracy; {sum(o == 'reproduced' for o in outcomes)} do both.")
    return Verdict(title, claim, measured, outcome, reason[0].upper() + reason[1:], profile, rows, kind="merges")


def contenders(summary: pd.DataFrame, contender_list: list, profile: str) -> Verdict:
    """Trained long-to-short baselines against their papers' reported length cuts (the rule in the module's docstring).
    ``summary``: ``Study.contender_summary`` (one benchmark); ``contender_list``: ``Study.contenders()``."""
    from .contenders import family
    from .paper import long_to_short_reported

    title = "trained long-to-short methods shorten at about System 2's accuracy"
    rep = long_to_short_reported()
    rep = rep[rep.family.str.startswith("trained:") & rep.length_change_pct.notna()].drop_duplicates("family")
    s = summary.drop_duplicates("model").set_index("model")
    s2a = float(s.accuracy["System 2"])
    ours = _ours(summary.drop_duplicates("model"))
    rows, outcomes = [], []
    for _, r in rep.iterrows():
        names = [c.name for c in contender_list if family(c) == r.family and c.name in ours.index]
        if not names:
            continue
        keep = [m for m in names if s.acc_hi[m] >= s2a - KEEP_POINTS]
        m = min(keep, key=lambda x: ours.length[x]) if keep else max(names, key=lambda x: s.accuracy[x])
        o = ours.loc[m]
        shortens = o.length <= r.length_change_pct / 2 and o.len_hi < 0
        keeps = bool(keep)
        outcomes.append("reproduced" if shortens and keeps else "partly reproduced" if shortens or keeps
                        else "not reproduced")
        rows.append({"method": r.method, "paper: length": f"{r.qualifier + ' ' if isinstance(r.qualifier, str) else ''}"
                     f"{signed(r.length_change_pct)}", "ours": m,
                     "ours: length [95% CI]": f"{signed(o.length)} [{signed(o.len_lo, suffix='')}, {signed(o.len_hi, suffix='')}]",
                     "ours: accuracy [95% CI]": f"{num(s.accuracy[m])}% [{num(s.acc_lo[m])}, {num(s.acc_hi[m])}]",
                     "shortens": "yes" if shortens else "no", "keeps accuracy": "yes" if keeps else "no"})
    if not rows:
        return Verdict(title, "TLDR (Zhang et al. 2025) and SelfBudgeter (Li et al. 2025) report 50-74% shorter "
                       "responses at about the same accuracy.", "-", "not measured",
                       "This profile trains no baseline that a paper reports a length cut for.", profile, kind="contenders")
    claim = ("Length-regularised RL and preference training shorten a long-thinking model at about its accuracy: "
             + "; ".join(f"{r['method']} {r['paper: length']}" for r in rows) + " (the papers' own settings).")
    measured = (f"System 2: {num(s2a)}%. " + "; ".join(f"{r['ours']}: {r['ours: length [95% CI]'].split(' [')[0]} length "
                                                        f"at {r['ours: accuracy [95% CI]'].split(' [')[0]}" for r in rows) + ".")
    outcome = _combine(outcomes)
    n = len(rows)
    n_short = sum(r["shortens"] == "yes" for r in rows)
    n_keep = sum(r["keeps accuracy"] == "yes" for r in rows)
    reason = (f"{n_short} of {n} trained baselines shorten by at least half their paper's cut and {n_keep} of {n} keep "
              f"System 2's accuracy within {KEEP_POINTS:g} points.")
    return Verdict(title, claim, measured, outcome, reason, profile, rows, kind="contenders")


def _spearman(x, y) -> float:
    x, y = pd.Series(list(x), dtype=float), pd.Series(list(y), dtype=float)
    if len(x) < 2 or x.nunique() < 2 or y.nunique() < 2:
        return 0.0
    return float(x.rank().corr(y.rank()))


def scale(ours: pd.DataFrame, paper: pd.DataFrame, profile: str) -> Verdict:
    """Model scale. ``ours``: one row per (scale, model) of the merges with parameters, length_change_pct and
    ``accuracy retained (%)``; ``paper``: ``paper_by_scale()``. Trends over the methods run at every scale of both."""
    methods = [m for m in dict.fromkeys(ours.model) if m not in ("System 1", "System 2")]
    p = paper[paper.model.isin(methods)]
    every = [m for m in methods if p[p.model == m].scale.nunique() == paper.scale.nunique()]
    p = p[p.model.isin(every)].groupby("parameters").agg(length=("length_change_pct", "mean"),
                                                        kept=("accuracy retained (%)", "mean")).reset_index()
    o = ours[ours.model.isin(every)].groupby("parameters").agg(length=("length_change_pct", "mean"),
                                                               kept=("accuracy retained (%)", "mean")).reset_index()
    sizes = {1.5e9: "1.5B", 7e9: "7B", 14e9: "14B", 32e9: "32B"}
    claim = (f"Averaged over {_list(every)}, the merges change the length by "
             + ", ".join(f"{signed(r.length, 0)} at {sizes.get(r.parameters, r.parameters)}" for r in p.itertuples())
             + " and keep " + ", ".join(f"{num(r.kept, 0, '%')}" for r in p.itertuples())
             + " of System 2's accuracy (Tables 1-4): the larger the pair, the less merging shortens.")
    if len(o) < 3:
        return Verdict("merging across model sizes", claim,
                       f"This profile's ladder has {len(o)} scale(s); a trend needs at least three.", "not measured",
                       "Too few scales to compare a trend.", profile, kind="scale")
    rp_len, rp_kept = _spearman(p.parameters, p.length), _spearman(p.parameters, p.kept)
    ro_len, ro_kept = _spearman(o.parameters, o.length), _spearman(o.parameters, o.kept)
    measured = ("Averaged over the same merges: length change "
                + ", ".join(f"{signed(r.length, 0)}" for r in o.itertuples())
                + " and accuracy kept " + ", ".join(f"{num(r.kept, 0, '%')}" for r in o.itertuples())
                + f" from the smallest to the largest of {len(o)} scales (Spearman with size: length {ro_len:+.2f}, "
                f"accuracy {ro_kept:+.2f}; the paper's: {rp_len:+.2f}, {rp_kept:+.2f}).")
    same_len = ro_len * rp_len > 0 and abs(ro_len) >= MIN_RHO
    same_kept = ro_kept * rp_kept > 0 and abs(ro_kept) >= MIN_RHO
    outcome = "reproduced" if same_len and same_kept else "partly reproduced" if same_len or same_kept else "not reproduced"
    reason = {(True, True): "both trends with size have the paper's direction.",
              (True, False): "the length trend with size has the paper's direction, the accuracy trend does not.",
              (False, True): "the accuracy trend with size has the paper's direction, the length trend does not.",
              (False, False): "neither trend with size has the paper's direction (or is too weak: |rho| < "
                              f"{MIN_RHO:g})."}[(same_len, same_kept)]
    return Verdict("merging across model sizes", claim, measured, outcome, reason[0].upper() + reason[1:], profile,
                   kind="scale")


def adaptive(levels: pd.DataFrame, profile: str, model: str = "Task Arithmetic") -> Verdict:
    """Adaptive length (Figure 2, Table 6): ``levels`` is ``Study.by_level`` (model, level, mean_tokens,
    reflective) of System 2 and ``model``."""
    t6 = pd.read_csv(PAPER / "table6_reflection_7b.csv").set_index("method")
    p_s2, p_ta = t6.loc["DeepSeek-R1-Distill-Qwen-7B", "gsm8k"], t6.loc["Task Arithmetic", "gsm8k"]
    claim = (f"Merged models shorten easy problems most and drop reflection there: at 7B, task arithmetic reflects "
             f"in {num(p_ta)}% of its GSM8K responses against System 2's {num(p_s2)}% (Table 6), while it keeps "
             f"reflecting on hard benchmarks.")
    lv = levels.pivot(index="level", columns="model", values="mean_tokens")
    rf = levels.pivot(index="level", columns="model", values="reflective")
    if model not in lv or "System 2" not in lv:
        return Verdict("adaptive length", claim, "-", "not measured", f"{model} or System 2 not evaluated.", profile,
                       kind="adaptive")
    change = 100 * (lv[model] / lv["System 2"] - 1)
    easy, hard = change.index.min(), change.index.max()
    refl_drop = rf["System 2"][easy] - rf[model][easy]
    measured = (f"{model} changes length by {signed(change[easy])} on level {easy} and {signed(change[hard])} on "
                f"level {hard}; on level {easy} it reflects in {num(rf[model][easy], 0)}% of its responses against "
                f"System 2's {num(rf['System 2'][easy], 0)}%.")
    easy_most = change[easy] <= change[hard] - EASY_GAP
    drops = refl_drop >= REFLECTION_DROP
    outcome = "reproduced" if easy_most and drops else "partly reproduced" if easy_most or drops else "not reproduced"
    reason = (("it shortens the easiest level " + ("at least" if easy_most else "less than")
               + f" {EASY_GAP:g} points more than the hardest, and its reflective share on the easiest level is "
               + ("at least" if drops else "less than") + f" {REFLECTION_DROP:g} points below System 2's."))
    return Verdict("adaptive length", claim, measured, outcome, reason[0].upper() + reason[1:], profile,
                   kind="adaptive")


# -- the intro -------------------------------------------------------------------------------------------
def intro_markdown(out: str | Path, chapters, profile: str) -> str:
    """The intro's section "What this run found": one table row per saved verdict of ``chapters`` (the claim
    linked to its chapter, the outcome, why), inside one box that counts the outcomes. Written by the driver into
    ``book/_generated/verdicts.md``, which ``intro.md`` includes."""
    found = load(out, chapters)
    head = f"## What this run found (profile `{profile}`)\n\n"
    if not found:
        return head + "No chapter of this build has recorded a verdict yet: run `l2s study` to produce them.\n"
    counts = {o: sum(v.outcome == o for v in found) for o in OUTCOMES}
    tally = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
    worst = next(o for o in ("not reproduced", "partly reproduced", "not measured", "reproduced") if counts[o])
    rows = "\n".join(v.row(f"chapters/{v.chapter}.ipynb") for v in found)
    return (head + f":::{{admonition}} The paper's claims on this run: {tally} (of {len(found)})\n"
            f":class: {ADMONITION[worst]} l2s-verdict {CSS[worst]}\n\n"
            "Each chapter opens with its verdict box: the paper's number, this run's with its 95% interval, and the "
            "rule that decides (`l2s_utils/study/verdict.py`).\n\n"
            "| Claim | Verdict | Why |\n|---|---|---|\n" + rows + "\n:::\n")


def _list(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _range(values, suffix: str = "%", digits: int = 1, signed_: bool = True) -> str:
    lo, hi = min(values), max(values)
    f = (lambda v: signed(v, digits, suffix)) if signed_ else (lambda v: num(v, digits, suffix))
    return f(lo) if math.isclose(lo, hi) else f"{f(lo)} to {f(hi)}"
