import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "libs"))

from money import to_cents


def invoice_total(lines):
    return sum(to_cents(price) * qty for price, qty in lines)
