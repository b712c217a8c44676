"""The migrations, oldest first (see the package's docstring)."""
