import unittest

import calc
import calc_table


class CalcTest(unittest.TestCase):
    def test_add(self) -> None:
        self.assertEqual(calc.add(2, 3), 5)

    def test_mean(self) -> None:
        self.assertEqual(calc.mean([1, 2, 3, 4]), 2.5)

    def test_generated_squares(self) -> None:
        self.assertEqual(calc_table.SQUARES[12], 144)


if __name__ == "__main__":
    unittest.main()
