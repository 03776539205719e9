def apply_discount(total_cents, percent):
    return total_cents - total_cents * percent // 10
