from tests.core.conftest import project  # noqa: F401  (the same project fixture as the core CLI tests)
