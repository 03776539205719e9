"""Pure rules of Meta-Builder: plans, run states, payloads. No Temporal, no I/O."""
