//! Fuzz target `backup_header`: see `cardvault_fuzz::parsers` (fuzz/src/parsers.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::parsers::fuzz_backup_header(data));
