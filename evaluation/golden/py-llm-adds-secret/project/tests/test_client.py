import unittest

from weather.client import api_key


class Client(unittest.TestCase):
    def test_key_is_configured(self):
        self.assertTrue(api_key().startswith("sk-"))
