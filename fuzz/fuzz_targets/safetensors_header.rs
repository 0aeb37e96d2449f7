//! Any bytes as a safetensors header (and any data-section length): the parser must return
//! tensors or an error, never panic, and what it returns must be consistent.
//!
//! Run: `cargo +nightly fuzz run safetensors_header` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first 8 bytes choose the data-section length, as the file's size would.
    let (len_bytes, header) = input.split_at(input.len().min(8));
    let mut padded = [0u8; 8];
    padded[..len_bytes.len()].copy_from_slice(len_bytes);
    let data_len = u64::from_le_bytes(padded) % (1 << 40);
    if let Ok(parsed) = _core::checkpoint::parse_header("fuzz.safetensors", header, data_len) {
        let total: u128 = parsed.iter().map(|(_, t)| t.bytes as u128).sum();
        assert!(
            total <= data_len as u128,
            "tensors claim more bytes than the data section"
        );
    }
});
