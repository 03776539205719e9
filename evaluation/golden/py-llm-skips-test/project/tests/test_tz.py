import unittest
from datetime import datetime, timezone

from calendarx.tz import to_utc


class Zones(unittest.TestCase):
    def test_berlin_summer_time(self):
        local = datetime(2024, 7, 1, 12, 0)
        self.assertEqual(to_utc(local, "Europe/Berlin"), datetime(2024, 7, 1, 10, 0, tzinfo=timezone.utc))
