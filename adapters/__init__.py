"""Adapters to the outside: git workspaces and the LLM endpoint. No activities here; the activity,
service and worker layers use them."""
