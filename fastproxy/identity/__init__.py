"""Who is calling: JWT verification (JWS, JWK sets, claims), key sources and API keys.

The algorithms here know nothing of sockets or the request path; the policy stages that use them
live in :mod:`fastproxy.stages`.
"""
