# Registers the harness plugin for runs from a checkout. The name matches the pytest11 entry
# point, so an installed harness is not registered twice.
pytest_plugins = ["harness.pytest.plugin"]
