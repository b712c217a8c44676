"""`spcs ctl`: the operator's command line over the services' own gRPC API (no back door)."""
