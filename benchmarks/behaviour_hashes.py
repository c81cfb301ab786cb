"""Behaviour fingerprints for refactors: the micro organism's weights and the smoke study's graded tables.

    python benchmarks/behaviour_hashes.py [--out DIR] [--json FILE]

Trains the micro organism from scratch in a fresh cache (seconds), then runs the smoke profile's study
stages through the ``Study`` API (baselines, every merge method of the profile, the alpha path, the
sampled block) into a fresh run directory, and prints one sha256 per artefact:

- ``organism/<file>``: every weights file of base / System 1 / System 2 (safetensors, bit for bit);
- ``rows/<model>``: the graded rows of each model (response, prediction, correctness, token counts,
  reflection keywords, sample index), sorted by problem and sample.

A refactor that claims "behaviour unchanged" runs this before and after and compares the two JSON files
(``--json``); any difference names the artefact that changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["id", "sample", "response", "pred", "correct", "tokens", "generated_tokens", "finish_reason", "keywords"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="work directory (default: a fresh temporary one)")
    ap.add_argument("--json", help="write the hashes here as JSON")
    args = ap.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="l2s-behaviour-"))
    os.environ["L2S_CACHE_DIR"] = str(work / "cache")
    os.environ["TQDM_DISABLE"] = "1"
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from l2s_utils.organism import build
    from l2s_utils.study import Study

    out: dict[str, str] = {}
    org = build("micro", from_scratch=True, progress=False)
    for stage in ("base", "system1", "system2"):
        for f in sorted((org.root / stage).glob("*.safetensors")):
            out[f"organism/{stage}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    st = Study("smoke", out=work / "run")
    methods = list(st.profile["merge"])
    frames = [st.baselines(), st.run_methods(methods), st.geometry()["rows"], st.sampled_rows()]
    rows = pd.concat(frames, ignore_index=True)
    rows["run"] = rows.model + rows.sampling.map(lambda s: " greedy" if json.loads(s)["temperature"] == 0 else " sampled")
    for run, g in rows.groupby("run", sort=True):
        g = g.drop_duplicates(subset=["id", "sample"]).sort_values(["id", "sample"])[COLUMNS]
        out[f"rows/{run}"] = hashlib.sha256(g.to_csv(index=False).encode()).hexdigest()
    text = json.dumps(out, indent=1, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
