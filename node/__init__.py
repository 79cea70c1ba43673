"""The processes people run: the command line, and later the gateway and the agents."""
