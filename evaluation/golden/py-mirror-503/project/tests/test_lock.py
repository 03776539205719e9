import unittest
from pathlib import Path


class LockFile(unittest.TestCase):
    def test_every_requirement_is_pinned(self):
        for line in Path("requirements.lock").read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                self.assertIn("==", line, line)


if __name__ == "__main__":
    unittest.main()
