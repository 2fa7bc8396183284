"""hetc's version, importable by every stage without importing the top-level package's API."""
__version__ = "0.1.0"
