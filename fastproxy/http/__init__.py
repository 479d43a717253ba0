"""HTTP/1.1 on both sides of the proxy, kept free of sockets (sans-I/O)."""
