"""The click shell: one module per noun, each a group that ``ccctl.cli`` attaches lazily."""
