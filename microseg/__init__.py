"""microseg: behavioral events in, sessions, features, segments and scores out."""

__version__ = "0.1.0"
