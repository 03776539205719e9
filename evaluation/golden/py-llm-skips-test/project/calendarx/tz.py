from datetime import timedelta, timezone

OFFSETS = {"Europe/Berlin": 1, "Europe/London": 0}


def to_utc(local, zone):
    return (local - timedelta(hours=OFFSETS[zone])).replace(tzinfo=timezone.utc)
