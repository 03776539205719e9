FREE_FROM_CENTS = 5000


def shipping_cents(order_cents, weight_kg):
    if order_cents > FREE_FROM_CENTS:
        return 0
    return 450 + 120 * max(0, weight_kg - 2)
