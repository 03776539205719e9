"""Route modules, one per concern. Seed v2 and v3 paths that mean the same thing share a handler."""

V2 = "/api/meta/v2"
V3 = "/api/meta/v3"
V4 = "/api/meta/v4"
