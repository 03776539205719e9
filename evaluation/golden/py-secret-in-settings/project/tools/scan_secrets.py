"""Pre-merge secret scan (the same rules as the pre-commit hook)."""
import re
import sys
from pathlib import Path

RULES = {"AWS Access Key": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "Private Key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----"}
found = 0
for path in sorted(p for p in Path(".").rglob("*") if p.is_file() and ".git" not in p.parts):
    for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
        for rule, pattern in RULES.items():
            if re.search(pattern, line):
                print(f"ERROR: Potential secrets about to be committed to git repo!")
                print(f"Secret Type: {rule}")
                print(f"Location:    {path}:{number}")
                found += 1
sys.exit(1 if found else 0)
