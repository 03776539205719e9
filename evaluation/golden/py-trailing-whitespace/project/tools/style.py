"""The project's whitespace rules (run in CI and by the pre-commit hook): no tabs, no trailing
blanks, one newline at the end. ``--fix`` rewrites the files in place."""
import sys
from pathlib import Path

fix = "--fix" in sys.argv
bad = 0
for path in sorted(Path(".").rglob("*.py")):
    text = path.read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if line != line.rstrip():
            print(f"{path}:{number}:{len(line.rstrip()) + 1}: W291 trailing whitespace")
            bad += 1
        if "\t" in line:
            print(f"{path}:{number}:{line.index(chr(9)) + 1}: W191 indentation contains tabs")
            bad += 1
    if fix:
        path.write_text("\n".join(l.rstrip().replace("\t", "    ") for l in lines) + "\n")
if bad and not fix:
    print(f"Found {bad} errors.")
    sys.exit(1)
print("fixed" if fix else "All checks passed!")
