"""The Textual dashboard shell (not built yet: no issue asks for it so far).

Kept as a package so the import-linter contract can name it; the core never imports it.
"""
