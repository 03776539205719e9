"""Export the active customers as CSV for the CRM import."""
import csv
import json
import sys

customers = json.load(open("data/customers.json"))
writer = csv.writer(sys.stdout)
writer.writerow(["id", "name", "email"])
for c in customers:
    if c["active"]:
        writer.writerow([c["id"], c["name"], c["contact"]["email"]])
