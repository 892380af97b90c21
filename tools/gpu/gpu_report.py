#!/usr/bin/env python3
"""The GPU check's report for the docs, from the files a device run brought back.

``tools/gpu/gpu_check.sh`` on a GPU writes ``gpu_check.json`` (its table) and the recipes'
``train_log.txt`` files; a second CTC run with ``compile: False`` on the same device gives the
eager step beside the compiled one. This tool puts them in ``docs/gpu_check.{md,json}`` and
draws dev WER/CER against training time for both CTC runs (``docs/gpu_check_ctc.png``):

    python tools/gpu/gpu_report.py --check DIR --eager DIR --docs docs

``--check``: gpu_check.json, ctc_train_log.txt (optionally env.txt: nvidia-smi's lines);
``--eager``: eager_results.json and eager_train_log.txt (the recipe's results.json and
train_log.txt of the eager CTC run). Every figure is read from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import (  # noqa: E402
    dev_curve,
    markdown_table,
    plot_quality_vs_time,
    read_train_log,
)


def check_table_headers() -> list[str]:
    """The columns of tools/gpu/gpu_check.py's table, from that tool."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_gpu_check", ROOT / "tools" / "gpu" / "gpu_check.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.TABLE_HEADERS


def compiled_ctc_row(rows: list[dict]) -> dict:
    """The check's compiled CTC fine-tuning row, found by its stage and its ``compiled`` flag.

    >>> compiled_ctc_row([{"stage": "CTC fine-tuning", "compiled": False},
    ...                   {"stage": "CTC fine-tuning, --compile", "compiled": True}])["stage"]
    'CTC fine-tuning, --compile'
    >>> compiled_ctc_row([{"stage": "CTC fine-tuning", "compiled": False}])
    Traceback (most recent call last):
    ...
    ValueError: gpu_check.json has no compiled CTC row (stages: CTC fine-tuning); run gpu_check.sh --compare-compile
    """
    for row in rows:
        if row.get("stage", "").startswith("CTC") and row.get("compiled"):
            return row
    stages = ", ".join(r.get("stage", "?") for r in rows)
    raise ValueError(f"gpu_check.json has no compiled CTC row (stages: {stages}); "
                     "run gpu_check.sh --compare-compile")


def compile_rows(check: dict, eager: dict, compiled_curve, eager_curve, compiled_first10=None) -> list[dict]:
    """The compiled CTC run (from the check) and the eager one, side by side.

    >>> check = {"rows": [{"stage": "pretraining", "compiled": False},
    ...                   {"stage": "CTC fine-tuning", "compiled": True, "steady_audio_s_per_s": 600.0,
    ...                    "first_step_s": 50.0, "steps": 100, "train_s": 150.0,
    ...                    "result": "WER dev 99 / test 98, CER test 60"}]}
    >>> eager = {"test-clean": {"steady_audio_s_per_s": 500.0, "first_step_s": 1.0,
    ...          "first_10_steps_s": 2.0, "steps_trained": 900, "WER": 90.0, "CER": 45.0}}
    >>> rows = compile_rows(check, eager, [(150.0, 99.0, 60.0)], [(60.0, 95.0, 50.0)])
    >>> [r["steady speed-up"] for r in rows], rows[1]["best dev WER"]
    (['1.20x', '1.00x'], 95.0)
    """
    ctc = compiled_ctc_row(check["rows"])
    test = eager["test-clean"]
    base = test["steady_audio_s_per_s"]
    rows = []
    for name, first, first10, steady, steps, curve, result in (
        ("compiled (compile: auto then, dynamic shapes)", ctc["first_step_s"], compiled_first10,
         ctc["steady_audio_s_per_s"], ctc["steps"], compiled_curve, ctc["result"]),
        ("eager (compile: False)", test["first_step_s"], test.get("first_10_steps_s"), base,
         test["steps_trained"], eager_curve, f"WER test {test['WER']}, CER test {test['CER']}"),
    ):
        rows.append({"step": name, "first step s": first, "first 10 steps s": first10,
                     "audio s / s after 10 steps": steady, "steady speed-up": f"{steady / base:.2f}x",
                     "steps trained": steps, "best dev WER": min((w for _, w, _ in curve), default=None),
                     "result": result})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", type=Path, required=True)
    p.add_argument("--eager", type=Path, required=True)
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--note", default="", help="a sentence on how the runs were made, added to the report")
    args = p.parse_args(argv)

    check = json.loads((args.check / "gpu_check.json").read_text())
    eager = json.loads((args.eager / "eager_results.json").read_text())
    ctc_results = args.check / "ctc_results.json"  # the CTC recipe's own results.json, if brought back
    compiled_first10 = (json.loads(ctc_results.read_text())["test-clean"].get("first_10_steps_s")
                        if ctc_results.is_file() else None)
    compiled_curve = dev_curve(read_train_log(args.check / "ctc_train_log.txt"))
    eager_curve = dev_curve(read_train_log(args.eager / "eager_train_log.txt"))
    env = (args.check / "env.txt").read_text().strip() if (args.check / "env.txt").is_file() else ""

    args.docs.mkdir(parents=True, exist_ok=True)
    plot_quality_vs_time({"CTC, compiled": compiled_curve, "CTC, eager": eager_curve},
                         args.docs / "gpu_check_ctc.png", title=f"CTC on {check['device_name']}",
                         xlabel="training time (min, validation excluded)")
    table = markdown_table(check_table_headers(), [list(r.values()) for r in check["rows"]])
    rows = compile_rows(check, eager, compiled_curve, eager_curve, compiled_first10)
    compile_table = markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    text = (
        f"# GPU check\n\n{check['setup']}\n\n{table}\n\n"
        f"## Compiled against eager CTC step\n\n{args.note}\n\n{compile_table}\n\n"
        f"![dev WER and CER against training time](gpu_check_ctc.png)\n\n"
        + (f"## Device\n\n```\n{env}\n```\n" if env else "")
    )
    (args.docs / "gpu_check.md").write_text(text)
    (args.docs / "gpu_check.json").write_text(json.dumps(
        {"check": check, "eager_ctc": eager, "compile_comparison": rows, "note": args.note, "device": env},
        indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
