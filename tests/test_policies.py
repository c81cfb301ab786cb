"""Decoding-time policies: checked values, cache keys, budget forcing and stop scaling on a scripted model and on the
organism (both backends share the phase logic in ``evaluate/policies.py``)."""

from __future__ import annotations

import math

import pytest

from l2s_utils.evaluate.generation import Generation, Sampling
from l2s_utils.evaluate.policies import FORCED_END, WAIT, budget_forced


@pytest.mark.parametrize("kw,match", [
    ({"temperature": -1}, "temperature"), ({"temperature": math.inf}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 2.5}, "max_tokens"),
    ({"seed": -1}, "seed"), ({"think_budget": 0}, "think_budget"), ({"think_budget": True}, "think_budget"),
    ({"think_min": 0}, "think_min"), ({"think_budget": 10, "think_min": 20}, "exceeds"),
    ({"stop_scale": 0}, "stop_scale"), ({"stop_scale": -2.0}, "stop_scale"), ({"stop_scale": math.nan}, "stop_scale"),
])
def test_sampling_refuses_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kw)


def test_policies_enter_the_cache_key_only_when_on():
    plain = Sampling(max_tokens=50)
    assert set(plain.key()) == {"max_tokens", "temperature", "top_p", "seed", "stop", "stop_token_ids"}
    for kw in ({"think_budget": 20}, {"think_min": 5}, {"stop_scale": 2.0}):
        assert Sampling(max_tokens=50, **kw).key() != plain.key()
    assert Sampling(max_tokens=50, think_budget=20).key() != Sampling(max_tokens=50, think_budget=30).key()


class Words:
    """A tokenizer for the scripted model: one token per whitespace-separated word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


class Scripted:
    """A deterministic 'model': after ``<think>`` it writes ``think`` words "t" (``think`` more after every "Wait"),
    then ``</think>``; after ``</think>`` it writes "The answer is 5 ." ; a prompt starting with "short" answers
    "s" x ``think`` then "5 ." without thinking. Honours max_tokens and stop strings as the backends do."""

    def __init__(self, think: int):
        self.think, self.calls = think, []

    def continuation(self, prompt: str) -> list[str]:
        head, _, written = prompt.partition("|")
        w = written.replace("</think>", " </think>").split()
        if head.startswith("short"):
            return (["s"] * self.think + ["5", "."])[len(w):]
        if "</think>" in w:
            tail = w[w.index("</think>") + 1:]
            return ["The", "answer", "is", "5", "."][len(tail):] if tail[:3] == ["The", "answer", "is"][:len(tail[:3])] \
                else ["5", "."]
        if not w:
            return ["<think>"] + ["t"] * self.think + ["</think>", "The", "answer", "is", "5", "."]
        since = len(w) - 1 - (max(i for i, x in enumerate(w) if x == "Wait") if "Wait" in w else 0)
        return ["t"] * max(0, self.think - since) + ["</think>", "The", "answer", "is", "5", "."]

    def __call__(self, prompts, sp: Sampling):
        self.calls.append(sp)
        out = []
        for p in prompts:
            words, n, stopped = [], 0, ""
            for x in self.continuation(p):
                if x in sp.stop:
                    stopped = x
                    break
                if n == sp.max_tokens:
                    break
                words.append(x)
                n += 1
            else:
                stopped = "<eos>"
            out.append(Generation(" " + " ".join(words) if words else "", n, "stop" if stopped else "length", stopped))
        return out


def run(model, prompts, **kw):
    return budget_forced(model, prompts, Sampling(max_tokens=kw.pop("max_tokens", 200), stop=("<eos>",), **kw), Words())


def test_no_policy_reproduces_the_model():
    model = Scripted(think=30)
    (g,) = run(model, ["q|"], think_budget=1000)
    assert g.text.replace("</think>", " </think>").split() == ["<think>"] + ["t"] * 30 + ["</think>", "The", "answer", "is", "5", "."]
    assert g.n_tokens == 37 and g.finish_reason == "stop"


def test_think_budget_caps_the_thinking_and_forces_the_answer():
    model = Scripted(think=100)
    (g,) = run(model, ["q|"], think_budget=20)
    words = g.text.split()
    assert words[:20] == ["<think>"] + ["t"] * 19  # B = 20 thinking tokens, then the forced end
    assert words[20:24] == FORCED_END.split()[:4] and words[-2:] == ["5", "."]
    assert g.n_tokens == len(words) and g.finish_reason == "stop"
    assert model.calls[0].max_tokens == 20 and "</think>" in model.calls[0].stop
    assert all(c.think_budget is None and c.think_min is None for c in model.calls)  # backends see plain sampling


def test_think_min_appends_wait_until_the_minimum():
    model = Scripted(think=10)
    (g,) = run(model, ["q|"], think_min=25)
    words = g.text.replace("</think>", " </think>").split()
    assert words.count("Wait") == 2 and words.count("</think>") == 1  # 11 + 11 (+ Wait) ... >= 25 thinking tokens
    assert words.index("</think>") >= 25 and words[-2:] == ["5", "."]
    assert WAIT.strip() == "Wait"


def test_short_style_answers_are_not_budgeted_and_max_tokens_holds():
    model = Scripted(think=40)
    (short, long) = run(model, ["short|", "q|"], think_budget=10, max_tokens=60)
    assert short.text.split() == ["s"] * 40 + ["5", "."] and short.finish_reason == "stop"
    (g,) = run(Scripted(think=100), ["q|"], max_tokens=30)  # no budget: max_tokens cuts the thinking
    assert g.n_tokens == 30 and g.finish_reason == "length"
    (g,) = run(Scripted(think=100), ["q|"], think_budget=28, max_tokens=30)  # forced end, then no room left
    assert g.n_tokens >= 30 and g.finish_reason == "length"


def test_stop_scale_reaches_only_thinking_phases():
    model = Scripted(think=10)
    run(model, ["q|"], stop_scale=4.0)
    kinds = [("</think>" in c.stop, c.stop_scale) for c in model.calls]
    assert kinds == [(True, 4.0), (False, 1.0)]  # thinking phase scaled, answer phase plain


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from l2s_utils.organism import build

    return build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False, from_scratch=True)


def test_policies_on_the_organism_and_their_cache_keys(micro, tmp_path):
    from l2s_utils.evaluate.pipeline import evaluate

    base = dict(prompt="toy", backend="transformers", out=tmp_path, limit=6, progress=False, batch_size=8)
    plain = evaluate(micro.system2, "toy", sampling=Sampling(max_tokens=30), **base)
    forced = evaluate(micro.system2, "toy", sampling=Sampling(max_tokens=30, think_budget=8), **base)
    scaled = evaluate(micro.system2, "toy", sampling=Sampling(max_tokens=30, stop_scale=50.0), **base)
    assert len(list((tmp_path / "generations").glob("*.jsonl"))) == 3  # three policies, three caches
    assert (forced.generated_tokens <= 30).all() and (scaled.generated_tokens <= 30).all()
    assert len(plain) == len(forced) == len(scaled) == 6


class OpenedByPrompt(Scripted):
    """A model behind a chat template that opens the thinking itself (prompt ends with ``<think>``, as DeepSeek-R1's
    ``r1`` style): it writes ``think`` words "t", then ``</think>`` and the answer, never a ``<think>`` of its own."""

    def continuation(self, prompt: str) -> list[str]:
        written = prompt.partition("<think>")[2] if "<think>" in prompt else prompt.partition("|")[2]
        w = written.replace("</think>", " </think>").split()
        if "</think>" in w:
            tail = w[w.index("</think>") + 1:]
            return ["The", "answer", "is", "5", "."][len(tail):] if tail[:3] == ["The", "answer", "is"][:len(tail[:3])] \
                else ["5", "."]
        return ["t"] * max(0, self.think - len(w)) + ["</think>", "The", "answer", "is", "5", "."]


def test_think_budget_holds_when_the_prompt_opens_the_thinking():
    model = OpenedByPrompt(think=100)
    (g,) = run(model, ["q <think>\n"], think_budget=20)
    words = g.text.split()
    assert words[:20] == ["t"] * 20 and words[20:24] == FORCED_END.split()[:4] and words[-2:] == ["5", "."]
    assert g.finish_reason == "stop"
    # the prompt's <think> is what makes it budgeted: the same model behind a prompt without it is not cut
    (free,) = run(OpenedByPrompt(think=100), ["q|"], think_budget=20)
    assert free.text.split().count("t") == 100 and "The answer is" not in free.text.split("</think>")[0]
