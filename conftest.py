"""mks-drill: the stack fixtures and drill settings come from the fixtures package's plugins."""

pytest_plugins = ["fixtures.stack.plugin", "fixtures.engine.plugin", "gate.pytest_plugin",
                  "reports.pytest_plugin"]
