"""The configuration vocabulary: value types (values.py) and the one settings table (table.py) that the INI
parser (config.py), the INI-to-UAPI renderer (render.py), the UAPI set/get (uapi/) and `wgpy show` iterate."""
