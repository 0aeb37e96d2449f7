//! Haystack's own objects, recognised by value. A program moving to devicemap may still hold
//! Haystack's `Device`, `DeviceMap` or `ComponentDevice`; each binding file reads the one it
//! takes (`device.rs`, `map.rs`, `component.rs`, `convert.rs` for maps). This file only says
//! which class an object is, and uses no other binding file, so they can all use it.

use pyo3::prelude::*;

/// A class of `haystack.utils.device`. A program moving to devicemap may still hold Haystack's
/// objects; devicemap reads them by value. They are recognised by their type's module and
/// name, so haystack is never imported here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Haystack {
    DeviceType,
    Device,
    DeviceMap,
    ComponentDevice,
}

/// Which of Haystack's classes `value` is an instance of (exactly), if any.
pub fn haystack_class(value: &Bound<'_, PyAny>) -> Option<Haystack> {
    let ty = value.get_type();
    let module = ty.module().ok()?;
    if module.to_str().ok()? != "haystack.utils.device" {
        return None;
    }
    match ty.name().ok()?.to_str().ok()? {
        "DeviceType" => Some(Haystack::DeviceType),
        "Device" => Some(Haystack::Device),
        "DeviceMap" => Some(Haystack::DeviceMap),
        "ComponentDevice" => Some(Haystack::ComponentDevice),
        _ => None,
    }
}
