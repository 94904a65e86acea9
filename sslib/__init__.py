"""sslib: self-supervised visual representation learning (distribution ``sslib-vision``).

``__version__`` follows Semantic Versioning and is the package's metadata version (``CHANGELOG.md``).
"""

__version__ = "0.1.0"
