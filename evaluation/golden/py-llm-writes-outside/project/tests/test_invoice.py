import unittest

from billing.invoice import invoice_total


class Invoice(unittest.TestCase):
    def test_total_of_decimal_prices(self):
        self.assertEqual(invoice_total([(19.99, 3), (0.29, 1)]), 6026)
