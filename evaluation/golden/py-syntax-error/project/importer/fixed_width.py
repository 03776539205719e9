"""Parse the vendor's fixed-width export."""


def parse_line(line):
    return {
        "sku": line[0:8].strip(),
        "qty": int(line[8:14]),
        "price": int(line[14:24]) / 100
    "warehouse": line[24:28].strip(),
    }
