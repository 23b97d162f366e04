"""Model definitions and wrappers (generators, encoders, the bridge, attribute models)."""
