"""A node's configuration: ``node_config`` reads the TOML file and the environment; one
module per table that needs its own parser.
"""
