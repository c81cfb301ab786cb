"""Contenders (a model plus a decoding policy): the profile block checked completely, the toy and smoke lists, the
whole path on the micro organism (merge, decoding policies, the three trained baselines; cached), the summary table
with kind and cost, and the Pareto plot."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from l2s_utils.study.contenders import KINDS, policy_name
from l2s_utils.study.profiles import ProfileError, load_profile
from l2s_utils.study.profiles import contenders as parse

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "data" / "profiles" / "smoke.yaml"


def mutated(tmp_path: Path, fn, base: str = "smoke") -> Path:
    prof = yaml.safe_load((ROOT / "data" / "profiles" / f"{base}.yaml").read_text())
    fn(prof)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(prof))
    return f


def test_toy_profile_asks_for_every_kind_of_contender():
    cs = parse(load_profile("toy"), "toy")
    kinds = {c.kind for c in cs}
    assert kinds == {"merge", "decoding policy", "trained baseline"}
    assert {c.trained for c in cs if c.trained} == {"tldr", "selfbudgeter", "dpo"}
    assert {c.level for c in cs if c.trained == "tldr"} == {"short", "medium", "long"}
    by = {c.label: c for c in cs}
    assert by["bf-128"].policy == {"think_budget": 128} and by["bf-128"].name == "Budget forcing B=128"
    assert by["ts-2"].policy == {"stop_scale": 2.0} and by["ts-2"].name == "TS s=2"
    assert by["extend-256"].policy == {"think_min": 256}
    assert by["ties"].name == "Ties-Merging" and by["ties"].role == "merged" and by["bf-64"].role == "system2"
    assert len({c.name for c in cs}) == len(cs)


def test_policy_names():
    assert policy_name({"think_budget": 64}) == "budget forcing B=64"
    assert policy_name({"think_min": 32, "think_budget": 64}) == "budget forcing 32<=B<=64"
    assert policy_name({"think_budget": 64, "stop_scale": 2.0}) == "budget forcing B=64 + TS s=2"
    assert policy_name({}) == ""


def _set(label, entry):
    return lambda p: p.setdefault("contenders", {}).update({label: entry})


@pytest.mark.parametrize("fn,match", [
    (lambda p: p.update(contenders=[{"merge": "ties"}]), r"bad\.contenders: must be a mapping"),
    (_set("bf", 64), r"bad\.contenders\.bf: must be a mapping"),
    (_set("bf x", {"think_budget": 8}), r"bad\.contenders\.'bf x': a contender label is"),
    (_set("bf", {"think_budgt": 8}), r"bad\.contenders\.bf\.think_budgt: unknown key; allowed: .*think_budget"),
    (_set("bf", {"think_budget": 0}), r"bad\.contenders\.bf\.think_budget: must be an integer >= 1, got 0"),
    (_set("bf", {"think_budget": 8.5}), r"bad\.contenders\.bf\.think_budget: must be an integer >= 1"),
    (_set("bf", {"think_budget": True}), r"bad\.contenders\.bf\.think_budget: must be an integer >= 1"),
    (_set("bf", {"think_budget": 8, "think_min": 16}), r"bad\.contenders\.bf: .*think_min \(16\) exceeds think_budget \(8\)"),
    (_set("ts", {"stop_scale": -2}), r"bad\.contenders\.ts\.stop_scale: must be a number > 0"),
    (_set("ts", {"stop_scale": "2"}), r"bad\.contenders\.ts\.stop_scale: must be a number > 0"),
    (_set("ts", {"stop_scale": 1}), r"bad\.contenders\.ts\.stop_scale: 1 is no policy"),
    (_set("s2", {}), r"bad\.contenders\.s2: no merge, no trained model and no decoding policy: that is System 2"),
    (_set("s2", None), r"bad\.contenders\.s2: no merge, no trained model and no decoding policy"),
    (_set("m", {"merge": "tiez"}), r"bad\.contenders\.m\.merge: 'tiez' is not a label of the profile's merge block \(acm, .*ties"),
    (_set("m", {"merge": "ties", "trained": "dpo"}), r"bad\.contenders\.m: give either 'merge' or 'trained'"),
    (_set("t", {"trained": "ppo"}), r"bad\.contenders\.t\.trained: 'ppo' is not a trained baseline \(tldr \| selfbudgeter \| dpo\)"),
    (_set("t", {"trained": "dpo", "level": "short"}), r"bad\.contenders\.t\.level: the length tag of TLDR's prompts"),
    (_set("t", {"trained": "tldr", "level": "tiny"}), r"bad\.contenders\.t\.level: .*got 'tiny'"),
    (_set("t", {"think_budget": 8, "level": "short"}), r"bad\.contenders\.t\.level: only a trained contender takes 'level'"),
    (_set("t", {"merge": "ties", "train": {"steps": 2}}), r"bad\.contenders\.t\.train: only a trained contender"),
    (_set("t", {"trained": "dpo", "train": {"stepz": 2}}), r"bad\.contenders\.t\.train\.stepz: unknown training setting"),
    (_set("t", {"trained": "dpo", "train": {"steps": 0}}), r"bad\.contenders\.t\.train\.steps: must be >= 1, got 0"),
    (_set("t", {"trained": "dpo", "train": {"steps": "many"}}), r"bad\.contenders\.t\.train\.steps: must be a int >= 0"),
    (_set("t", {"trained": "dpo", "train": {"lr": -1.0}}), r"bad\.contenders\.t\.train\.lr: must be a float >= 0"),
    (_set("t", {"trained": "dpo", "train": [2]}), r"bad\.contenders\.t\.train: must be a mapping of training settings"),
    (_set("t", {"trained": "tldr", "train": {"batch": 3, "generations": 2, "steps_per_generation": 1}}),
     r"bad\.contenders\.t\.train: GRPO generates batch x steps_per_generation = 3 .* generations = 2"),
    (_set("t", {"trained": "dpo", "checkpoint": "", }), r"bad\.contenders\.t\.checkpoint: must be a hub id or a path"),
    (_set("t", {"trained": "dpo", "checkpoint": "a/b", "train": {"steps": 2}}), r"bad\.contenders\.t: 'checkpoint' names"),
    (_set("n", {"think_budget": 8, "name": "System 2"}), r"bad\.contenders\.n\.name: 'System 2' is reserved"),
    (_set("n", {"think_budget": 8, "name": ""}), r"bad\.contenders\.n\.name: must be a non-empty string"),
    (_set("n", {"think_budget": 8, "name": "a/b"}), r"bad\.contenders\.n\.name: must be a non-empty string without '/'"),
    (lambda p: p.update(contenders={"a": {"think_budget": 8}, "b": {"think_budget": 8}}),
     r"bad\.contenders: a, b are all shown as 'Budget forcing B=8'; give them different names"),
])
def test_a_bad_contender_is_refused_with_the_key_named(tmp_path, fn, match):
    with pytest.raises(ProfileError, match=match) as e:
        load_profile(mutated(tmp_path, fn))
    assert "\n" not in str(e.value)


def test_hub_profiles_take_policies_and_checkpoints_but_do_not_train(tmp_path):
    ok = load_profile(mutated(tmp_path, lambda p: p.update(contenders={
        "bf-4096": {"think_budget": 4096}, "ts-2": {"stop_scale": 2.0}, "ties-bf": {"merge": "ties", "think_budget": 4096},
        "tldr": {"trained": "tldr", "checkpoint": "someone/tldr-7b", "name": "TLDR (published)"}}), base="qwen-7b"))
    cs = {c.label: c for c in parse(ok, "qwen-7b")}
    assert cs["ties-bf"].kind == "merge" and cs["ties-bf"].name == "Ties-Merging + budget forcing B=4096"
    assert cs["tldr"].kind == "trained baseline" and cs["tldr"].checkpoint == "someone/tldr-7b"
    with pytest.raises(ProfileError, match=r"bad\.contenders\.t\.trained: the trained baselines train on the "
                                           r"organism's task only .*checkpoint"):
        load_profile(mutated(tmp_path, _set("t", {"trained": "dpo"}), base="qwen-7b"))


def test_kinds_in_the_table_order():
    assert KINDS == ("reference", "merge", "decoding policy", "trained baseline")


TINY = {"steps": 2, "problems_per_level": 2, "batch": 4, "generations": 2, "steps_per_generation": 2,
        "coldstart_steps": 2}


@pytest.fixture(scope="module")
def micro_study(tmp_path_factory):
    """A smoke-profile Study on the micro organism (its own cache) with one contender of every kind and entry shape:
    a merge, budget forcing, TS, a merge with a policy, the three trained baselines (TLDR at two levels)."""
    from l2s_utils.study import Study

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("L2S_CACHE_DIR", str(cache))
    from l2s_utils.study import baselines as B

    # micro answers (almost) nothing right: call every second response right, so that DPO and SelfBudgeter have data
    mp.setattr(B, "correct", lambda text, gold: len(text) % 2 == 0)
    from l2s_utils.organism import build

    elsewhere = build("micro", progress=False).system1  # stands in for a model trained elsewhere (a path)
    prof = load_profile("smoke")
    prof["contenders"] = {
        "given": {"trained": "dpo", "checkpoint": str(elsewhere), "name": "DPO (trained elsewhere)"},
        "ties": {"merge": "ties"}, "bf-8": {"think_budget": 8}, "ts-4": {"stop_scale": 4.0},
        "ties-bf": {"merge": "ties", "think_budget": 8},
        "tldr-short": {"trained": "tldr", "train": TINY}, "tldr-long": {"trained": "tldr", "level": "long", "train": TINY},
        "selfbudgeter": {"trained": "selfbudgeter", "train": TINY}, "dpo": {"trained": "dpo", "train": TINY}}
    out = tmp_path_factory.mktemp("runs")
    st = Study(prof, out=out)
    rows = st.contender_rows()
    yield {"prof": prof, "out": out, "cache": cache, "st": st, "rows": rows, "mp": mp}
    mp.undo()


def test_contenders_run_end_to_end_on_micro(micro_study):
    st, rows = micro_study["st"], micro_study["rows"]
    names = {c.label: c.name for c in st.contenders()}
    assert list(dict.fromkeys(rows.model)) == ["System 1", "System 2", *names.values()]
    kinds = rows.groupby("model").kind.first()
    assert kinds["System 2"] == "reference" and kinds[names["ties"]] == "merge"
    assert kinds[names["bf-8"]] == kinds[names["ts-4"]] == "decoding policy"
    assert kinds[names["ties-bf"]] == "merge" and names["ties-bf"] == "Ties-Merging + budget forcing B=8"
    assert {kinds[names[x]] for x in ("tldr-short", "tldr-long", "selfbudgeter", "dpo")} == {"trained baseline"}
    n = len(rows[rows.model == "System 2"])
    assert rows.groupby("model").size().eq(n).all()  # every contender answered every problem
    # the policy is part of what was generated (and of the cache key); TLDR's prompts carry its length tag
    sampling = rows.groupby("model").sampling.first()
    assert '"think_budget": 8' in sampling[names["bf-8"]] and '"stop_scale": 4.0' in sampling[names["ts-4"]]
    assert "think_budget" not in sampling["System 2"]
    assert rows[rows.model == names["tldr-short"]].question.str.endswith(" [short]").all()
    assert rows[rows.model == names["tldr-long"]].question.str.endswith(" [long]").all()
    assert not rows[rows.model == "System 2"].question.str.contains(r"\[").any()
    # both TLDR levels are one trained model
    tl = rows[rows.contender.isin(["tldr-short", "tldr-long"])].groupby("contender").model_fingerprint.first()
    assert tl["tldr-short"] == tl["tldr-long"] != rows[rows.model == "System 2"].model_fingerprint.iloc[0]


def test_contender_table_has_one_row_per_contender_with_kind_and_cost(micro_study):
    st, rows = micro_study["st"], micro_study["rows"]
    table = st.contender_summary(rows)
    assert len(table) == 2 + len(st.contenders()) and table.model.is_unique  # one benchmark: one row each
    for col in ("kind", "model", "contender", "accuracy", "acc_lo", "acc_hi", "mean_tokens", "tokens_lo", "tokens_hi",
                "length_change_pct", "reflective_pct", "setup_s", "decode_tokens_pct", "cost"):
        assert col in table.columns, col
    order = [KINDS.index(k) for k in table.kind]
    assert order == sorted(order)  # reference, merges, decoding policies, trained baselines
    t = table.set_index("contender")
    assert t.loc["system2", "length_change_pct"] == 0 and t.loc["system2", "decode_tokens_pct"] == 100
    assert (t.acc_lo <= t.accuracy).all() and (t.accuracy <= t.acc_hi).all()
    assert t.loc["ties", "setup"] == "merge" and 0 < t.loc["ties", "setup_s"] < 600
    assert t.loc["ties", "cost"].startswith("merge ") and "System 2's tokens" in t.loc["ties", "cost"]
    assert t.loc["bf-8", "setup_s"] == 0 and t.loc["bf-8", "cost"].startswith("nothing once")
    for lab in ("tldr-short", "selfbudgeter", "dpo"):
        assert t.loc[lab, "setup"] == "training" and t.loc[lab, "setup_s"] > 0, lab
        assert "on CPU" in t.loc[lab, "cost"]
    assert t.loc["tldr-short", "setup_s"] == t.loc["tldr-long", "setup_s"]  # one training, two levels
    assert t.loc["given", "kind"] == "trained baseline" and t.loc["given", "setup"] == "trained elsewhere"
    assert t.loc["given", "setup_s"] != t.loc["given", "setup_s"]  # NaN: not measured here
    assert t.loc["given", "cost"].startswith("trained elsewhere (not measured)")


def test_contenders_rerun_from_the_caches(micro_study, monkeypatch):
    """A second Study (a fresh process would do the same) trains, merges and generates nothing again."""
    from l2s_utils.study import Study, baselines as B
    import l2s_utils.merge as M

    gens = micro_study["out"] / "eval" / "generations"
    before = {p: p.stat().st_mtime_ns for p in gens.glob("*.jsonl")}

    def refuse(*a, **k):
        raise AssertionError("not cached")

    for f in ("_train_tldr", "_train_selfbudgeter", "_train_dpo"):
        monkeypatch.setattr(B, f, refuse)
    monkeypatch.setattr(M, "merge", refuse)
    st = Study(micro_study["prof"], out=micro_study["out"])
    again = st.contender_rows()
    assert {p: p.stat().st_mtime_ns for p in gens.glob("*.jsonl")} == before
    cols = ["model", "id", "response", "correct", "tokens"]
    assert again[cols].equals(micro_study["rows"][cols])
    assert st.contender_summary(again).setup_s.equals(st.contender_summary(micro_study["rows"]).setup_s)
    with pytest.raises(ValueError, match=r"no contender 'nope'; its contenders: bf-8, dpo, given"):
        st.contender_rows(["nope"])
    assert set(st.contender_rows(["bf-8"]).contender) == {"system1", "system2", "bf-8"}


def _crowded():
    import numpy as np
    import pandas as pd

    names = ["System 1", "System 2", "Task Arithmetic", "Ties-Merging", "AIM-Ties", "Sens-Merging",
             "Budget forcing B=64", "Budget forcing B=128", "Budget forcing B=256", "Budget forcing min=256", "TS s=2",
             "TS s=4", "TLDR-style GRPO [short]", "TLDR-style GRPO [medium]", "TLDR-style GRPO [long]", "SelfBudgeter",
             "DPO on length pairs"]
    kinds = ["reference"] * 2 + ["merge"] * 4 + ["decoding policy"] * 6 + ["trained baseline"] * 5
    acc = np.array([40, 80, 78, 79, 80, 79, 60, 70, 76, 81, 77, 74, 72, 75, 79, 76, 78.0])
    tok = np.array([60, 400, 220, 210, 205, 215, 120, 190, 300, 420, 330, 280, 200, 240, 330, 250, 300.0])
    return pd.DataFrame({"model": names, "kind": kinds, "accuracy": acc, "acc_lo": acc - 5, "acc_hi": acc + 5,
                         "mean_tokens": tok, "tokens_lo": tok - 10, "tokens_hi": tok + 10})


def test_pareto_front():
    from l2s_utils.study.plots import pareto_front

    assert pareto_front([60, 400, 210, 205, 300], [40, 80, 79, 80, 76]) == [True, False, False, True, False]
    assert pareto_front([10, 10], [50, 50]) == [True, True]  # exact ties both stay


def test_pareto_plot_labels_every_contender_without_overlap_and_marks_kinds():
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.text import Text

    from l2s_utils.study import plots

    df = _crowded()
    fig = plots.pareto(df, "crowded")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts]
    assert sorted(t.get_text() for t in labels) == sorted(df.model)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    clash = [(labels[i].get_text(), labels[j].get_text()) for i, j in itertools.combinations(range(len(boxes)), 2)
             if boxes[i].overlaps(boxes[j])]
    assert not clash, clash
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
    # one marker per kind (the legend's), CIs on both axes
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"reference", "merge", "decoding policy", "trained baseline", "Pareto front"} <= legend
    markers = {}
    for line in ax.lines:
        if line.get_marker() not in (None, "None", "", "|", "_") and len(line.get_xdata()) == 1:
            markers.setdefault(line.get_marker(), 0)
            markers[line.get_marker()] += 1
    assert markers == {"o": 2, "s": 4, "^": 6, "D": 5}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_reported_numbers_match_their_sources_and_sit_beside_ours():
    import pandas as pd

    from l2s_utils.study.contenders import Contender, family
    from l2s_utils.study.paper import long_to_short_reported, paper_summary, reported_beside_ours

    rep = long_to_short_reported()
    assert rep.family.str.match(r"^(merge:\w+|trained:(tldr|selfbudgeter|dpo)|policy:(budget_forcing|ts))$").all()
    assert rep.source.notna().all() and rep.paper.notna().all()
    t1 = paper_summary().set_index("method")
    s2 = t1.loc["DeepSeek-R1-Distill-Qwen-7B", "avg_accuracy"]
    for method, row in (("Ties-Merging", rep.iloc[0]), ("DPO", rep[rep.family == "trained:dpo"].iloc[0])):
        assert row.accuracy_change_points == pytest.approx(t1.loc[method, "avg_accuracy"] - s2)
        assert row.length_change_pct == t1.loc[method, "avg_length_change_pct"]
    q3 = pd.read_csv(ROOT / "data" / "paper" / "readme_qwen3_8b.csv").set_index("role")
    readme = rep[rep.source.str.contains("6bc078e")].iloc[0]
    assert readme.accuracy_change_points == pytest.approx(q3.loc["merged", "accuracy"] - q3.loc["system2", "accuracy"])
    assert readme.length_change_pct == pytest.approx(
        100 * (q3.loc["merged", "mean_length"] / q3.loc["system2", "mean_length"] - 1), abs=0.05)
    # beside ours: a contender of a family lands in that family's rows; a family without one says so
    ours = pd.DataFrame({"model": ["System 2", "Ties-Merging", "TS s=2"], "accuracy": [80.0, 78.0, 70.0],
                         "length_change_pct": [0.0, -40.0, -20.0]})
    cs = [Contender("ties", "Ties-Merging", "merge", merge="ties"),
          Contender("ts-2", "TS s=2", "decoding policy", policy={"stop_scale": 2.0})]
    assert [family(c) for c in cs] == ["merge:ties", "policy:ts"]
    got = reported_beside_ours(ours, cs, "toy").set_index("method")["this run (toy), vs its System 2"]
    assert got["TIES-Merging"] == "Ties-Merging: -2.0 points, -40% length"
    assert got["Temperature scaling of the stopping point (TS)"] == "TS s=2: -10.0 points, -20% length"
    assert got["DPO"] == "not in this profile"


def test_seed_ranking_calls_an_order_that_flips_between_seeds_a_tie():
    """Hand-made records: A beats everyone on every seed; B and C swap places between seeds (a tie); D is last on
    every seed but equals C on seed 1 (not beaten on every seed: tied with C, so it joins that tier)."""
    from l2s_utils.study.contenders import seed_ranking, seed_spread

    acc = {0: {"A": 90, "B": 80, "C": 70, "D": 60}, 1: {"A": 91, "B": 70, "C": 75, "D": 50},
           2: {"A": 95, "B": 85, "C": 72, "D": 72}}
    per_seed = {s: [{"model": m, "accuracy": float(v), "mean_tokens": 100.0 + v, "length_change_pct": -v / 10,
                     "kind": "merge"} for m, v in a.items()] for s, a in acc.items()}
    assert seed_ranking(per_seed) == [["A"], ["B", "C", "D"]]
    acc[2]["D"] = 71
    per_seed[2] = [{**r, "accuracy": float(acc[2][r["model"]])} for r in per_seed[2]]
    assert seed_ranking(per_seed) == [["A"], ["B", "C"], ["D"]]
    sp = {r["model"]: r for r in seed_spread(per_seed)}
    assert sp["B"]["accuracy"] == (80 + 70 + 85) / 3 and (sp["B"]["accuracy_min"], sp["B"]["accuracy_max"]) == (70, 85)
    assert sp["A"]["mean_tokens_max"] == 195.0 and sp["D"]["seeds"] == 3
    assert seed_ranking({0: per_seed[0]}) == [["A"], ["B"], ["C"], ["D"]]  # one seed: no ties but exact ones
