//! The device-string parser (`crate::parse`) on any text: it never panics, what it accepts is
//! canonical (prints back as the same text and parses to the same device), and every error has
//! a message.
#![no_main]

use _core::error::Error;
use _core::parse::{parse_device, parse_device_type, parse_id};
use libfuzzer_sys::fuzz_target;

fn check_error(error: &Error, input: &str) {
    let message = error.to_string();
    assert!(!message.is_empty(), "empty message for {input:?}");
    let _ = error.kind();
    // Attaching a key must keep the kind and mention the key.
    let keyed = error.clone().for_key(input);
    assert_eq!(keyed.kind(), error.kind());
}

fuzz_target!(|data: &[u8]| {
    // Every input is used: invalid UTF-8 becomes U+FFFD, which the parser must reject cleanly.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    match parse_device(text) {
        Ok(device) => {
            let printed = device.to_string();
            assert_eq!(printed, text, "accepted a non-canonical device string");
            assert_eq!(parse_device(&printed), Ok(device));
        }
        Err(error) => check_error(&error, text),
    }
    match parse_device_type(text) {
        Ok(kind) => assert_eq!(kind.as_str(), text),
        Err(error) => check_error(&error, text),
    }
    match parse_id(text) {
        Ok(id) => assert_eq!(id.to_string(), text, "accepted a non-canonical id"),
        Err(error) => check_error(&error, text),
    }
    // Every prefix/suffix split at a ':' the way a caller might build the string.
    if let Some((kind, id)) = text.split_once(':') {
        let both = (parse_device_type(kind), parse_id(id));
        if let (Ok(kind), Ok(id)) = both {
            assert_eq!(
                parse_device(text),
                Ok(_core::device::Device::new(kind, Some(id)))
            );
        }
    }
});
