#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2pds_fuzz::dag_cbor(data));
