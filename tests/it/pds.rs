//! Test bed: the reference PDS and a PLC directory on loopback.
