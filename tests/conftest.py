"""Suite-wide test settings."""

from hypothesis import settings

# No per-example deadline: CI machines are shared and loaded, and speed is
# measured in bench/, never asserted in tests. Each test's own @settings
# (max_examples, health checks) inherits this.
settings.register_profile("tsgate", deadline=None)
settings.load_profile("tsgate")
