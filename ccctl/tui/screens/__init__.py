"""The dashboard's screens: the main view, help, confirmation, the map."""
