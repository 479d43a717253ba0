"""The policy stages a route runs, in order: IP rules, authentication, authorization.

Each module holds one stage: a class compiled once per configuration (in the worker, where its
caches live) whose ``check`` implements :class:`fastproxy.policy.Stage`. The algorithms they use
(JWT verification, key sources, API key digests) live in :mod:`fastproxy.identity`.
"""
