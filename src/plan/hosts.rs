//! A plan over several hosts (`2x8xH100`): which modules each host holds, and per host the
//! map of those modules in that host's own device names (`cuda:0`..`cuda:7` on every host),
//! since a process on host 1 calls its GPUs 0..7, not 8..15. This is for engines that load one
//! pipeline stage per host; no single `from_pretrained` call loads the whole map.

use std::fmt::Write as _;

use super::error::PlanError;
use super::report::Plan;
use crate::device::{Device, DeviceType};
use crate::lookup::{compact, NameGroup};
use crate::map::DeviceMap;
use crate::units::human_bytes;

/// What one host holds.
#[derive(Clone, Debug)]
pub struct Host {
    pub index: usize,
    /// Its GPUs as the plan names them (`cuda:8`..`cuda:15` for host 1 of 8 GPUs each).
    pub devices: Vec<Device>,
    /// The plan's entries on this host, in map order, with devices in the host's own names.
    pub map: DeviceMap,
    /// Weights and KV cache placed on its devices.
    pub bytes: u64,
    /// The map's keys grouped for people (`model.layers.{0..29}`).
    pub modules: Vec<NameGroup>,
}

/// The host of `device` with `per_host` GPUs each, and the device's name on that host. What is
/// not a GPU (the CPU and disk budgets, which hold offloaded blocks) belongs to host 0, whose
/// first GPU runs offloaded blocks; `meta` (left over) belongs to no host.
fn host_of(device: Device, per_host: u64) -> Option<(usize, Device)> {
    match (device.kind, device.id) {
        (DeviceType::Gpu, Some(id)) => Some(((id / per_host) as usize, Device::gpu(id % per_host))),
        (DeviceType::Meta, _) => None,
        _ => Some((0, device)),
    }
}

/// Splits `plan` over hosts of `per_host` GPUs each: GPU `i` is GPU `i % per_host` of host
/// `i / per_host`. Every host with a budget is listed, holding something or not.
pub fn hosts(plan: &Plan, per_host: u64) -> Result<Vec<Host>, PlanError> {
    if per_host == 0 {
        return Err(PlanError::ZeroGpusPerHost);
    }
    let count = plan
        .devices
        .iter()
        .filter_map(|u| host_of(u.device, per_host))
        .map(|(h, _)| h + 1)
        .max()
        .unwrap_or(1);
    let mut hosts: Vec<Host> = (0..count)
        .map(|index| Host {
            index,
            devices: Vec::new(),
            map: DeviceMap::new(),
            bytes: 0,
            modules: Vec::new(),
        })
        .collect();
    for used in &plan.devices {
        if let Some((h, _)) = host_of(used.device, per_host) {
            hosts[h].bytes += used.bytes + used.cache;
            if used.device.kind == DeviceType::Gpu {
                hosts[h].devices.push(used.device);
            }
        }
    }
    let mut keys: Vec<Vec<&str>> = vec![Vec::new(); count];
    for (name, device) in plan.map.iter() {
        if let Some((h, local)) = host_of(device, per_host) {
            if let Some(host) = hosts.get_mut(h) {
                host.map.insert(name, local);
                keys[h].push(name);
            }
        }
    }
    for (host, names) in hosts.iter_mut().zip(keys) {
        host.modules = compact(&names);
    }
    Ok(hosts)
}

/// `cuda:0..cuda:7`, `cuda:3`, or `no GPU`.
fn range(devices: &[Device]) -> String {
    match (devices.first(), devices.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}..{last}"),
        (Some(only), _) => only.to_string(),
        _ => "no GPU".to_owned(),
    }
}

/// One line per host: its bytes and what it holds; then how each host names its GPUs and how
/// the maps are meant to be used.
pub fn hosts_text(hosts: &[Host], per_host: u64) -> String {
    let mut out = String::new();
    let mut renamed = Vec::new();
    for host in hosts {
        let held: Vec<&str> = host.modules.iter().map(|g| g.pattern.as_str()).collect();
        let held = if held.is_empty() {
            "nothing".to_owned()
        } else {
            held.join(", ")
        };
        let _ = writeln!(
            out,
            "host {} ({}): {held}",
            host.index,
            human_bytes(host.bytes)
        );
        let local: Vec<Device> = host
            .devices
            .iter()
            .filter_map(|&d| host_of(d, per_host).map(|(_, local)| local))
            .collect();
        if local != host.devices {
            renamed.push(format!(
                "host {}'s are the plan's {}",
                host.index,
                range(&host.devices)
            ));
        }
    }
    let own = (0..per_host.min(1 << 16))
        .map(Device::gpu)
        .collect::<Vec<_>>();
    let _ = write!(out, "each host's map names its own GPUs {}", range(&own));
    if !renamed.is_empty() {
        let _ = write!(out, " ({})", renamed.join(", "));
    }
    out.push_str(
        ": it is for an engine that loads one stage per host, not a from_pretrained map of the \
         whole model",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, Budgets, Model, Strategy};

    #[test]
    fn each_host_names_its_own_gpus() {
        let sizes = (0..8)
            .map(|i| (format!("model.layers.{i}.w"), 10))
            .chain([("lm_head.weight".to_owned(), 1)])
            .collect();
        let model = Model {
            sizes,
            ..Model::default()
        };
        let budgets = Budgets::new((0..4).map(|i| (Device::gpu(i), 30)).collect()).unwrap();
        let planned = plan(&model, &budgets, Strategy::Sequential).unwrap();
        let hosts = hosts(&planned, 2).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].devices, [Device::gpu(2), Device::gpu(3)]);
        let second: Vec<(&str, Device)> = hosts[1].map.iter().collect();
        assert!(!second.is_empty());
        assert!(second
            .iter()
            .all(|(_, d)| *d == Device::gpu(0) || *d == Device::gpu(1)));
        assert_eq!(
            hosts.iter().map(|h| h.map.len()).sum::<usize>(),
            planned.map.len()
        );
        assert_eq!(hosts.iter().map(|h| h.bytes).sum::<u64>(), 81);
        let text = hosts_text(&hosts, 2);
        assert!(
            text.starts_with("host 0 (60 B): model.layers.{0..5}\nhost 1 (21 B): "),
            "{text}"
        );
        // Global cuda:2 is host 1's own cuda:0.
        assert_eq!(planned.map.get("model.layers.6"), Some(Device::gpu(2)));
        assert_eq!(hosts[1].map.get("model.layers.6"), Some(Device::gpu(0)));
        assert!(
            text.contains("own GPUs cuda:0..cuda:1 (host 1's are the plan's cuda:2..cuda:3)"),
            "{text}"
        );
        assert!(text.contains("model.layers.{"), "{text}");
        assert_eq!(
            super::hosts(&planned, 0).unwrap_err(),
            PlanError::ZeroGpusPerHost
        );
    }
}
