import csv
import os
import sys
from datetime import date


def monthly_rows(path):
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if date.fromisoformat(row["day"]).day == 1:
                yield row
