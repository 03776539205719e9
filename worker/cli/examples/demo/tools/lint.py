"""A tiny style checker (flake8-like output): trailing whitespace. ``--fix`` removes it."""

import sys
from pathlib import Path

FILES = ["calc.py", "test_calc.py"]
fix = "--fix" in sys.argv
problems = 0
for name in FILES:
    path = Path(name)
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        body = line.rstrip("\n")
        if body != body.rstrip():
            problems += 1
            print(f"{name}:{number}:{len(body.rstrip()) + 1}: W291 [*] Trailing whitespace")
    if fix:
        path.write_text("".join(line.rstrip() + "\n" for line in lines))
if problems and not fix:
    print(f"Found {problems} error{'s' if problems > 1 else ''}.")
    print("[*] fixable with `python3 tools/lint.py --fix`")
    sys.exit(1)
print("fixed" if fix else "lint ok")
