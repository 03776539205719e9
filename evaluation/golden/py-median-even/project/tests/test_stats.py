import unittest

from latency.stats import mean, median, p95


class Stats(unittest.TestCase):
    def test_mean(self):
        self.assertEqual(mean([1, 2, 3, 4]), 2.5)

    def test_median_of_odd_count(self):
        self.assertEqual(median([5, 1, 3]), 3)

    def test_median_of_even_count(self):
        self.assertEqual(median([4, 1, 3, 2]), 2.5)

    def test_p95(self):
        self.assertEqual(p95(list(range(1, 101))), 95)


if __name__ == "__main__":
    unittest.main()
