"""The signed-objects kernel every node needs: objects and their codec, signatures and
their checks, the epoch fence, rejections, the shared vocabulary (``Role``), the
authority key and the control API's TLS pinning.  Imports no other part of control/."""
