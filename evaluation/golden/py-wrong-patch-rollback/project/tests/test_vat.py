import unittest

from tax.vat import vat


class Vat(unittest.TestCase):
    def test_half_cent_rounds_to_even(self):
        self.assertEqual(vat(250, 19), 48)
        self.assertEqual(vat(350, 19), 66)
