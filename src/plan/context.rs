//! Plans for inference: the KV cache of each decoder layer, charged to the unit that holds the
//! layer, and the longest context (or largest batch) for which the plan still fits.
//!
//! Decoder layer `i` is the numbered block `<list>.<i>` of the decoder's layer list
//! (`model.layers.i`, `transformer.h.i`, `decoder.block.i`, `model.language_model.layers.i`):
//! the list of numbered blocks `0 .. n-1`, `n` the config's decoder layer count (a list with
//! blocks past those, as DeepSeek-V3's multi-token-prediction layer, when none has exactly
//! `n`). Its cache is a cost of the unit holding the first tensor of that block.

use std::collections::HashMap;

use ahash::RandomState;

use super::budget::Budgets;
use super::cost::Cost;
use super::error::PlanError;
use super::model::{Tensors, Units};
use super::place::{self, Strategy};
use crate::inference::{CacheLayout, CacheMode, Request};
use crate::names;

/// A plan for inference: the cache layout and the context, batch and headroom planned for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub layout: CacheLayout,
    /// Tokens per sequence (for encoder-decoder models also the encoder's input length).
    pub tokens: u64,
    pub batch: u64,
    /// Bytes kept free for activations on every device that runs layers.
    pub activation: u64,
}

/// What a plan for inference was planned for, and where each layer's cache went.
#[derive(Clone, Debug)]
pub struct Context {
    pub model_type: &'static str,
    pub tokens: u64,
    pub batch: u64,
    pub dtype: crate::dtype::Dtype,
    /// Bytes kept free for activations on every device that runs layers.
    pub activation: u64,
    /// The decoder's layer list (`model.layers`).
    pub layer_list: String,
    /// Each decoder layer's cache, in bytes.
    pub per_layer: Vec<u64>,
    /// The device each layer's cache is charged to: where the layer runs (`None`: its unit
    /// was not placed).
    pub layer_device: Vec<Option<crate::device::Device>>,
    pub cache_bytes: u64,
    /// What `max_context` and `max_batch` plan again with.
    pub fit: Fit,
}

/// The workload of a plan from its arguments: `None` without a context; a context needs a
/// config, and the other arguments need a context.
pub fn workload(
    config: Option<&serde_json::Value>,
    tokens: Option<u64>,
    batch: Option<u64>,
    dtype: Option<crate::dtype::Dtype>,
    activation: u64,
) -> crate::error::Result<Option<Workload>> {
    let Some(tokens) = tokens else {
        let given = [
            (batch.is_some(), "batch="),
            (dtype.is_some(), "kv_dtype="),
            (activation > 0, "activation="),
        ];
        return match given.iter().find(|(g, _)| *g) {
            Some((_, what)) => Err(PlanError::NeedsContext { what }.into()),
            None => Ok(None),
        };
    };
    if tokens == 0 {
        return Err(PlanError::ZeroContext.into());
    }
    let config = config.ok_or(PlanError::ContextWithoutConfig)?;
    let batch = batch.unwrap_or(1);
    if batch == 0 {
        return Err(PlanError::ZeroBatch.into());
    }
    Ok(Some(Workload {
        layout: crate::inference::cache_layout(config, dtype)?,
        tokens,
        batch,
        activation,
    }))
}

/// Layer indices past this are not layer lists (a name with a huge number in it).
const MOST_LAYERS: u64 = 1 << 20;

/// The decoder's layer list and the unit (of `units.list`) holding each layer.
pub(super) fn match_layers<'a>(
    tensors: &Tensors<'a>,
    units: &Units<'a>,
    layers: usize,
    model_type: &str,
) -> Result<(String, Vec<usize>), PlanError> {
    // Per list prefix, the first unit holding each numbered block.
    let mut lists: HashMap<&'a str, Vec<Option<u32>>, RandomState> = HashMap::default();
    let mut order: Vec<&'a str> = Vec::new();
    let mut note = |name: &'a str, u: u32| {
        if let Some((prefix, i)) = numbered(name) {
            let blocks = lists.entry(prefix).or_insert_with(|| {
                order.push(prefix);
                Vec::new()
            });
            let i = i as usize;
            if blocks.len() <= i {
                blocks.resize(i + 1, None);
            }
            blocks[i].get_or_insert(u);
        }
    };
    for (u, unit) in units.list.iter().enumerate() {
        if numbered(unit.prefix).is_some() {
            note(unit.prefix, u as u32);
        } else {
            // A unit above the blocks (a no-split module holding several): its tensors say.
            for &t in &unit.tensors {
                note(tensors.names[t as usize], u as u32);
            }
        }
    }
    // Blocks 0 .. n-1 all present: exactly n first; else with blocks past them (DeepSeek-V3's
    // checkpoints store the multi-token-prediction layer as `model.layers.61`, which
    // transformers does not load: it gets no cache).
    let starts = |p: &&str| {
        let blocks = &lists[*p];
        blocks.len() >= layers && blocks[..layers].iter().all(Option::is_some)
    };
    let mut found: Vec<&str> = order.iter().copied().filter(starts).collect();
    if found.iter().any(|p| lists[p].len() == layers) {
        found.retain(|p| lists[p].len() == layers);
    }
    if found.len() > 1 {
        // A vision tower or an encoder as long as the decoder: the decoder's list wins.
        let decoder = |p: &&str| {
            p.split('.')
                .any(|c| matches!(c, "decoder" | "language_model" | "text_model"))
        };
        if found.iter().any(decoder) {
            found.retain(decoder);
        }
    }
    match found.as_slice() {
        [prefix] => Ok((
            (*prefix).to_owned(),
            lists[prefix][..layers]
                .iter()
                .map(|u| u.unwrap_or_default() as usize)
                .collect(),
        )),
        [] => Err(PlanError::LayersNotFound {
            model_type: model_type.to_owned(),
            layers,
            found: order
                .iter()
                .map(|p| {
                    let n = lists[p].iter().filter(|u| u.is_some()).count();
                    format!("'{p}' ({n} blocks)")
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
        several => Err(PlanError::LayersAmbiguous {
            model_type: model_type.to_owned(),
            layers,
            found: several
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `model.layers.3.mlp.w` -> `("model.layers", 3)`: the first numbered component and the
/// prefix before it.
fn numbered(name: &str) -> Option<(&str, u64)> {
    let mut start = 0;
    for component in name.split('.') {
        if let Some(i) = names::number(component).filter(|&i| i < MOST_LAYERS) {
            return (start > 0).then(|| (&name[..start - 1], i));
        }
        start += component.len() + 1;
    }
    None
}

/// What a plan for inference needs to be planned again at another context or batch: the
/// weights of each placed unit, the unit holding each layer, the layout, budgets and strategy.
#[derive(Clone, Debug)]
pub struct Fit {
    weights: Vec<Cost>,
    /// All the units' weights (at most `u64::MAX`: `plan_for` refuses more).
    weights_total: u64,
    /// The position (among the placed units) of the unit holding each layer.
    layer_slot: Vec<usize>,
    layout: CacheLayout,
    budgets: Budgets,
    strategy: Strategy,
    activation: u64,
}

/// Tokens or sequences past this are not tried: the answer is then "no limit" (a cache that
/// stops growing: sliding windows or fixed states only).
pub const MOST_TRIED: u64 = 1 << 48;

impl Fit {
    pub(super) fn new(
        weights: Vec<Cost>,
        layer_slot: Vec<usize>,
        workload: &Workload,
        budgets: &Budgets,
        strategy: Strategy,
    ) -> Fit {
        let weights_total = weights
            .iter()
            .fold(0u64, |sum, cost| sum.saturating_add(cost.weights));
        Fit {
            weights,
            weights_total,
            layer_slot,
            layout: workload.layout.clone(),
            budgets: budgets.clone(),
            strategy,
            activation: workload.activation,
        }
    }

    /// The position (among the placed units) of the unit holding each layer.
    pub(super) fn layer_slots(&self) -> &[usize] {
        &self.layer_slot
    }

    /// Each decoder layer's cache for `tokens` x `batch`; `None` when the cache and the weights
    /// together pass 2**64 bytes.
    pub(super) fn per_layer(&self, tokens: u64, batch: u64) -> Option<Vec<u64>> {
        let encoder_tokens = self.layout.encoder_decoder.then_some(tokens);
        let per_layer = self.layout.per_layer(&Request {
            tokens,
            batch,
            dtype: None,
            mode: CacheMode::Static,
            encoder_tokens,
        })?;
        // The weights and the whole cache stay within u64, so no sum of costs overflows.
        per_layer
            .iter()
            .try_fold(self.weights_total, |sum, &bytes| sum.checked_add(bytes))?;
        Some(per_layer)
    }

    /// The cost of each placed unit with the cache of `per_layer` added.
    pub(super) fn costs(&self, per_layer: &[u64]) -> Vec<Cost> {
        let mut costs = self.weights.clone();
        for (&slot, &bytes) in self.layer_slot.iter().zip(per_layer) {
            let cost = &mut costs[slot];
            cost.cache = cost.cache.saturating_add(bytes);
        }
        costs
    }

    /// Whether the plan's verdict at `tokens` x `batch` is that it fits.
    fn fits(&self, tokens: u64, batch: u64) -> bool {
        let Some(per_layer) = self.per_layer(tokens, batch) else {
            return false;
        };
        let costs = self.costs(&per_layer);
        place::place(&costs, &self.budgets, self.strategy, self.activation)
            .placed_all(self.budgets.devices.len())
    }

    /// The longest context that fits at `batch`: it fits, and one more token does not.
    /// `None` when every context up to [`MOST_TRIED`] fits.
    pub fn max_context(&self, batch: u64) -> Result<Option<u64>, PlanError> {
        if batch == 0 {
            return Err(PlanError::ZeroBatch);
        }
        if !self.fits(1, batch) {
            return Err(PlanError::NoContextFits { batch });
        }
        Ok(largest(|tokens| self.fits(tokens, batch)))
    }

    /// The largest batch that fits at `tokens`: it fits, and one more sequence does not.
    /// `None` when every batch up to [`MOST_TRIED`] fits.
    pub fn max_batch(&self, tokens: u64) -> Result<Option<u64>, PlanError> {
        if !self.fits(tokens, 1) {
            return Err(PlanError::NoBatchFits { tokens });
        }
        Ok(largest(|batch| self.fits(tokens, batch)))
    }
}

/// An `n` in `1 ..= MOST_TRIED` with `fits(n)` and not `fits(n + 1)`, given `fits(1)`; `None`
/// when `fits(MOST_TRIED)`. Doubling finds a bound, then a binary search keeps `fits(low)` and
/// not `fits(high)`. Placement makes fitting monotone (what fits at `n` tokens fits at fewer;
/// `fitting_is_monotone_in_the_context` checks it on random models and budgets), so that `n` is
/// the largest that fits.
fn largest(fits: impl Fn(u64) -> bool) -> Option<u64> {
    let mut low = 1u64;
    let mut high = 2u64;
    while fits(high) {
        if high >= MOST_TRIED {
            return None;
        }
        low = high;
        high = (high * 2).min(MOST_TRIED);
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::error::Error;
    use crate::plan::{plan_for, Model, Plan, Verdict};

    const MIB: u64 = 1 << 20;

    /// Llama with 4 layers, 2 KV heads of 16: 64 elements of K and V per token and layer, fp32:
    /// 256 bytes per token and layer.
    fn workload(tokens: u64, batch: u64) -> Workload {
        let config = serde_json::json!({
            "model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64,
            "num_attention_heads": 4, "num_key_value_heads": 2, "torch_dtype": "float32",
        });
        Workload {
            layout: crate::inference::cache_layout(&config, None).unwrap(),
            tokens,
            batch,
            activation: 0,
        }
    }

    fn model(list: &str) -> Model {
        let mut sizes = vec![("model.embed_tokens.weight".to_owned(), MIB)];
        for i in 0..4 {
            sizes.push((format!("{list}.{i}.self_attn.weight"), MIB));
            sizes.push((format!("{list}.{i}.mlp.weight"), 3 * MIB));
        }
        sizes.push(("lm_head.weight".to_owned(), MIB));
        Model {
            sizes,
            ..Model::default()
        }
    }

    fn budgets(devices: &[(Device, u64)]) -> Budgets {
        Budgets::new(devices.to_vec()).unwrap()
    }

    fn run(model: &Model, budgets: &Budgets, w: &Workload) -> Plan {
        plan_for(model, budgets, Strategy::Sequential, Some(w)).unwrap()
    }

    #[test]
    fn each_layer_s_cache_is_charged_where_it_runs() {
        let w = workload(1024, 2);
        let per_layer = 256 * 1024 * 2;
        let gpus = budgets(&[(Device::gpu(0), 13 * MIB), (Device::gpu(1), 20 * MIB)]);
        let p = run(&model("model.layers"), &gpus, &w);
        assert_eq!(p.verdict, Verdict::Fits);
        let context = p.context.as_ref().unwrap();
        assert_eq!(context.layer_list, "model.layers");
        assert_eq!(context.per_layer, vec![per_layer; 4]);
        assert_eq!(p.cache_bytes, 4 * per_layer);
        // cuda:0 holds the embedding and two layers (9 MiB of weights + 2 caches of 1 MiB).
        assert_eq!(p.devices[0].bytes, 9 * MIB);
        assert_eq!(p.devices[0].cache, 2 * per_layer);
        assert_eq!(p.devices[1].cache, 2 * per_layer);
        let on = |d: Device| Some(d);
        assert_eq!(
            context.layer_device,
            [
                on(Device::gpu(0)),
                on(Device::gpu(0)),
                on(Device::gpu(1)),
                on(Device::gpu(1))
            ]
        );
        // Without the cache the third layer would fit on cuda:0 as well.
        let weights_only = crate::plan::plan(&model("model.layers"), &gpus, Strategy::Sequential);
        assert_eq!(weights_only.unwrap().devices[0].bytes, 13 * MIB);
    }

    /// The reviewer's case: at 9 tokens `balanced_low_0` held GPU 0 back, the runner moved to
    /// GPU 1 and its reserve left blocks over, though the model fit at 8 and at 10 tokens.
    /// Fitting must not come and go as the context grows.
    #[test]
    fn balanced_low_0_fits_at_every_context_up_to_its_largest() {
        let model = six_units(&[3584, 5376, 512, 1792, 256, 1280]);
        let devices = budgets(&[
            (Device::gpu(0), 11008),
            (Device::gpu(1), 14080),
            (Device::gpu(2), 5632),
            (Device::gpu(3), 768),
            (Device::cpu(), 6144),
        ]);
        let fitting: Vec<u64> = (1..=16).filter(|&t| p_fits(&model, &devices, t)).collect();
        let last = *fitting.last().unwrap();
        assert!(last >= 10, "{fitting:?}");
        assert_eq!(fitting, (1..=last).collect::<Vec<_>>());
    }

    /// Random models and budgets, every strategy: what fits at `t` tokens fits at `t - 1`, and
    /// `max_context` is the largest `t` that fits.
    #[test]
    fn fitting_is_monotone_in_the_context() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..800 {
            let weights: Vec<u64> = (0..6).map(|_| (next(40) + 1) * 256).collect();
            let model = six_units(&weights);
            let mut devices: Vec<(Device, u64)> = (0..next(4) + 1)
                .map(|g| (Device::gpu(g), (next(60) + 1) * 256))
                .collect();
            if next(10) < 7 {
                devices.push((Device::cpu(), next(60) * 256));
            }
            if next(10) < 3 {
                devices.push((Device::disk(), next(60) * 256));
            }
            let devices = budgets(&devices);
            let strategy = [
                Strategy::Sequential,
                Strategy::Balanced,
                Strategy::BalancedLow0,
            ][next(3) as usize];
            let fits = |t: u64| {
                let p = plan_for(&model, &devices, strategy, Some(&workload(t, 1))).unwrap();
                p.unplaced.is_empty()
            };
            let fitting: Vec<u64> = (1..=24).filter(|&t| fits(t)).collect();
            if let Some(&last) = fitting.last() {
                let case = format!("{:?} {strategy:?}: {fitting:?}", devices.devices);
                assert_eq!(fitting, (1..=last).collect::<Vec<_>>(), "{case}");
                if last < 24 {
                    assert_eq!(largest(fits), Some(last), "{case}");
                }
            }
        }
    }

    /// An embedding, 4 layers and a head of these sizes (the `workload` config's 4 layers).
    fn six_units(weights: &[u64]) -> Model {
        let mut sizes = vec![("model.embed_tokens.weight".to_owned(), weights[0])];
        for (i, &w) in weights[1..5].iter().enumerate() {
            sizes.push((format!("model.layers.{i}.w"), w));
        }
        sizes.push(("lm_head.weight".to_owned(), weights[5]));
        Model {
            sizes,
            ..Model::default()
        }
    }

    fn p_fits(model: &Model, devices: &Budgets, tokens: u64) -> bool {
        let p = plan_for(
            model,
            devices,
            Strategy::BalancedLow0,
            Some(&workload(tokens, 1)),
        );
        p.unwrap().unplaced.is_empty()
    }

    #[test]
    fn offloaded_layers_keep_their_cache_on_the_runner() {
        let w = workload(4096, 1);
        let per_layer = 256 * 4096;
        let devices = budgets(&[(Device::gpu(0), 11 * MIB), (Device::cpu(), 100 * MIB)]);
        let p = run(&model("transformer.h"), &devices, &w);
        assert!(
            matches!(p.verdict, Verdict::FitsWithOffload { .. }),
            "{}",
            p.text()
        );
        let context = p.context.as_ref().unwrap();
        // Every layer runs on cuda:0, offloaded or not: all the cache is there.
        assert!(context
            .layer_device
            .iter()
            .all(|d| *d == Some(Device::gpu(0))));
        assert_eq!(p.devices[0].cache, 4 * per_layer);
        assert_eq!(p.devices[1].cache, 0);
        let gpu = &p.devices[0];
        assert_eq!(gpu.reserved, 4 * MIB);
        assert!(
            gpu.bytes + gpu.cache + gpu.reserved <= gpu.budget,
            "{}",
            p.text()
        );
        // A runner too small for the cache of every offloaded layer: the last are left over.
        let small = budgets(&[(Device::gpu(0), 9 * MIB), (Device::cpu(), 12 * MIB)]);
        let p = run(&model("transformer.h"), &small, &workload(8192, 1));
        let Verdict::DoesNotFit(short) = &p.verdict else {
            panic!("{}", p.text())
        };
        // cuda:0 holds the embedding, 4 MiB for the largest offloaded layer and the cache of
        // two offloaded layers; the last two layers are left over.
        assert_eq!(short.cache, 4 * 256 * 8192);
        assert!(
            p.unplaced.iter().any(|u| u.name == "transformer.h.3"),
            "{}",
            p.text()
        );
        // Without accelerators the CPU runs what is offloaded to disk.
        let devices = budgets(&[(Device::cpu(), 12 * MIB), (Device::disk(), 100 * MIB)]);
        let p = run(&model("model.layers"), &devices, &w);
        let context = p.context.as_ref().unwrap();
        assert!(context
            .layer_device
            .iter()
            .all(|d| *d == Some(Device::cpu())));
        assert!(p.devices[1].bytes > 0);
    }

    #[test]
    fn activation_headroom_is_kept_on_devices_that_run_layers() {
        let mut w = workload(0, 1);
        w.activation = 4 * MIB;
        let devices = budgets(&[(Device::gpu(0), 21 * MIB), (Device::cpu(), 100 * MIB)]);
        let p = run(&model("model.layers"), &devices, &w);
        assert_eq!(p.devices[0].activation, 4 * MIB);
        assert_eq!(p.devices[1].activation, 0);
        // 18 MiB of weights and 4 MiB of headroom do not fit 21 MiB: the head is offloaded.
        assert!(matches!(p.verdict, Verdict::FitsWithOffload { .. }));
    }

    #[test]
    fn the_longest_context_fits_and_one_more_token_does_not() {
        let m = model("model.layers");
        for devices in [
            budgets(&[(Device::gpu(0), 11 * MIB), (Device::gpu(1), 13 * MIB)]),
            budgets(&[(Device::gpu(0), 15 * MIB), (Device::cpu(), 20 * MIB)]),
        ] {
            for batch in [1, 3] {
                let p = run(&m, &devices, &workload(16, batch));
                let fit = &p.context.as_ref().unwrap().fit;
                let longest = fit.max_context(batch).unwrap().unwrap();
                assert!(run(&m, &devices, &workload(longest, batch)).fits());
                assert!(!run(&m, &devices, &workload(longest + 1, batch)).fits());
                let widest = fit.max_batch(longest).unwrap().unwrap();
                assert!(widest >= batch);
                assert!(run(&m, &devices, &workload(longest, widest)).fits());
                assert!(!run(&m, &devices, &workload(longest, widest + 1)).fits());
            }
        }
        let tight = budgets(&[(Device::gpu(0), 18 * MIB)]);
        let fit = run(&m, &tight, &workload(1, 1)).context.unwrap().fit;
        assert_eq!(
            fit.max_context(1),
            Err(PlanError::NoContextFits { batch: 1 })
        );
        assert_eq!(fit.max_context(0), Err(PlanError::ZeroBatch));
        // No cache at 0 tokens: any batch.
        let roomy = budgets(&[(Device::gpu(0), 40 * MIB)]);
        let fit = run(&m, &roomy, &workload(1, 1)).context.unwrap().fit;
        assert_eq!(fit.max_batch(0), Ok(None));
    }

    #[test]
    fn layers_are_matched_to_the_decoder_s_list() {
        let gpu = budgets(&[(Device::gpu(0), 100 * MIB)]);
        let w = workload(8, 1);
        for list in [
            "model.layers",
            "transformer.h",
            "decoder.block",
            "model.language_model.layers",
        ] {
            let p = run(&model(list), &gpu, &w);
            assert_eq!(p.context.unwrap().layer_list, list);
        }
        // An encoder as long as the decoder: the decoder's list.
        let mut both = model("encoder.block");
        both.sizes
            .extend(model("decoder.block").sizes.into_iter().skip(1));
        both.sizes.pop();
        let p = run(&both, &gpu, &w);
        assert_eq!(p.context.unwrap().layer_list, "decoder.block");
        // Two lists either of which could be it.
        let mut two = model("a.layers");
        two.sizes
            .extend(model("b.layers").sizes.into_iter().skip(1));
        two.sizes.pop();
        let err = plan_for(&two, &gpu, Strategy::Sequential, Some(&w)).unwrap_err();
        assert!(
            matches!(err, Error::Plan(PlanError::LayersAmbiguous { .. })),
            "{err}"
        );
        // Blocks past the config's layers (DeepSeek-V3's multi-token-prediction layer): no cache.
        let mut more = model("model.layers");
        more.sizes
            .push(("model.layers.4.eh_proj.weight".into(), MIB));
        let p = run(&more, &gpu, &w);
        assert_eq!(p.cache_bytes, 4 * 256 * 8);
        // Three layers where the config says four.
        let mut short = model("model.layers");
        short
            .sizes
            .retain(|(n, _)| !n.starts_with("model.layers.3."));
        let err = plan_for(&short, &gpu, Strategy::Sequential, Some(&w)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model_type 'llama': the config has 4 decoder layers, but no list of exactly 4 \
             numbered blocks ('<list>.0' .. '<list>.3') is among the tensor names; numbered \
             lists found: 'model.layers' (3 blocks)"
        );
        // A no-split module above the layers: the layers are found through its tensors.
        let whole = Model {
            no_split: Some(crate::plan::NoSplit::new(&["model"]).unwrap()),
            ..model("model.layers")
        };
        let p = run(&whole, &gpu, &w);
        assert_eq!(p.context.unwrap().layer_device, [Some(Device::gpu(0)); 4]);
    }

    #[test]
    fn numbered_blocks() {
        assert_eq!(numbered("model.layers.3.mlp.w"), Some(("model.layers", 3)));
        assert_eq!(numbered("transformer.h.0.attn"), Some(("transformer.h", 0)));
        assert_eq!(numbered("decoder.block.5"), Some(("decoder.block", 5)));
        assert_eq!(numbered("0.weight"), None);
        assert_eq!(numbered("lm_head.weight"), None);
        assert_eq!(numbered("a.99999999999.w"), None);
    }

    #[test]
    fn largest_is_exact() {
        for limit in [1u64, 2, 3, 4, 5, 1000, 32767, 32768, 32769, 1 << 40] {
            assert_eq!(largest(|n| n <= limit), Some(limit), "{limit}");
        }
        assert_eq!(largest(|_| true), None);
    }
}
