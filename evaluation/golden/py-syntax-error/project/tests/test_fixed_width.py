import unittest

from importer.fixed_width import parse_line


class FixedWidth(unittest.TestCase):
    def test_line(self):
        row = parse_line("AB-1234 0000120000000199WH01")
        self.assertEqual(row, {"sku": "AB-1234", "qty": 12, "price": 1.99, "warehouse": "WH01"})
