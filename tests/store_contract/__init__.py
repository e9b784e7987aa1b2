"""The store contract suite: every Store implementation is held to the same tests."""
