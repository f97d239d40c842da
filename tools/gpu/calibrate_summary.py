#!/usr/bin/env python3
"""Prints, as Markdown, every `greta calibrate --json` output in a results folder
(calibrate-*.out): each rung's worst stage, its fraction of the tolerance and where, the
chosen one marked. Used by calibrate_checks.sh and ladder_study.sh.
Usage: calibrate_summary.py RESULTS_DIR"""
import glob
import json
import os
import sys


def main(r):
    for f in sorted(glob.glob(os.path.join(r, "calibrate-*.out"))):
        name = os.path.basename(f)
        text = open(f).read()
        if not text.lstrip().startswith("{"):
            # A step run without --json (its verdicts are on its stderr).
            print(f"\n{name}: text output, not --json (see its .err)")
            continue
        try:
            d = json.loads(text)
        except Exception as e:
            print(f"\n{name}: broken JSON ({e})")
            continue
        print(f"\n{name}: chosen {d['chosen']} in {d['seconds']:.0f} s, prompts {d['prompts']}")
        print("| policy | worst | of tolerance | where |\n|---|---|---|---|")
        for g in d["rungs"]:
            e = "not finite" if g["worst_error"] is None else f"{g['worst_error']:.3e}"
            fr = "" if g["worst_fraction"] is None else f"{g['worst_fraction']:.3f}"
            chosen = " (chosen)" if g["chosen"] else ""
            print(f"| {g['split_inputs']}{chosen} | {e} | {fr} | {g['worst_at']} |")


if __name__ == "__main__":
    main(sys.argv[1])
