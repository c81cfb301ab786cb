"""The README's organism status is written from the stored records (l2s_utils.study.status), never typed by hand."""

from pathlib import Path

from l2s_utils.study import status

ROOT = Path(__file__).resolve().parents[1]


def test_readme_holds_the_status_written_from_the_records():
    text = (ROOT / "README.md").read_text()
    assert status.BEGIN in text and status.END in text
    got = text[text.index(status.BEGIN):text.index(status.END) + len(status.END)]
    assert got == status.block(), "README's organism status is stale: run python -m l2s_utils.study.status --write"


def test_status_block_names_a_missing_record(tmp_path):
    b = status.block(tmp_path)  # an empty data/organism: nothing to show, and it says so
    assert "No record of scale s over seeds" in b and b.startswith(status.BEGIN) and b.endswith(status.END)
