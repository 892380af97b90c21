"""Reading a pretraining run's logs and plotting them (training curves, position confusion).

The pretraining recipe (``recipes/LibriSpeech/pretrain.py``) writes, in its output folder,

- ``train_log.txt``: one line per epoch in SpeechBrain's ``FileTrainLogger`` format,
  ``epoch: 3, lr: 1.02e-03 - train loss: 5.34, train pos_acc: 1.12e-02, ... - valid loss: ...``;
- ``valid_confusion.npy``: a (P, P) matrix of counts, true position ``i`` predicted as ``j``.

:func:`read_train_log` turns the log into one record per epoch, :func:`plot_training_curves`
draws loss, position accuracy and position error (train and valid, with their chance levels),
and :func:`plot_confusion` draws the row-normalised confusion on a log colour scale.
Plotting uses matplotlib's non-interactive ``Agg`` backend; nothing here needs torch.

Example
-------
>>> rec = parse_log_line("epoch: 2, lr: 1.00e-03 - train loss: 5.40, train pos_acc: 8.00e-03 "
...                      "- valid loss: 5.39, valid pos_acc: 8.70e-03")
>>> rec["epoch"], rec["lr"], rec["train"]["loss"], rec["valid"]["pos_acc"]
(2, 0.001, 5.4, 0.0087)
>>> import numpy as np
>>> normalize_rows(np.array([[1, 3], [0, 0]])).tolist()
[[0.25, 0.75], [nan, nan]]
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

STAGES = ("train", "valid", "test")


def _number(text: str):
    """int, float, or the text itself when it is not a number."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_log_line(line: str) -> dict | None:
    """One ``FileTrainLogger`` line -> ``{"epoch": .., "lr": .., "train": {..}, "valid": {..}}``.

    The meta part (before the first `` - ``) gives top-level keys; every later part is one
    stage's stats, whose keys lose their ``train``/``valid``/``test`` prefix. Returns None for
    a blank line or one without ``key: value`` items.

    >>> parse_log_line("epoch: 1 - train loss: 2.50e+00 - test loss: 3.0")
    {'epoch': 1, 'train': {'loss': 2.5}, 'test': {'loss': 3.0}}
    >>> parse_log_line("") is None
    True
    """
    line = line.strip()
    if not line:
        return None
    record: dict = {}
    for i, part in enumerate(line.split(" - ")):
        items = [item for item in part.split(", ") if ": " in item]
        for item in items:
            key, value = item.split(": ", 1)
            key = key.strip()
            stage, _, name = key.partition(" ")
            if i > 0 and stage in STAGES and name:
                record.setdefault(stage, {})[name] = _number(value)
            else:
                record[key] = _number(value)
    return record or None


def read_train_log(path: str | Path) -> list[dict]:
    """Records of a ``train_log.txt``, one per epoch, in epoch order.

    A resumed run appends to the same file, so an epoch can appear twice: its last line wins.
    Lines without an ``epoch`` key (e.g. a final test line) are kept after the epochs.
    """
    by_epoch: dict = {}
    others = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = parse_log_line(line)
            if rec is None:
                continue
            if "epoch" in rec:
                by_epoch[rec["epoch"]] = rec
            else:
                others.append(rec)
    return [by_epoch[e] for e in sorted(by_epoch)] + others


def dev_curve(records: list[dict]) -> list[tuple[float, float, float]]:
    """(training seconds, dev WER, dev CER) of each epoch record of a CTC ``train_log.txt``
    (:func:`read_train_log`) that holds a validation.

    >>> dev_curve([{"epoch": 1, "train_time_s": 60.0, "valid": {"WER": 90.0, "CER": 40.0}}, {"split": "test"}])
    [(60.0, 90.0, 40.0)]
    """
    return [(r["train_time_s"], r["valid"]["WER"], r["valid"]["CER"])
            for r in records if "epoch" in r and "valid" in r]


def last_valid(path: str | Path) -> dict:
    """The last validation record of a ``train_log.txt`` ({} if there is none, or no file)."""
    path = Path(path)
    valid = [r["valid"] for r in read_train_log(path) if "valid" in r] if path.is_file() else []
    return valid[-1] if valid else {}


def example_pairs(wer_file: Path, count: int) -> list[tuple[str, str, str]]:
    """(utterance, reference, hypothesis) of the first ``count`` utterances of a SpeechBrain
    ``wer_<split>.txt`` alignment file (its ``<eps>`` placeholders dropped).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "wer.txt"
    >>> _ = path.write_text("u1, %WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]\\nA ; B\\n= ; x\\nA ; C\\n")
    >>> example_pairs(path, 1)
    [('u1', 'A B', 'A C')]
    """
    pairs, lines = [], wer_file.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\S+), %WER", line)
        if match and i + 3 < len(lines):
            ref = " ".join(w.strip() for w in lines[i + 1].split(";") if w.strip() != "<eps>")
            hyp = " ".join(w.strip() for w in lines[i + 3].split(";") if w.strip() != "<eps>")
            pairs.append((match.group(1), ref, hyp))
            if len(pairs) == count:
                break
    return pairs


def series(records: list[dict], stage: str, key: str) -> tuple[list, list]:
    """(epochs, values) of ``stage``'s ``key`` over the records that have it.

    >>> series([{"epoch": 1, "train": {"loss": 2.0}}, {"epoch": 2, "train": {}}], "train", "loss")
    ([1], [2.0])
    """
    epochs, values = [], []
    for rec in records:
        value = rec.get(stage, {}).get(key)
        if "epoch" in rec and isinstance(value, int | float):
            epochs.append(rec["epoch"])
            values.append(float(value))
    return epochs, values


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of zeros become NaN, drawn blank)."""
    matrix = np.asarray(matrix, dtype=float)
    sums = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, matrix / np.where(sums > 0, sums, 1.0), np.nan)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, title: str | None = None) -> Path:
    """Title, tight layout, PNG at 120 dpi; closes the figure."""
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# (panel title, stat key, chance key or None, y label)
CURVE_PANELS = (
    ("loss", "loss", None, "cross-entropy"),
    ("position accuracy", "pos_acc", "chance_acc", "top-1 accuracy"),
    ("position error", "pos_err", "chance_err", "mean |predicted - true| (tokens)"),
)
STAGE_COLORS = {"train": "tab:blue", "valid": "tab:orange"}


def plot_training_curves(records: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Loss, position accuracy and position error per epoch, train and valid, each metric
    with its chance level (dashed), in one row of three panels, saved as a PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(5.2 * len(CURVE_PANELS), 4.0))
    for ax, (name, key, chance_key, ylabel) in zip(axes, CURVE_PANELS, strict=True):
        for stage, color in STAGE_COLORS.items():
            epochs, values = series(records, stage, key)
            if epochs:
                ax.plot(epochs, values, "o-", color=color, ms=3, label=stage)
            if chance_key:
                epochs, values = series(records, stage, chance_key)
                if epochs:
                    ax.plot(epochs, values, "--", color=color, alpha=0.7, label=f"{stage} chance")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path, title)


def plot_confusion(
    matrix: np.ndarray,
    path: str | Path,
    first: int | None = 100,
    title: str | None = None,
    token_ms: float | None = None,
) -> Path:
    """Heatmap of predicted vs true position, rows normalised, on a log colour scale.

    Arguments
    ---------
    matrix : np.ndarray
        (P, P) counts, row = true position, column = predicted position.
    path : str or Path
        PNG to write.
    first : int, optional
        Show only the first ``first`` true and predicted positions (None: all P).
    title : str, optional
        Figure title (default: accuracy over the rows shown).
    token_ms : float, optional
        Duration of one token; adds it to the axis labels.
    """
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    n = matrix.shape[0] if first is None else min(first, matrix.shape[0])
    # Normalise over the full row (predictions past the shown window still count).
    probs = normalize_rows(matrix)[:n, :n]
    counts = matrix[:n]
    shown = probs[np.isfinite(probs) & (probs > 0)]
    vmin = max(float(shown.min()) if shown.size else 1e-3, 1e-4)
    masked = np.ma.masked_where(~np.isfinite(probs) | (probs <= 0), probs)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(
        masked, origin="lower", cmap=cmap, norm=LogNorm(vmin=vmin, vmax=1.0),
        interpolation="nearest", extent=(-0.5, n - 0.5, -0.5, n - 0.5),
    )
    ax.plot([-0.5, n - 0.5], [-0.5, n - 0.5], color="red", lw=0.6, alpha=0.4)
    unit = "token" if token_ms is None else f"token of {token_ms:g} ms"
    ax.set_xlabel(f"predicted position ({unit})")
    ax.set_ylabel(f"true position ({unit})")
    total = int(counts.sum())
    acc = float(np.trace(matrix[:n, :n])) / total if total else math.nan
    ax.set_title(title or f"valid positions 0-{n - 1}: accuracy {acc:.3f}, {total} tokens", fontsize=10)
    fig.colorbar(im, ax=ax, label="P(predicted | true), row-normalised")
    return _save(fig, path)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 4 significant digits.

    >>> print(markdown_table(["a", "b"], [[1, 0.123456]]))
    | a | b |
    |---|---|
    | 1 | 0.1235 |
    """

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report_text(setup: str, table: str, title: str | None = None, command: str | None = None) -> str:
    """A report's markdown: a short title, the conditions, the table, then the command that
    wrote it in a code block (a long command would bury the conditions if it came first).

    >>> print(report_text("One run, 1 thread.", "| a |", title="Bench", command="python tools/x.py"))
    # Bench
    <BLANKLINE>
    One run, 1 thread.
    <BLANKLINE>
    | a |
    <BLANKLINE>
    ## Command
    <BLANKLINE>
    ```bash
    python tools/x.py
    ```
    <BLANKLINE>
    """
    parts = [f"# {title}"] if title else []
    parts += [p for p in (setup, table) if p]
    if command:
        parts += ["## Command", f"```bash\n{command}\n```"]
    return "\n\n".join(parts) + "\n"


REPO_ROOT = Path(__file__).resolve().parents[2]
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*[\w.+-]+/?")


def repo_relative(text: str, root: str | Path = REPO_ROOT) -> str:
    """``text`` with every absolute path made relative to the repository, or (outside it) cut
    to ``…/<last folder>``: a report names a corpus by its folder, never by where one machine
    kept it.

    >>> repo_relative("--corpus /srv/x/LibriSpeech-bench --out /repo/results/a", root="/repo")
    '--corpus …/LibriSpeech-bench --out results/a'
    >>> repo_relative("10 s/epoch, audio s / s", root="/repo")
    '10 s/epoch, audio s / s'
    """
    root = str(root).rstrip("/")

    def short(match: re.Match) -> str:
        path = match.group(0)
        if path == root or path.startswith(root + "/"):
            return path[len(root) + 1:] or "."
        return "…/" + path.rstrip("/").rsplit("/", 1)[-1]

    return _ABSOLUTE_PATH.sub(short, text)


def tool_command(tool_file: str | Path, argv: list[str]) -> str:
    """The command line that ran a tool, as a reader would type it from the repository root
    (absolute paths made relative, :func:`repo_relative`).

    >>> tool_command(REPO_ROOT / "tools" / "x.py", ["--note", "two words"])
    "python tools/x.py --note 'two words'"
    """
    import shlex

    tool = Path(tool_file).resolve()
    name = tool.relative_to(REPO_ROOT).as_posix() if tool.is_relative_to(REPO_ROOT) else tool.name
    return shlex.join(["python", name, *(repo_relative(str(a)) for a in argv)])


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± sample std`` (ddof = 1, the spread a reader expects over seeds); the mean alone
    for one value, ``-`` for none.

    >>> mean_std([49.0, 51.0, 54.5]), mean_std([3.0]), mean_std([])
    ('51.50 ± 2.78', '3.00', '-')
    """
    import statistics

    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_report(setup: str, table: str, path: str | Path | None = None, *, title: str | None = None,
                 command: str | None = None) -> None:
    """Print a benchmark's report (:func:`report_text`) and write it to ``path``.

    >>> write_report("one run", "| a |")
    one run
    <BLANKLINE>
    | a |
    <BLANKLINE>
    """
    text = report_text(setup, table, title, command)
    print(text)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def epoch_table(records: list[dict]) -> str:
    """Markdown summary of a run, one row per epoch."""
    headers = [
        "epoch", "lr", "train loss", "valid loss", "train acc", "valid acc", "chance acc",
        "train err", "valid err", "chance err", "train audio s/s",
    ]
    rows = []
    for rec in records:
        if "epoch" not in rec:
            continue
        tr, va = rec.get("train", {}), rec.get("valid", {})
        rows.append([
            rec["epoch"], rec.get("lr", ""), tr.get("loss", ""), va.get("loss", ""),
            tr.get("pos_acc", ""), va.get("pos_acc", ""), va.get("chance_acc", tr.get("chance_acc", "")),
            tr.get("pos_err", ""), va.get("pos_err", ""), va.get("chance_err", tr.get("chance_err", "")),
            tr.get("audio_s_per_s", ""),
        ])
    return markdown_table(headers, rows)


def plot_quality_vs_time(points: dict[str, list[tuple[float, float, float]]], path: str | Path,
                         title: str | None = None, xlabel: str = "pretraining time (min)") -> Path:
    """WER and CER against (pre)training time in minutes, one line per method.

    ``points`` maps a method name to (pretraining seconds, WER, CER) triples; a method with a
    single point at 0 s (from scratch) is drawn as a horizontal reference line.

    >>> import tempfile
    >>> p = plot_quality_vs_time({"scratch": [(0, 99.0, 60.0)], "MP3": [(60, 98.0, 55.0)]},
    ...                          tempfile.mkdtemp() + "/q.png")
    >>> p.stat().st_size > 0
    True
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    longest = max((t for pts in points.values() for t, _, _ in pts), default=1.0) or 1.0
    for ax, column, label in ((axes[0], 1, "WER (%)"), (axes[1], 2, "CER (%)")):
        for name, pts in points.items():
            pts = sorted(pts)
            if len(pts) == 1 and pts[0][0] == 0:
                ax.axhline(pts[0][column], ls="--", color="gray", label=name)
                continue
            ax.plot([p[0] / 60 for p in pts], [p[column] for p in pts], "o-", label=name)
        ax.set_xlim(0, longest / 60 * 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_class_confusion(
    matrix: np.ndarray, labels: list[str], path: str | Path, title: str | None = None
) -> Path:
    """Heatmap of a classifier's confusion (row = true class, column = predicted class),
    rows normalised, with the counts written in the cells (e.g. keyword spotting).

    >>> import tempfile, os
    >>> p = plot_class_confusion(np.array([[3, 1], [0, 4]]), ["yes", "no"],
    ...                          os.path.join(tempfile.mkdtemp(), "c.png"))
    >>> p.suffix
    '.png'
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {len(labels)} labels")
    probs = np.nan_to_num(normalize_rows(matrix))
    size = 2.0 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                colour = "white" if probs[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(matrix.sum())
    acc = float(np.trace(matrix)) / total if total else math.nan
    ax.set_title(title or f"accuracy {acc:.3f} on {total} clips", fontsize=10)
    fig.colorbar(im, ax=ax, label="P(predicted | true)")
    return _save(fig, path)


def plot_hits_and_rejection(points: dict[str, tuple[float, float]], path: str | Path, title: str | None = None) -> Path:
    """A keyword spotter's trade on one test set, a point per model: keyword clips given their
    keyword (%) against non-keyword clips not taken for a keyword (%); a usable spotter sits in
    the upper right.

    >>> import tempfile, os
    >>> plot_hits_and_rejection({"scratch": (25.0, 77.0), "augmented": (50.0, 48.0)},
    ...                         os.path.join(tempfile.mkdtemp(), "t.png")).suffix
    '.png'
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    markers = "os^Dv<>pPX*h"
    for k, (name, (hits, rejected)) in enumerate(points.items()):
        ax.scatter([hits], [rejected], s=40, marker=markers[k % len(markers)], label=name)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("keywords right (%)")
    ax.set_ylabel("non-keywords rejected (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path, title)
