"""Every side effect of Meta-Builder: subprocesses, git, database writes."""
