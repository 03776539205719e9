import unittest

from shipping.rates import shipping_cents


class Rates(unittest.TestCase):
    def test_free_from_fifty_euros(self):
        self.assertEqual(shipping_cents(5000, 1), 0)

    def test_heavy_parcel(self):
        self.assertEqual(shipping_cents(1000, 5), 810)
