"""pytest's shared fixtures and hooks. Shared helper functions live in tests/helpers/."""
