//! Parsing device strings: `<type>` or `<type>:<id>`.
//!
//! The type must match a value exactly (as Haystack). The id follows torch's grammar
//! (`c10/core/Device.cpp`): `0` or `[1-9][0-9]*`, ASCII digits only, no sign, no whitespace,
//! where Haystack runs Python's `int()` and so accepts `" 1"`, `"+2"`, `"1_0"` and `"01"`.

use crate::device::{Device, DeviceType};
use crate::error::{Error, Hint, Result};

/// Exact, case-sensitive match on a device type value.
pub fn parse_device_type(text: &str) -> Result<DeviceType> {
    match text {
        "cpu" => Ok(DeviceType::Cpu),
        "cuda" => Ok(DeviceType::Gpu),
        "disk" => Ok(DeviceType::Disk),
        "mps" => Ok(DeviceType::Mps),
        "xpu" => Ok(DeviceType::Xpu),
        "meta" => Ok(DeviceType::Meta),
        _ => Err(Error::UnknownDeviceType {
            text: text.to_owned(),
            hint: Hint(suggest(text)),
        }),
    }
}

/// A likely meant value for an unknown type string: `gpu` means `cuda`, and case is forgiven.
fn suggest(text: &str) -> Option<&'static str> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "gpu" {
        return Some("cuda");
    }
    DeviceType::ALL
        .iter()
        .map(|t| t.as_str())
        .find(|value| *value == lower)
}

/// Parses a device index by torch's grammar.
pub fn parse_id(part: &str) -> Result<u64> {
    let bytes = part.as_bytes();
    let well_formed = match bytes {
        [] => false,
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !well_formed {
        if let Some(magnitude) = negative(part) {
            return Err(Error::NegativeId {
                id: format!("-{magnitude}"),
            });
        }
        return Err(Error::BadId {
            part: part.to_owned(),
        });
    }
    part.parse::<u64>().map_err(|_| Error::IdTooLarge {
        part: part.to_owned(),
    })
}

/// The digits of a negative decimal number (`-1`, `-01`), without leading zeros; `-0` is
/// no negative number (and not torch's grammar either).
fn negative(part: &str) -> Option<&str> {
    let digits = part.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.trim_start_matches('0');
    (!magnitude.is_empty()).then_some(magnitude)
}

/// Parses `<type>` or `<type>:<id>`.
pub fn parse_device(text: &str) -> Result<Device> {
    let mut parts = text.splitn(3, ':');
    let kind_part = parts.next().unwrap_or_default();
    let id_part = parts.next();
    if parts.next().is_some() {
        return Err(Error::TooManyColons {
            text: text.to_owned(),
        });
    }
    // Haystack parses the id, then the type, then checks the id's sign; keeping the order
    // keeps the messages the same.
    let id = match id_part.map(parse_id).transpose() {
        Err(negative @ Error::NegativeId { .. }) => {
            parse_device_type(kind_part)?;
            return Err(negative);
        }
        id => id?,
    };
    Ok(Device::new(parse_device_type(kind_part)?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type_with_and_without_id() {
        for kind in DeviceType::ALL {
            assert_eq!(parse_device(kind.as_str()), Ok(Device::new(kind, None)));
            let with_id = format!("{kind}:7");
            assert_eq!(parse_device(&with_id), Ok(Device::new(kind, Some(7))));
        }
        assert_eq!(parse_device("cuda:0"), Ok(Device::gpu(0)));
        assert_eq!(parse_device("cuda:120"), Ok(Device::gpu(120)));
    }

    #[test]
    fn rejects_what_torch_rejects() {
        for bad in [
            "cuda: 1", "cuda:+2", "cuda:1_0", "cuda:01", "cuda:", "cuda:-0", "cuda:١", "cuda:1 ",
        ] {
            let part = bad.split_once(':').unwrap().1;
            assert_eq!(
                parse_device(bad),
                Err(Error::BadId {
                    part: part.to_owned()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn messages_quote_the_text() {
        let msg = |text: &str| parse_device(text).unwrap_err().to_string();
        assert_eq!(msg("cuda: 1"), "Device id must be an integer, got ' 1'");
        assert_eq!(msg(":"), "Device id must be an integer, got ''");
        assert_eq!(msg("tpu"), "Unknown device type string 'tpu'");
        let long = format!("cuda:{}", "1x".repeat(5_000_000));
        assert!(msg(&long).len() < 150, "{}", msg(&long));
    }

    #[test]
    fn negative_ids_as_haystack() {
        let msg = |text: &str| parse_device(text).unwrap_err().to_string();
        assert_eq!(msg("cuda:-1"), "Device id must be >= 0, got -1");
        assert_eq!(msg("cpu:-007"), "Device id must be >= 0, got -7");
        // The type is checked before the sign, as Haystack does.
        assert_eq!(
            msg("gpu:-1"),
            "Unknown device type string 'gpu'; did you mean 'cuda'?"
        );
        assert!(matches!(parse_device("cuda:-0"), Err(Error::BadId { .. })));
        assert!(matches!(parse_device("cuda:--1"), Err(Error::BadId { .. })));
    }

    #[test]
    fn too_many_colons_is_named() {
        let err = parse_device("cuda:0:1").unwrap_err();
        assert!(err.to_string().contains("more than one ':'"), "{err}");
    }

    #[test]
    fn huge_id_is_a_clear_error() {
        let err = parse_device("cuda:99999999999999999999999").unwrap_err();
        assert!(matches!(err, Error::IdTooLarge { .. }));
        assert_eq!(
            parse_device("cuda:18446744073709551615"),
            Ok(Device::gpu(u64::MAX))
        );
    }

    #[test]
    fn unknown_type_has_a_hint() {
        let msg = parse_device_type("gpu").unwrap_err().to_string();
        assert_eq!(
            msg,
            "Unknown device type string 'gpu'; did you mean 'cuda'?"
        );
        let msg = parse_device_type("CPU").unwrap_err().to_string();
        assert_eq!(msg, "Unknown device type string 'CPU'; did you mean 'cpu'?");
        let msg = parse_device_type("tpu").unwrap_err().to_string();
        assert_eq!(msg, "Unknown device type string 'tpu'");
    }

    #[test]
    fn bad_id_is_reported_before_bad_type() {
        assert_eq!(
            parse_device("gpu:x"),
            Err(Error::BadId { part: "x".into() })
        );
    }
}
