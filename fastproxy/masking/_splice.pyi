# The C masker of fastproxy.masking.body (see fastproxy/masking/_splice.c); its reference is
# fastproxy.masking.body.mask_document.

from typing import final

from fastproxy.masking.paths import PathNode

@final
class Splicer:
    def __init__(self, tree: PathNode, replacement: bytes) -> None: ...
    def __call__(self, body: bytes, /) -> tuple[bytes, int]: ...
