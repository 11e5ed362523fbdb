//! Fuzz target `terminal_workflows`: see `cardvault_fuzz::terminal`
//! (fuzz/src/terminal.rs) for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::terminal::fuzz_terminal(data));
