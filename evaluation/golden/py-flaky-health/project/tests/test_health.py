import unittest

from svc.client import health


class Health(unittest.TestCase):
    def test_service_reports_ok(self):
        self.assertEqual(health()["status"], "ok")


if __name__ == "__main__":
    unittest.main()
