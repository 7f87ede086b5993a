"""What the operator sees and runs: the node subcommands, the admin socket (status,
diagnostics, ping), metrics, smoke.
"""
