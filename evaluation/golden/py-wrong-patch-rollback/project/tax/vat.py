from decimal import ROUND_HALF_UP, Decimal


def vat(net_cents, rate_percent):
    return int((Decimal(net_cents) * Decimal(rate_percent) / 100).quantize(Decimal(1), ROUND_HALF_UP))
