"""Custody: evidence that holds against an attacker who can write to the buckets but cannot sign.

Every evidence document a signing function writes (the manifest, a late manifest part, the summary, the report, an
export record, a custody-ledger entry) is named by a signed link of the incident's chain,
`incidents/<id>/chain/<seq>.json`, in the spirit of CloudTrail's digest files:

- a link names one object version and its sha256, and the digest (sha256) of the previous link and its signature,
  so inserting, dropping or reordering a link or a document is detected;
- the link's bytes are signed with an asymmetric KMS key (ECDSA P-256 over their SHA-256 digest);
- the signature gets an RFC 3161 token from a time-stamping authority (imprint: sha256 of the signature).

Readers (verify, dissect, report, export, finalize, the incident API, MCP) read only the versions the chain names.
`bundle` exports the chain with its documents for a verification without AWS, by this code or by openssl.
"""
