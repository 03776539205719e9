import unittest

from inventory.stock import reorder_level


class Stock(unittest.TestCase):
    def test_level(self):
        self.assertEqual(reorder_level(3, 4), 12)
