"""The README's generated blocks stay true to the code, and its set-up commands
are the ones .ci/run runs."""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))

import update_results  # noqa: E402


def _block(name: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert m, f"README.md has no {name} block"
    return m.group(1)


def test_supported_ops_block_is_current():
    # regenerate with: python bench/update_results.py --only supported-ops
    assert _block("supported-ops") == update_results.supported_ops_block()


def test_every_generated_block_has_markers():
    for name, (_, files) in update_results.BLOCKS.items():
        if "README.md" in files:
            _block(name)


def test_setup_commands_match_ci():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read().splitlines()
    for var in ("TEST_CMD", "DEMO_CMD"):
        cmd = re.search(rf"^{var}='(.*)'$", ci, re.M).group(1)
        assert cmd in readme, cmd
