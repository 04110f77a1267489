"""Turn survey microdata + a YAML codebook into AlignSurvey task files.

  python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018

Writes task4/{individual,group}, task3/{individual,group}, task1, task2 ({train,test}.json),
foundation_quan/train.json and conversion_report.json (see surveylm_jax/data/survey_converter.py).
Every file written is read back with the project's readers, so what comes out is known to parse.
"""
from __future__ import annotations

import argparse
import json
import sys

from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.errors import DataError
from surveylm_jax.data.survey_converter import convert_survey, write_conversion


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--codebook", required=True, help="YAML codebook (see configs/surveys/)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--lenient", action="store_true",
                      help="count and skip cells with codes outside the codebook instead of failing")
  parser.add_argument("--no-verify", action="store_true", help="skip reading the written files back")
  args = parser.parse_args(argv)
  try:
    conversion = convert_survey(load_codebook(args.codebook), lenient=args.lenient)
    paths = write_conversion(conversion, args.out)
    if not args.no_verify:
      for path in paths:
        records = read_alignsurvey(path)
        if len(records) != len(conversion.files[path[len(args.out):].lstrip("/")]):
          raise DataError("read back a different number of records than written", path=path)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(conversion.report, indent=1, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
