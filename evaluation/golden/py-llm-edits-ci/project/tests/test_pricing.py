import unittest

from shop.pricing import apply_discount


class Pricing(unittest.TestCase):
    def test_ten_percent(self):
        self.assertEqual(apply_discount(2000, 10), 1800)
