"""The product speaks of the product: README.md, the recipe READMEs and docs/ hold no absolute path
of a machine and no word about how the work was organised, and every number of the README's
key-findings table is in the report its row links."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folders of a machine, not of the product (/data/LibriSpeech in an example command is a reader's path).
MACHINE_FOLDERS = re.compile(r"(?<![\w.~-])/(?:tmp|home|root|work|Users|scratch|mnt)/")
# "session" as in a working session; "the issue" / "issue 14" as in a ticket.
WORK_WORDS = re.compile(r"\bsessions?\b|\bthe issue\b|\bissue'?s?\s+(?:#?\d+|target|rule)|\bissue\s+#?\d+",
                        re.IGNORECASE)


def product_pages(root: Path = ROOT) -> list[Path]:
    """README.md, every recipe README and every text file of docs/."""
    pages = [root / "README.md", *sorted((root / "recipes").rglob("README.md"))]
    pages += sorted(p for p in (root / "docs").rglob("*") if p.suffix in (".md", ".json"))
    return pages


def leaks(text: str, checkout: str | Path = ROOT) -> list[str]:
    """What in ``text`` is about a machine or a working session, one entry per finding.

    >>> leaks("data in /srv/x/LibriSpeech, see docs/gpu.md", checkout="/srv/x")
    ['the checkout /srv/x']
    >>> leaks("copied to /tmp/run; measured in this session's CPU", checkout="/opt/repo")
    ['machine folder /tmp/', 'work word session']
    >>> leaks("python asr_ctc.py --data_folder=/data/LibriSpeech; 2 sessions of xdist? no", checkout="/opt/r")
    ['work word sessions']
    """
    found = []
    checkout = str(checkout).rstrip("/")
    if checkout in text:
        found.append(f"the checkout {checkout}")
    found += [f"machine folder {m.group(0)}" for m in MACHINE_FOLDERS.finditer(text)]
    found += [f"work word {m.group(0)}" for m in WORK_WORDS.finditer(text)]
    return found


def test_the_checker_finds_what_it_must_and_spares_the_product():
    checkout = "/opt/build/speechpos"
    bad = [
        f"`python tools/studies/ctc_baseline.py --corpus {checkout}/data/LibriSpeech-bench`",
        "--previous /tmp/old_baseline.json",
        "models in /home/me/models and /root/x and /work/main/results",
        "on this session's CPU",
        "a CPU session holds",
        "20 min (not the issue's 30)",
        "Targets (issue 14):",
    ]
    for text in bad:
        assert leaks(text, checkout), text
    good = [
        "python asr_ctc.py hparams/ctc.yaml --data_folder=/data/LibriSpeech",
        "results/ctc/conformer/1234 and …/old_baseline.json",
        "audio s / s; 10 s/epoch; tissue of the issuer",
    ]
    for text in good:
        assert leaks(text, checkout) == [], text


@pytest.mark.parametrize("page", product_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_pages_hold_no_machine_path_and_no_work_words(page):
    assert leaks(page.read_text(encoding="utf-8")) == []


def key_findings_rows(readme: str) -> list[tuple[list[str], str]]:
    """The data rows of the first table under ``## Key findings``: (cells, linked report path)."""
    section = readme.split("## Key findings", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        link = re.search(r"\]\(([^)]+\.md)\)", cells[-1])
        if link:
            rows.append((cells[:-1], link.group(1)))
    return rows


def missing_numbers(cells: list[str], report: str) -> list[str]:
    """The numbers of ``cells`` that ``report`` does not print as such.

    >>> missing_numbers(["speech, 1 h (WER, 2)", "86.7", "84.8"], "| scratch | 86.7 ± 0.0 | 1 h | 2 seeds")
    ['84.8']
    >>> missing_numbers(["66.5"], "WER 166.5 and 66.55")
    ['66.5']
    """
    numbers = [n for cell in cells for n in re.findall(r"\d+(?:\.\d+)?", cell)]
    return [n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d]|\.\d)", report)]


def test_every_key_finding_number_is_in_the_report_it_links():
    rows = key_findings_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    assert 1 <= len(rows) <= 8
    for cells, link in rows:
        report = (ROOT / link).read_text(encoding="utf-8")
        assert missing_numbers(cells, report) == [], (cells, link)


def test_the_key_findings_check_fails_on_a_number_the_report_lacks(tmp_path):
    (tmp_path / "r.md").write_text("| scratch | 86.7 ± 0.0 |\n")
    readme = ("## Key findings\n\n| task | scratch | best | report |\n|---|---|---|---|\n"
              "| speech | 86.7 | 84.1 | [r](r.md) |\n\n## Next\n")
    [(cells, link)] = key_findings_rows(readme)
    assert link == "r.md" and missing_numbers(cells, (tmp_path / link).read_text()) == ["84.1"]
