"""microseg: behavioral events in, sessions, features, segments and scores out."""

import warnings

__version__ = "0.1.0"

# GX imports PySpark (installed for the Spark target) whenever it loads, and PySpark warns on
# every import that it does not fully support pandas 3 (microseg hands PySpark no pandas data).
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)
