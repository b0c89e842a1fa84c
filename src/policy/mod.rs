//! Replication policy: parse, validate, obligations, compliance. Pure: no IO.
