"""Turn survey microdata + a YAML codebook into AlignSurvey task files.

  python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018

Writes task4/{individual,group}, task3/{individual,group}, task1, task2 ({train,test}.json),
foundation_quan/train.json and conversion_report.json (see surveylm_jax/data/survey_converter.py).
Every file written is read back with the project's readers, so what comes out is known to parse.
The report goes to stdout as JSON; a one-line summary of the split and each warning (an
unrepresentative or empty test side, say) go to stderr, one line each.
A codebook in a prompt language registered by a researcher's own module (README, "Extending")
needs that module imported first: --extra_modules my_pkg.lang (dotted names or .py paths).
--split "{kinds: [wave], wave: {from_year: 2008}}" lays split fields over the codebook's own (fields
for kinds no longer listed fall away); --outputs task4,foundation_quan writes only those.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import yaml

from surveylm_jax import extensions
from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data.codebook import load_codebook, parse_keep
from surveylm_jax.data.errors import DataError
from surveylm_jax.data.survey_converter import convert_survey, write_conversion


def with_keep(codebook, specs):
  """The codebook with `--keep COLUMN=CODE,...` applied over its own keep."""
  keep = dict(codebook.keep)
  for spec in specs:
    column, sep, codes = spec.partition("=")
    if not sep or not column or not codes:
      raise DataError(f"--keep {spec!r}: expected COLUMN=CODE[,CODE...]", path=codebook.path,
                      field="keep", reason="bad_argument")
    keep.update(parse_keep(codebook.path, {column: [_number(c) for c in codes.split(",")]}))
  return dataclasses.replace(codebook, keep=tuple(keep.items()))


def overrides(args) -> dict:
  """Codebook fields given on the command line (--split, --outputs)."""
  result = {}
  if args.split is not None:
    try:
      split = yaml.safe_load(args.split)
    except yaml.YAMLError as e:
      raise DataError(f"--split {args.split!r} is not YAML: {e}", path=args.codebook, field="split",
                      reason="bad_argument") from None
    if not isinstance(split, dict):
      raise DataError(f"--split {args.split!r}: expected a mapping such as \"{{kinds: [wave]}}\"",
                      path=args.codebook, field="split", reason="bad_argument")
    result["split"] = split
  if args.outputs is not None:
    result["outputs"] = [o.strip() for o in args.outputs.split(",") if o.strip()]
  return result


def _number(text: str):
  try:
    return float(text) if "." in text else int(text)
  except ValueError:
    return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--codebook", required=True, help="YAML codebook (see configs/surveys/)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--lenient", action="store_true",
                      help="count and skip cells with codes outside the codebook instead of failing")
  parser.add_argument("--keep", action="append", default=[], metavar="COLUMN=CODE[,CODE...]",
                      help="convert only rows whose COLUMN holds one of the codes (replaces the "
                           "codebook's keep for that column); repeatable")
  parser.add_argument("--split", default=None, metavar="YAML",
                      help="split fields laid over the codebook's `split:` block, as a YAML mapping, e.g. "
                           "\"{kinds: [respondent, question], question_fraction: 0.2}\"")
  parser.add_argument("--outputs", default=None, metavar="OUTPUT[,OUTPUT...]",
                      help="write only these outputs (replaces the codebook's `outputs`)")
  parser.add_argument("--no-verify", action="store_true", help="skip reading the written files back")
  parser.add_argument("--extra_modules", default="",
                      help="modules to import first (dotted names or .py paths, comma separated), "
                           "e.g. one that registers a prompt language")
  args = parser.parse_args(argv)
  try:
    extensions.import_modules(args.extra_modules)
    codebook = load_codebook(args.codebook, overrides(args))
    if args.keep:
      codebook = with_keep(codebook, args.keep)
    conversion = convert_survey(codebook, lenient=args.lenient)
    paths = write_conversion(conversion, args.out)
    if not args.no_verify:
      for path in paths:
        written = conversion.files[path[len(args.out):].lstrip("/")]
        # A file may be empty on purpose (no group reaches min_group_size, no task-1 field to
        # infer); the count check below still catches a file that reads back short.
        records = read_alignsurvey(path, allow_empty=not written)
        if len(records) != len(written):
          raise DataError("read back a different number of records than written", path=path)
  except (DataError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(conversion.report, indent=1, ensure_ascii=False))
  print(split_summary(conversion.report), file=sys.stderr)
  for warning in conversion.report["warnings"]:
    print(f"warning: {warning}", file=sys.stderr)
  return 0


def split_summary(report: dict) -> str:
  split = report["split"]
  sides = ", ".join(f"{side} {s['persons']} persons / {s['rows']} rows / {s['cells']} answers"
                    for side, s in split["sides"].items())
  line = (f"split {split['kinds']}: {sides}; achieved test fraction {split['achieved_test_fraction']} "
          f"of {split['persons']} persons in {split['strata']} strata")
  if split["cells_excluded_by_mixing_kinds"]:
    line += f"; {split['cells_excluded_by_mixing_kinds']} answers excluded by mixing kinds"
  return line


if __name__ == "__main__":
  sys.exit(main())
