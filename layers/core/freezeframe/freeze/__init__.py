"""The freeze: a pure plan and named steps that lock an incident's window of segments and its node-state
documents, the hold that keeps locking what arrives after the
alert, the segment index, legal holds, consolidation, the Kubernetes context snapshot, the freeze's
attempts and terminal state, and the passes dissection makes while the hold is open.
"""
