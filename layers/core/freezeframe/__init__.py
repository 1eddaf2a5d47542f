"""freezeframe core: the shared layer of every function, the CLI and the agent."""

__version__ = "0.1.0"
