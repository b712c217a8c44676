"""Generated from proto/spcs/v1 by proto/generate.py. Do not edit."""
