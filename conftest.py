"""mks-drill: the stack fixtures and drill settings come from the fixtures package's plugin."""

pytest_plugins = ["fixtures.plugin", "fixtures.drill_plugin", "gate.pytest_plugin", "reports.pytest_plugin"]
