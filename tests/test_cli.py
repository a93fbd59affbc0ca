import subprocess
import sys

from samstudy.cli import VERBS


def test_help_lists_one_verb_per_stage():
    out = subprocess.run(
        [sys.executable, "-m", "samstudy", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for verb in ("ingest", "preprocess", "embed", "prompts", "train", "infer", "nnunet", "evaluate", "report"):
        assert verb in out and verb in VERBS


def test_every_rule_calls_a_samstudy_verb():
    import re
    from pathlib import Path

    shells = re.findall(r'"\{params\.cli\} (\w+)', "".join(p.read_text() for p in Path("workflow/rules").glob("*.smk")))
    assert shells and set(shells) <= set(VERBS)
