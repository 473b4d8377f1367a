"""A small async blog: the example app that pytest-noplusone's main job tests."""
