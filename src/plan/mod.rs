//! Planning: where each tensor of a model goes, given its sizes and per-device budgets.
//!
//! 1. Names are split at dots into a module tree (first-appearance order).
//! 2. The tree is cut into *units*, the pieces placement never splits: a no-split block
//!    (`no_split` patterns, or by default the outermost numbered block `<prefix>.<N>`), else the
//!    tensors of one module together. Tied tensors join one unit (their storage counts once).
//! 3. Units, in order, go to contiguous ranges of accelerators, then the CPU, then disk:
//!    - `Sequential` fills accelerator 0, then 1, ... (accelerate's `infer_auto_device_map`);
//!    - `Balanced` keeps the same units on the accelerators as `Sequential` (the longest prefix
//!      that fits) and, among order-preserving contiguous assignments of them, minimises the
//!      largest share of an accelerator's budget: a binary search on that share, each step a
//!      greedy feasibility pass, so the result is optimal (to 2^-32 of a share), not greedy;
//!    - `BalancedLow0` gives accelerator 0 only what the others cannot hold, and balances the
//!      rest over the others.
//! 4. When anything spills, the accelerator that runs offloaded blocks (the first one, where
//!    the model's first block lies; accelerate's `dispatch_model` uses it as main device) keeps
//!    room for the largest spilled block: offloaded weights are copied there to run. The
//!    reserve and the spilled set depend on each other, so planning repeats until the reserve
//!    covers the largest spilled block. When the first block and that room fit no GPU, the
//!    first blocks may be offloaded instead, and with nothing on the GPUs the CPU runs the
//!    model (the tight-budget rule, in `place.rs`).
//! 5. The map is compacted: a module whose tensors all sit on one device is one entry
//!    (accelerate's `clean_device_map`).
//!
//! Where each step lives: `model.rs` (1, 2: tensors, units, ties), `cost.rs` (what a unit
//! needs on its device), `place.rs` (3, 4: the strategies and the reserve), `compact.rs` (5),
//! `report.rs` (accounting, verdict, notes, text), `budget.rs` (budgets, `max_memory` values,
//! the reserve of a machine's budgets, system memory), `module.rs` (sizes and ties of a torch
//! module's tensors), `validate.rs` (`tied` and `no_split` checked against the model),
//! `hosts.rs` (a plan split per host), `error.rs` (what planning refuses).

mod budget;
mod compact;
mod context;
mod conversion;
mod cost;
mod error;
mod hosts;
mod model;
mod module;
mod place;
mod report;
mod validate;

use crate::device::Device;
use crate::error::Result;

pub use budget::{
    bits_warning, budget_bytes, parse_budget_key, parse_size, size_in_bits, system_memory,
    BudgetValue, Budgets, Reserve, SystemMemory, DEFAULT_RESERVE,
};
pub use context::{workload, Context, Fit, Workload, MOST_TRIED};
pub use conversion::largest_conversion;
pub use cost::Cost;
pub use error::{BudgetProblem, PlanError, Shortfall};
pub use hosts::{hosts, hosts_text, Host};
pub use model::{Model, NoSplit};
pub use module::{module_sizes, ModuleTensor, Resize};
pub use place::Strategy;
pub use report::{DeviceUse, Placed, Plan, Verdict};

use model::{Tensors, Units};
use report::Planned;

/// Plans `model` onto `budgets`. Never fails for lack of room: what does not fit is listed in
/// `Plan::unplaced` and said by `Plan::verdict` (see [`Plan::check_fits`]).
pub fn plan(model: &Model, budgets: &Budgets, strategy: Strategy) -> Result<Plan> {
    plan_for(model, budgets, strategy, None)
}

/// Like [`plan`], for inference when `workload` is given: each decoder layer's KV cache is a
/// cost of the unit holding the layer, charged where the layer runs, and `activation` is kept
/// free on every device that runs layers.
pub fn plan_for(
    model: &Model,
    budgets: &Budgets,
    strategy: Strategy,
    workload: Option<&Workload>,
) -> Result<Plan> {
    let tensors = Tensors::new(model)?;
    if budgets.devices.is_empty() {
        return Err(PlanError::NoDevice.into());
    }
    if model.sizes.is_empty() {
        return Err(PlanError::NoTensors.into());
    }
    check_total(model)?;
    tensors.check_names()?;
    // A tied name is the model's when the sizes hold it (not only the ties' own additions).
    let sized = model.sizes.len();
    validate::check(model, |name| {
        tensors.position(name).is_some_and(|i| i < sized)
    })?;
    let units = Units::new(&tensors, model);
    let mut costs = units.costs();
    let context = match workload {
        Some(_) if !budgets.runs_layers() => {
            let names: Vec<String> = budgets.devices.iter().map(|(d, _)| d.to_string()).collect();
            return Err(PlanError::NoDeviceRunsLayers {
                devices: names.join(", "),
            }
            .into());
        }
        Some(workload) => {
            let (costs_with_cache, context) =
                with_cache(&tensors, &units, costs, workload, budgets, strategy)?;
            costs = costs_with_cache;
            Some(context)
        }
        None => None,
    };
    let devices = &budgets.devices;
    let anything = costs.iter().any(|c| c.total() > 0);
    if devices.iter().all(|&(_, b)| b == 0) && anything {
        return Err(PlanError::ZeroBudgets {
            devices: devices.iter().map(|&(d, _)| d).collect(),
        }
        .into());
    }
    let activation = workload.map_or(0, |w| w.activation);
    let placement = place::place(&costs, budgets, strategy, activation);
    let unit_device = units.devices(&placement.assigned, devices.len());
    let map = compact::compact(
        &units.tree,
        &units.list,
        &tensors.names,
        &unit_device,
        devices,
    );
    report::report(Planned {
        strategy,
        budgets,
        tensors: &tensors,
        units: &units,
        costs: &costs,
        placement: &placement,
        unit_device: &unit_device,
        map,
        context: workload
            .zip(context)
            .map(|(w, (list, per_layer, fit))| (w, list, per_layer, fit)),
    })
}

/// Refuses sizes that total more than `u64::MAX` bytes, so that no sum of a plan's weights
/// overflows (a cache is held to the same bound with them, by [`Fit::per_layer`]).
fn check_total(model: &Model) -> Result<()> {
    let total = model
        .sizes
        .iter()
        .try_fold(0u64, |sum, &(_, bytes)| sum.checked_add(bytes));
    if total.is_some() {
        return Ok(());
    }
    let (name, bytes) = model
        .sizes
        .iter()
        .max_by_key(|&&(_, bytes)| bytes)
        .map_or((String::new(), 0), |(name, bytes)| {
            (name.to_string(), *bytes)
        });
    Err(PlanError::ModelTooLarge {
        tensors: model.sizes.len(),
        largest: crate::error::quoted(&name),
        largest_bytes: bytes,
    }
    .into())
}

/// The decoder's layer list, each layer's cache, and what fitting needs.
type LayerCaches = (String, Vec<u64>, Fit);

/// The units' costs with each decoder layer's cache added, the layer list, each layer's cache
/// and what fitting needs.
fn with_cache(
    tensors: &Tensors<'_>,
    units: &Units<'_>,
    weights: Vec<Cost>,
    workload: &Workload,
    budgets: &Budgets,
    strategy: Strategy,
) -> Result<(Vec<Cost>, LayerCaches)> {
    let layout = &workload.layout;
    let (list, layer_unit) =
        context::match_layers(tensors, units, layout.layers.len(), layout.model_type)?;
    let slots = units.order_slots();
    let layer_slot = layer_unit.iter().map(|&u| slots[u]).collect();
    let fit = Fit::new(weights, layer_slot, workload, budgets, strategy);
    let per_layer =
        fit.per_layer(workload.tokens, workload.batch)
            .ok_or(PlanError::CacheTooLarge {
                tokens: workload.tokens,
                batch: workload.batch,
            })?;
    let costs = fit.costs(&per_layer);
    Ok((costs, (list, per_layer, fit)))
}

/// Splits the model into `n` contiguous stages of about equal bytes (pipeline parallelism):
/// units in order, no unit split, the largest stage as small as it can be. Returns, for each
/// stage, the compact module names it holds.
pub fn stages(model: &Model, n: usize) -> Result<Vec<Vec<String>>> {
    stages_for(model, n, None)
}

/// Like [`stages`]; with `workload`, each stage's bytes include its layers' KV cache.
pub fn stages_for(
    model: &Model,
    n: usize,
    workload: Option<&Workload>,
) -> Result<Vec<Vec<String>>> {
    if n == 0 {
        return Err(PlanError::NoStages.into());
    }
    let huge = u64::MAX / 4;
    // A block holds a tensor at least, so no more stages than tensors can be made: no more
    // budgets than that either (`n = 10**12` allocated 10**12 of them, `2**63` panicked).
    let gpus = n.min(model.sizes.len().max(1)) as u64;
    let budgets = Budgets {
        devices: (0..gpus).map(|i| (Device::gpu(i), huge)).collect(),
    };
    // Balanced over equal budgets minimises the largest stage; ties are ignored for stages
    // (a pipeline keeps a tied embedding on both ends).
    let untied = Model {
        sizes: model.sizes.clone(),
        tied: Vec::new(),
        no_split: model.no_split.clone(),
        names_distinct: model.names_distinct,
    };
    let planned = plan_for(&untied, &budgets, Strategy::Balanced, workload)?;
    if planned.blocks < n {
        return Err(PlanError::TooFewBlocks {
            blocks: planned.blocks,
            stages: n,
        }
        .into());
    }
    let mut out = vec![Vec::new(); n];
    for (name, device) in planned.map.iter() {
        if let Some(id) = device.id {
            if let Some(stage) = out.get_mut(id as usize) {
                stage.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const GIB: u64 = 1 << 30;

    fn layers(n: usize, layer: u64) -> Model {
        let mut sizes = vec![("model.embed_tokens.weight".to_owned(), layer / 2)];
        for i in 0..n {
            sizes.push((format!("model.layers.{i}.attn.weight"), layer / 4));
            sizes.push((format!("model.layers.{i}.mlp.weight"), layer - layer / 4));
        }
        sizes.push(("model.norm.weight".to_owned(), 8));
        sizes.push(("lm_head.weight".to_owned(), layer / 2));
        Model {
            sizes,
            ..Model::default()
        }
    }

    fn gpus(n: u64, each: u64) -> Budgets {
        Budgets::new((0..n).map(|i| (Device::gpu(i), each)).collect()).unwrap()
    }

    fn device_of(plan: &Plan, name: &str) -> Option<Device> {
        // Longest compact key that is a dot-prefix of the name.
        plan.map
            .iter()
            .filter(|(k, _)| k.is_empty() || *k == name || name.starts_with(&format!("{k}.")))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, d)| d)
    }

    #[test]
    fn fits_on_one_gpu_is_the_root() {
        let p = plan(&layers(4, GIB), &gpus(2, 100 * GIB), Strategy::Sequential).unwrap();
        assert_eq!(p.map.len(), 1);
        assert_eq!(p.map.get(""), Some(Device::gpu(0)));
    }

    #[test]
    fn blocks_are_never_split_and_budgets_hold() {
        let model = layers(10, GIB);
        for strategy in [
            Strategy::Sequential,
            Strategy::Balanced,
            Strategy::BalancedLow0,
        ] {
            let p = plan(&model, &gpus(3, 4 * GIB + GIB / 2), strategy).unwrap();
            for used in &p.devices {
                assert!(
                    used.bytes + used.reserved <= used.budget,
                    "{strategy:?} {used:?}"
                );
            }
            for i in 0..10 {
                let a = device_of(&p, &format!("model.layers.{i}.attn.weight"));
                let b = device_of(&p, &format!("model.layers.{i}.mlp.weight"));
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn balanced_is_never_worse_than_sequential() {
        let model = layers(13, GIB);
        let budgets = gpus(4, 8 * GIB);
        let seq = plan(&model, &budgets, Strategy::Sequential).unwrap();
        let bal = plan(&model, &budgets, Strategy::Balanced).unwrap();
        let top = |p: &Plan| p.devices.iter().map(|u| u.bytes).max().unwrap();
        assert!(top(&bal) <= top(&seq));
        // 13.5 + 0.5 GiB over 4 GPUs: no GPU needs more than 4 GiB.
        assert!(top(&bal) <= 4 * GIB, "{}", bal.text());
        let low = plan(&model, &budgets, Strategy::BalancedLow0).unwrap();
        assert!(low.devices[0].bytes <= low.devices[1].bytes);
    }

    #[test]
    fn spill_keeps_room_for_largest_offloaded_block() {
        let model = layers(10, GIB);
        let budgets = Budgets::new(vec![
            (Device::gpu(0), 4 * GIB),
            (Device::cpu(), 3 * GIB),
            (Device::disk(), 100 * GIB),
        ])
        .unwrap();
        let p = plan(&model, &budgets, Strategy::Sequential).unwrap();
        assert!(p.fits());
        assert_eq!(p.devices[0].reserved, GIB);
        assert!(p.devices[0].bytes <= 3 * GIB);
        assert!(!p.spilled.is_empty());
        assert!(p.devices[2].bytes > 0);
    }

    #[test]
    fn ties_land_together() {
        let mut model = layers(6, GIB);
        model.sizes.pop();
        model.tied = vec![vec![
            "model.embed_tokens.weight".into(),
            "lm_head.weight".into(),
        ]];
        let p = plan(&model, &gpus(3, 3 * GIB), Strategy::Sequential).unwrap();
        assert_eq!(
            device_of(&p, "lm_head.weight"),
            device_of(&p, "model.embed_tokens.weight")
        );
        assert!(p.map.contains_key("lm_head"));
    }

    #[test]
    fn tied_storage_counts_once_whichever_member_is_stored() {
        // The stored member may come anywhere in the group: its bytes count once, and the
        // members the sizes lack add nothing.
        for group in [
            vec!["model.embed_tokens.weight", "lm_head.weight"],
            vec!["lm_head.weight", "model.embed_tokens.weight"],
            vec!["x.weight", "model.embed_tokens.weight", "lm_head.weight"],
        ] {
            let mut model = layers(2, GIB);
            model.sizes.pop();
            let stored: u64 = model.sizes.iter().map(|&(_, b)| b).sum();
            model.tied = vec![group.iter().map(|&n| n.to_owned()).collect()];
            let p = plan(&model, &gpus(1, 100 * GIB), Strategy::Sequential).unwrap();
            assert_eq!(p.total_bytes, stored, "{group:?}");
        }
    }

    #[test]
    fn no_split_patterns() {
        let model = Model {
            no_split: Some(NoSplit::new(&["model.layers.*.mlp"]).unwrap()),
            ..layers(2, GIB)
        };
        let p = plan(&model, &gpus(4, GIB), Strategy::Sequential).unwrap();
        // attn and mlp of a layer may part now.
        assert!(p.fits());
    }

    #[test]
    fn errors() {
        let too_big = plan(&layers(4, GIB), &gpus(1, GIB), Strategy::Balanced).unwrap();
        let message = too_big.check_fits().unwrap_err().to_string();
        assert!(message.contains("does not fit"), "{message}");
        assert!(plan(&layers(1, GIB), &gpus(2, 0), Strategy::Balanced).is_err());
        assert!(plan(&Model::default(), &gpus(1, GIB), Strategy::Balanced).is_err());
        assert!(Strategy::parse("greedy").is_err());
        assert_eq!(
            stages(&layers(1, GIB), 0).unwrap_err().to_string(),
            "The number of stages must be at least 1"
        );
        assert_eq!(
            stages(&layers(1, GIB), 9).unwrap_err().to_string(),
            "Cannot split 4 blocks into 9 stages"
        );
        let bad_name = Model {
            sizes: vec![("a..b".into(), 1)],
            ..Model::default()
        };
        assert!(matches!(
            plan(&bad_name, &gpus(1, GIB), Strategy::Balanced),
            Err(Error::Plan(PlanError::BadTensorName { .. }))
        ));
        let no_device = plan(&layers(1, GIB), &Budgets::default(), Strategy::Balanced);
        assert!(matches!(no_device, Err(Error::Plan(PlanError::NoDevice))));
        let zero = plan(&layers(1, GIB), &gpus(2, 0), Strategy::Balanced).unwrap_err();
        assert_eq!(
            zero.to_string(),
            "Every budget is zero (cuda:0, cuda:1): nothing can be placed"
        );
    }

    #[test]
    fn sizes_past_u64_in_total_are_refused_not_summed() {
        let huge = Model {
            sizes: vec![("a.w".into(), u64::MAX), ("b.w".into(), 1)],
            ..Model::default()
        };
        let err = plan(&huge, &gpus(1, GIB), Strategy::Balanced).unwrap_err();
        assert!(matches!(err, Error::Plan(PlanError::ModelTooLarge { .. })));
        assert_eq!(err.kind(), crate::error::ErrorKind::Overflow);
        assert!(err
            .to_string()
            .contains("the largest 'a.w', 18446744073709551615 bytes"));
        assert!(stages(&huge, 2).is_err());
        // More stages than tensors: refused by count, without a budget per stage.
        assert_eq!(
            stages(&layers(1, GIB), usize::MAX).unwrap_err().to_string(),
            format!("Cannot split 4 blocks into {} stages", usize::MAX)
        );
        let exact = Model {
            sizes: vec![("a.w".into(), u64::MAX - 1), ("b.w".into(), 1)],
            ..Model::default()
        };
        assert!(plan(&exact, &gpus(1, u64::MAX), Strategy::Balanced).is_ok());
    }

    #[test]
    fn balanced_leaves_no_gpu_nearly_empty() {
        // 83 units over 8 GPUs: the optimal bottleneck is 11 layers; every GPU within one
        // layer (plus the embedding) of the others, the last one included.
        let p = plan(&layers(80, GIB), &gpus(8, 80 * GIB), Strategy::Balanced).unwrap();
        let loads: Vec<u64> = p.devices.iter().map(|u| u.bytes).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= GIB + GIB / 2, "{loads:?}");
        assert!(*max <= 11 * GIB, "{loads:?}");
    }

    #[test]
    fn low_0_keeps_gpu_0_empty_when_the_others_suffice() {
        let p = plan(&layers(6, GIB), &gpus(3, 10 * GIB), Strategy::BalancedLow0).unwrap();
        assert_eq!(p.devices[0].bytes, 0);
        assert!(p.fits());
        // When they do not, GPU 0 takes only the front that does not fit elsewhere.
        let p = plan(&layers(12, GIB), &gpus(2, 7 * GIB), Strategy::BalancedLow0).unwrap();
        assert!(p.fits());
        // GPU 1 holds 6 layers and the head (6.5 GiB): the embedding and 6 layers are left.
        assert_eq!(p.devices[0].bytes, 6 * GIB + GIB / 2, "{}", p.text());
    }

    #[test]
    fn a_name_listed_twice_is_refused() {
        let twice = Model {
            sizes: vec![("a.0.w".into(), 1), ("b.w".into(), 1), ("a.0.w".into(), 2)],
            ..Model::default()
        };
        let err = plan(&twice, &gpus(1, GIB), Strategy::Balanced).unwrap_err();
        assert_eq!(err.to_string(), "Tensor 'a.0.w' is listed twice");
        assert!(matches!(err, Error::Plan(PlanError::NameTwice { .. })));
        assert!(stages(&twice, 1).is_err());
        // Tied models build the name index anyway, and refuse the same.
        let tied = Model {
            tied: vec![vec!["b.w".into(), "c.w".into()]],
            names_distinct: true,
            ..twice.clone()
        };
        assert!(plan(&tied, &gpus(1, GIB), Strategy::Balanced).is_err());
        // A caller that knows its names are distinct skips the check (and counts both).
        let trusted = Model {
            names_distinct: true,
            ..twice
        };
        assert_eq!(
            plan(&trusted, &gpus(1, GIB), Strategy::Balanced)
                .unwrap()
                .total_bytes,
            4
        );
    }

    #[test]
    fn tied_storage_counts_once_and_missing_names_are_mapped() {
        let model = Model {
            sizes: vec![
                ("embed.weight".into(), 8),
                ("layers.0.w".into(), 4),
                ("norm.weight".into(), 8),
            ],
            tied: vec![vec![
                "embed.weight".into(),
                "norm.weight".into(),
                "head.weight".into(),
            ]],
            ..Model::default()
        };
        let p = plan(&model, &gpus(1, 100), Strategy::Sequential).unwrap();
        assert_eq!(p.total_bytes, 12);
        assert_eq!(p.tensors, 4);
        assert_eq!(p.blocks, 2);
        assert_eq!(device_of(&p, "head.weight"), Some(Device::gpu(0)));
    }

    #[test]
    fn the_verdict_says_how_it_fits() {
        let fits = plan(&layers(4, GIB), &gpus(2, 100 * GIB), Strategy::Sequential).unwrap();
        assert_eq!(fits.verdict, Verdict::Fits);
        assert!(fits.check_fits().is_ok());

        let budgets =
            Budgets::new(vec![(Device::gpu(0), 4 * GIB), (Device::cpu(), 100 * GIB)]).unwrap();
        let offload = plan(&layers(10, GIB), &budgets, Strategy::Sequential).unwrap();
        let spilled: u64 = offload.spilled.iter().map(|p| p.bytes).sum();
        assert_eq!(
            offload.verdict,
            Verdict::FitsWithOffload {
                blocks: offload.spilled.len(),
                bytes: spilled
            }
        );
        assert!(offload.check_fits().is_ok());

        let short = plan(&layers(4, GIB), &gpus(1, GIB), Strategy::Balanced).unwrap();
        let Verdict::DoesNotFit(shortfall) = &short.verdict else {
            panic!("{:?}", short.verdict)
        };
        assert_eq!(shortfall.missing, short.unplaced_bytes);
        assert_eq!(shortfall.blocks, short.unplaced.len());
        assert_eq!(shortfall.first, short.unplaced[0].name);
        let err = short.check_fits().unwrap_err();
        assert!(matches!(err, PlanError::DoesNotFit(_)));
        // The last note says the same, for the text report.
        assert_eq!(short.notes.last(), Some(&err.to_string()));
    }

    #[test]
    fn stages_balance_bytes() {
        let s = stages(&layers(8, GIB), 2).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].iter().any(|n| n.contains("embed")));
        assert!(s[1].iter().any(|n| n.contains("lm_head")));
    }
}
