"""Verdicts (l2s_utils.study.verdict): the rules of its docstring on hand-made summaries, the paper's numbers
from data/paper, the box without "nan", the intro's section from saved files, every chapter opening with one."""

import json
from pathlib import Path

import pandas as pd
import pytest

from l2s_utils.study import verdict
from l2s_utils.study.chapters import chapter_names
from l2s_utils.study.paper import paper_by_scale

ROOT = Path(__file__).resolve().parents[1]


def _summary(**merges):
    """System 1 (30 tokens, 40%), System 2 (200 tokens, 90%) and merges given as name=(length change %, accuracy)."""
    rows = [("System 1", 30.0, 40.0), ("System 2", 200.0, 90.0)]
    names = {"Ties_Merging": "Ties-Merging", "ACM_Ties": "ACM-Ties"}
    rows += [(names.get(m, m.replace("_", " ")), 200.0 * (1 + ch / 100), acc) for m, (ch, acc) in merges.items()]
    df = pd.DataFrame([{"model": m, "n": 200, "accuracy": a, "acc_lo": a - 4, "acc_hi": a + 4, "mean_tokens": t,
                        "tokens_lo": t * 0.95, "tokens_hi": t * 1.05} for m, t, a in rows])
    df["length_change_pct"] = 100 * (df.mean_tokens / 200.0 - 1)
    return df


def test_merges_rule_per_method_and_for_the_chapter():
    s = _summary(Task_Arithmetic=(-40.0, 89.0), Average_Merging=(-30.0, 88.0))
    v = verdict.merges(s, "toy")
    assert v.outcome == "reproduced" and [r["method"] for r in v.rows] == ["Task Arithmetic", "Average Merging"]
    # TA does not shorten (keeps accuracy) -> partly; Average shortens but loses accuracy -> partly
    v = verdict.merges(_summary(Task_Arithmetic=(1.0, 90.0), Average_Merging=(-30.0, 50.0)), "toy")
    assert v.outcome == "partly reproduced" and [r["shortens"] for r in v.rows] == ["no", "yes"]
    assert [r["keeps accuracy"] for r in v.rows] == ["yes", "no"]
    v = verdict.merges(_summary(Task_Arithmetic=(2.0, 90.0), Ties_Merging=(0.5, 89.0)), "toy")
    assert v.outcome == "partly reproduced"  # each keeps accuracy, neither shortens
    assert "none shortens by half the paper's cut" in v.reason and "Ties-Merging, changes length by +0.5%" in v.reason
    v = verdict.merges(_summary(Task_Arithmetic=(5.0, 30.0)), "toy")
    assert v.outcome == "not reproduced"
    # half the paper's cut: TA's is -48.7%, so -24.0% shortens and -23.0% does not
    assert verdict.merges(_summary(Task_Arithmetic=(-25.0, 90.0)), "toy").rows[0]["shortens"] == "yes"
    assert verdict.merges(_summary(Task_Arithmetic=(-23.0, 90.0)), "toy").rows[0]["shortens"] == "no"


def test_the_box_has_the_papers_number_ours_with_ci_and_no_nan():
    v = verdict.merges(_summary(Task_Arithmetic=(-0.01, 90.0), ACM_Ties=(-10.0, 80.0)), "toy")
    box = v.html()
    assert "-48.7%" in box and "98%" in box  # Table 1: TA at -48.7%, 53.5 / 54.5 of System 2's accuracy
    assert "[95% CI]" in box and "0.0%" in box and "ACM" not in box.split("<table>")[1]  # ACM: not in Table 1
    for bad in ("nan", "-0.0%", "inf"):
        assert bad not in box
    assert v.outcome in box and 'class="admonition' in box


def test_premise_scale_and_adaptive_rules():
    s = _summary()
    ok = [{"check": "a", "passed": True}, {"check": "b", "passed": True}]
    assert verdict.premise(s, ok, "toy").outcome == "reproduced"
    one_fails = ok[:1] + [{"check": "level 1", "passed": False}]
    v = verdict.premise(s, one_fails, "toy")
    assert v.outcome == "partly reproduced" and "level 1" in v.reason and "6.7x" in v.measured
    same = s.assign(mean_tokens=30.0)
    assert verdict.premise(same, ok, "toy").outcome == "not reproduced"

    pb = paper_by_scale()

    def ladder(lengths, kept):
        return pd.DataFrame([{"model": m, "parameters": p, "length_change_pct": ln, "accuracy retained (%)": k}
                             for m in ("Average Merging", "Task Arithmetic", "Ties-Merging")
                             for p, ln, k in zip((4e4, 4e5, 2e6), lengths, kept)])

    assert verdict.scale(ladder([-50, -30, -5], [70, 90, 95]), pb, "toy").outcome == "reproduced"
    assert verdict.scale(ladder([-5, -30, -50], [70, 90, 95]), pb, "toy").outcome == "partly reproduced"
    assert verdict.scale(ladder([-5, -30, -50], [95, 90, 70]), pb, "toy").outcome == "not reproduced"
    assert verdict.scale(ladder([-5, -30], [95, 90]).head(2), pb, "toy").outcome == "not measured"

    def levels(ta_tokens, ta_refl):
        return pd.DataFrame([{"model": m, "level": lv, "mean_tokens": t, "reflective": r}
                             for lv in (1, 5) for m, t, r in (("System 2", 100.0, 100.0),
                                                              ("Task Arithmetic", ta_tokens[lv], ta_refl))])

    assert verdict.adaptive(levels({1: 50.0, 5: 95.0}, 40.0), "toy").outcome == "reproduced"
    assert verdict.adaptive(levels({1: 95.0, 5: 95.0}, 40.0), "toy").outcome == "partly reproduced"
    assert verdict.adaptive(levels({1: 100.0, 5: 100.0}, 100.0), "toy").outcome == "not reproduced"


def test_saved_verdicts_make_the_intro_section(tmp_path):
    v = verdict.merges(_summary(Task_Arithmetic=(-40.0, 89.0)), "toy")
    v.save(tmp_path, "merges_chapter", _summary())
    assert (tmp_path / "verdicts" / "merges_chapter.summary.csv").is_file()
    md = verdict.intro_markdown(tmp_path, ["no_verdict_chapter", "merges_chapter"], "toy")
    assert "1 reproduced (of 1)" in md and "(chapters/merges_chapter.ipynb) | **reproduced** |" in md
    assert ":::{admonition}" in md and ":class: tip" in md
    assert ":::{admonition} Reproduced" in v.markdown() and "-48.7%" in v.markdown()
    saved = json.loads((tmp_path / "verdicts" / "merges_chapter.json").read_text())
    assert saved["outcome"] == "reproduced" and saved["kind"] == "merges"
    assert "No chapter" in verdict.intro_markdown(tmp_path / "none", ["merges_chapter"], "toy")
    with pytest.raises(ValueError):
        verdict.Verdict("t", "c", "m", "maybe", "r", "toy")


def test_every_results_chapter_opens_with_its_verdict():
    """The first code cell after the set-up computes, saves and shows the chapter's verdict."""
    results = [c for c in chapter_names() if "exercises" not in c]
    assert len(results) >= 6
    for name in results:
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        setup = next(i for i, c in enumerate(cells) if "setup" in c["metadata"].get("tags", []))
        first = "".join(next(c for c in cells[setup + 1:] if c["cell_type"] == "code")["source"])
        assert f'v.save(st.out, "{name}"' in first and "display(v)" in first, name
        assert first.index("display(v)") < (first.find("reader.table") % 10**6), name  # the box before any table


def test_contenders_rule_against_the_reported_cuts():
    """TLDR (reported about -50%): -40% at System 2's accuracy is reproduced; SelfBudgeter (up to -74.5%): -10% at
    a 30-point loss is not; a profile without trained baselines is not measured."""
    from l2s_utils.study.contenders import Contender

    s = _summary(TLDR_short=(-40.0, 88.0), SB=(-10.0, 60.0), BF=(-60.0, 50.0))
    cs = [Contender("tldr", "TLDR short", "trained baseline", trained="tldr"),
          Contender("sb", "SB", "trained baseline", trained="selfbudgeter"),
          Contender("bf", "BF", "decoding policy", policy={"think_budget": 64})]
    v = verdict.contenders(s, cs, "toy")
    rows = {r["method"]: r for r in v.rows}
    assert set(rows) == {"TLDR (length-regularised GRPO)", "SelfBudgeter"}
    assert rows["TLDR (length-regularised GRPO)"]["shortens"] == "yes" and rows["SelfBudgeter"]["shortens"] == "no"
    assert rows["SelfBudgeter"]["keeps accuracy"] == "no"
    assert v.outcome == "partly reproduced" and "nan" not in v.html()
    assert verdict.contenders(s, cs[2:], "toy").outcome == "not measured"
