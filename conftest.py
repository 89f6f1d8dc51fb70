# the kit plugin authors use (plugin_site), as a plugin's own top-level conftest.py loads it
pytest_plugins = ["aipflow.testing"]
