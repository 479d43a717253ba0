"""fastproxy: a secure API access proxy — authenticate, authorize, limit, mask and audit every request."""

__version__ = "0.1.0"
