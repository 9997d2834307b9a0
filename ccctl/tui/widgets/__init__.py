"""The dashboard's widgets: they display what the app hands them and post what the operator does."""
