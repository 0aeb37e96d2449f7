//! What planning refuses: bad sizes, budgets, names and patterns, and a model that does not
//! fit. Every message is the one users have always seen; `kind` says which Python exception
//! each becomes (`bindings/errors.rs` makes it).

use thiserror::Error;

use crate::device::{Device, DeviceType};
use crate::error::{quoted, ErrorKind};
use crate::units::{human_bytes, thousands};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error(
        "Unknown strategy '{text}'; expected one of 'sequential', 'balanced', 'balanced_low_0'"
    )]
    UnknownStrategy { text: String },

    /// `shown` is the key as the caller wrote it: quoted text, or a Python repr.
    #[error(
        "Unknown max_memory key {shown}: expected a GPU id (0, 1, ...), 'cpu', 'disk' or 'mps'"
    )]
    UnknownBudgetKey { shown: String },

    /// `first` and `second` are the two keys as the caller wrote them.
    #[error("max_memory names {device} twice: {first} and {second}")]
    BudgetTwice {
        device: Device,
        first: String,
        second: String,
    },

    #[error("Invalid memory size '{text}': use bytes or a number with a unit such as '20GiB', '20GB', '512MiB'")]
    BadMemorySize { text: String },

    #[error("Memory size '{text}' is more than 18446744073709551615 bytes (2**64 - 1)")]
    MemorySizeTooLarge { text: String },

    /// One `max_memory` value that is not a size: `key` and `shown` are reprs of the entry.
    #[error("max_memory[{key}] = {shown}: {problem}")]
    BadBudget {
        key: String,
        shown: String,
        problem: BudgetProblem,
    },

    /// `shown` is a repr of the reserve given.
    #[error("reserve as a fraction must be in [0, 1), got {shown}")]
    ReserveFraction { shown: String },

    #[error("reserve must be >= 0 bytes, got {shown}")]
    NegativeReserve { shown: String },

    /// `shown` is a repr of the size given.
    #[error("Size of tensor '{name}' must be a non-negative int (bytes), got {shown}")]
    BadSize { name: String, shown: String },

    /// `tensor` and `under` are quoted already.
    #[error("Tensor {tensor} has another tensor under it, {under}: a device map key {tensor} covers both, so they cannot be placed apart (no torch module has a tensor and a submodule of one name)")]
    TensorUnderTensor { tensor: String, under: String },

    #[error("Tensor '{name}' is listed twice")]
    NameTwice { name: String },

    #[error(
        "Invalid tensor name '{name}': expected dotted names such as 'model.layers.0.mlp.weight'"
    )]
    BadTensorName { name: String },

    #[error("Invalid no_split pattern '{pattern}': expected a dotted module name such as 'model.layers.*'")]
    BadNoSplit { pattern: String },

    /// `names` are the group's names, quoted (at most three, then how many more).
    #[error("tied group {names} names no tensor of the model; at least one name must be one of its tensors")]
    TiedUnknown { names: String },

    #[error("no_split pattern '{pattern}' matches no module or tensor of the model")]
    NoSplitUnmatched { pattern: String },

    #[error("No device to plan for: max_memory is empty and no GPU or CPU budget was found")]
    NoDevice,

    #[error("Nothing to plan: the model has no tensors")]
    NoTensors,

    #[error("Every budget is zero ({}): nothing can be placed", joined(.devices))]
    ZeroBudgets { devices: Vec<Device> },

    #[error("{0}")]
    DoesNotFit(Box<Shortfall>),

    #[error("gpus_per_host must be >= 1, got 0")]
    ZeroGpusPerHost,

    #[error("The number of stages must be at least 1")]
    NoStages,

    #[error("Cannot split {blocks} blocks into {stages} stages")]
    TooFewBlocks { blocks: usize, stages: usize },

    #[error("context= needs the model's config (its decoder layers and attention): pass config= (a config.json path, a dict or a transformers config), or a checkpoint with a config.json beside it")]
    ContextWithoutConfig,

    #[error("{what} needs context= (tokens per sequence), which sizes the KV cache")]
    NeedsContext { what: &'static str },

    #[error("context= needs a device that runs layers and holds their KV cache (a GPU or 'cpu') in max_memory; it names only {devices}")]
    NoDeviceRunsLayers { devices: String },

    #[error("model_type {}: the config has {layers} decoder layers, but no list of exactly {layers} numbered blocks ('<list>.0' .. '<list>.{}') is among the tensor names; numbered lists found: {}", quoted(.model_type), .layers.saturating_sub(1), or_none(.found))]
    LayersNotFound {
        model_type: String,
        layers: usize,
        found: String,
    },

    #[error("model_type {}: several lists of {layers} numbered blocks could be the decoder's layers ({found}); plan the decoder alone, or name its blocks with no_split", quoted(.model_type))]
    LayersAmbiguous {
        model_type: String,
        layers: usize,
        found: String,
    },

    /// `shown` is a repr of the value given.
    #[error("activation = {shown}: {problem}")]
    BadActivation {
        shown: String,
        problem: BudgetProblem,
    },

    #[error("batch must be >= 1, got 0")]
    ZeroBatch,

    #[error("context must be >= 1 token, got 0")]
    ZeroContext,

    #[error("No context fits at batch {batch}: even 1 token per sequence leaves blocks over once every device is full")]
    NoContextFits { batch: u64 },

    #[error("No batch fits at a context of {tokens} tokens: even 1 sequence leaves blocks over once every device is full")]
    NoBatchFits { tokens: u64 },

    #[error("The KV cache for {tokens} tokens x batch {batch} is larger than 2**64 bytes")]
    CacheTooLarge { tokens: u64, batch: u64 },

    #[error("The model's tensors total more than 2**64 bytes ({tensors} tensors, the largest {largest}, {largest_bytes} bytes): no device holds that; are the sizes in bytes?")]
    ModelTooLarge {
        tensors: usize,
        largest: String,
        largest_bytes: u64,
    },
}

impl PlanError {
    /// Every planning error is a `ValueError`: the input has the right type, not the right value.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlanError::CacheTooLarge { .. } | PlanError::ModelTooLarge { .. } => {
                ErrorKind::Overflow
            }
            _ => ErrorKind::Value,
        }
    }
}

/// Why a `max_memory` value is not a size.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BudgetProblem {
    #[error("expected bytes (int) or a size such as '20GiB'")]
    NotASize,
    #[error("must be >= 0 bytes")]
    Negative,
    #[error("must be a finite number of bytes >= 0")]
    NotFinite,
    /// Text that `parse_size` refuses.
    #[error("{0}")]
    Text(Box<PlanError>),
}

/// By how much a model does not fit: what is left over once every device is full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Bytes of the whole model: its weights and, planned with a context, its KV cache.
    pub total: u64,
    /// Of `total`, the KV cache's bytes.
    pub cache: u64,
    /// Planned for inference: tokens per sequence and batch.
    pub context: Option<(u64, u64)>,
    /// Bytes no device could take.
    pub missing: u64,
    /// Units left over.
    pub blocks: usize,
    /// The first of them.
    pub first: String,
    /// The budgets planned for, in fill order.
    pub budgets: Vec<(Device, u64)>,
    /// Planned with a context, when the blocks left over have a KV cache: what that asks of
    /// the budgets, since only a device that runs layers can hold it.
    pub left_cache: Option<LeftCache>,
}

/// The blocks a plan left over, when they have a KV cache: their weights may go to any budget,
/// their cache only where they run (a GPU that holds them, or the device that runs offloaded
/// blocks), so a cpu or disk budget alone does not make them fit unless the cpu runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftCache {
    /// The device that runs offloaded blocks (and holds their cache).
    pub runner: Device,
    /// Their weights' bytes.
    pub weights: u64,
    /// Their KV cache's bytes.
    pub cache: u64,
    /// Whether the disk budget has room for their weights already.
    pub disk_room: bool,
}

impl LeftCache {
    /// Where more room makes the blocks fit: any GPU, and the runner when it is the cpu.
    fn room_on(&self, gpus: bool) -> &'static str {
        match (gpus, self.runner.kind == DeviceType::Cpu) {
            (true, true) => "the GPUs or the cpu",
            (false, _) => "the cpu",
            (true, false) => "the GPUs",
        }
    }
}

impl Shortfall {
    /// Whether a GPU budget was planned for.
    fn has_gpus(&self) -> bool {
        self.budgets
            .iter()
            .any(|(d, _)| !matches!(d.kind, DeviceType::Cpu | DeviceType::Disk))
    }

    /// In a few words, what helps when the blocks left over have a KV cache that a cpu or
    /// disk budget cannot take (the command line's verdict); `None` otherwise.
    pub fn cache_remedy(&self) -> Option<String> {
        let left = self.left_cache?;
        if left.disk_room {
            let room = left.room_on(self.has_gpus());
            return Some(format!(
                "more memory on {room}, which hold the KV cache; more disk does not help"
            ));
        }
        (left.runner.kind != DeviceType::Cpu).then(|| {
            "more or larger GPUs, which hold the KV cache; a cpu or disk budget takes only weights"
                .to_owned()
        })
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let budget = self
            .budgets
            .iter()
            .map(|&(_, b)| b)
            .fold(0, u64::saturating_add);
        let each = self
            .budgets
            .iter()
            .map(|(d, b)| format!("{d}={}", human_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ");
        let size = match self.context {
            Some((tokens, batch)) => format!(
                "{} of weights and {} of KV cache for {} tokens x batch {}",
                human_bytes(self.total.saturating_sub(self.cache)),
                human_bytes(self.cache),
                thousands(tokens),
                thousands(batch)
            ),
            None => human_bytes(self.total),
        };
        write!(
            f,
            "The model ({size}) does not fit: {} in {} block(s), from '{}' on, are left over once every device is full (budgets total {}: {each}); ",
            human_bytes(self.missing),
            self.blocks,
            self.first,
            human_bytes(budget),
        )?;
        match self.left_cache {
            Some(left) if left.disk_room => write!(
                f,
                "the disk has room for their weights, but their KV cache ({}) must be held where they run, so more disk does not help: add up to {} to {} ({} runs the offloaded blocks)",
                human_bytes(left.cache),
                human_bytes(self.missing),
                left.room_on(self.has_gpus()),
                left.runner
            ),
            Some(left) if left.runner.kind != DeviceType::Cpu => write!(
                f,
                "add {} or more to the GPUs; a cpu or disk budget takes only their weights ({}), not their KV cache ({}), which {} holds for the offloaded layers it runs",
                human_bytes(self.missing),
                human_bytes(left.weights),
                human_bytes(left.cache),
                left.runner
            ),
            _ => write!(f, "add {} or more to the budgets", human_bytes(self.missing)),
        }
    }
}

fn or_none(found: &str) -> &str {
    if found.is_empty() {
        "none"
    } else {
        found
    }
}

fn joined(devices: &[Device]) -> String {
    devices
        .iter()
        .map(Device::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let short = Shortfall {
            total: 30,
            cache: 0,
            context: None,
            missing: 30,
            blocks: 2,
            first: "a".into(),
            budgets: vec![(Device::gpu(0), 5)],
            left_cache: None,
        };
        assert_eq!(
            PlanError::DoesNotFit(Box::new(short)).to_string(),
            "The model (30 B) does not fit: 30 B in 2 block(s), from 'a' on, are left over once \
             every device is full (budgets total 5 B: cuda:0=5 B); add 30 B or more to the budgets"
        );
        let at = Shortfall {
            total: 30,
            cache: 10,
            context: Some((32768, 4)),
            missing: 5,
            blocks: 1,
            first: "lm_head".into(),
            budgets: vec![(Device::gpu(0), 25)],
            left_cache: None,
        };
        assert!(at.to_string().starts_with(
            "The model (20 B of weights and 10 B of KV cache for 32,768 tokens x batch 4) does not fit: 5 B"
        ));
        assert!(at.to_string().ends_with("add 5 B or more to the budgets"));
        // The disk could take the weights left over: only a device that runs layers is short.
        let runner = Shortfall {
            left_cache: Some(LeftCache {
                runner: Device::cpu(),
                weights: 1,
                cache: 4,
                disk_room: true,
            }),
            ..at
        };
        assert!(runner.to_string().ends_with(
            "the disk has room for their weights, but their KV cache (4 B) must be held where \
             they run, so more disk does not help: add up to 5 B to the GPUs or the cpu (cpu runs \
             the offloaded blocks)"
        ));
        // A GPU runs the offloaded blocks: a cpu or disk budget takes only their weights.
        let gpu_runs = Shortfall {
            left_cache: Some(LeftCache {
                runner: Device::gpu(0),
                weights: 1,
                cache: 4,
                disk_room: false,
            }),
            ..runner.clone()
        };
        assert!(gpu_runs.to_string().ends_with(
            "add 5 B or more to the GPUs; a cpu or disk budget takes only their weights (1 B), \
             not their KV cache (4 B), which cuda:0 holds for the offloaded layers it runs"
        ));
        let zero = PlanError::ZeroBudgets {
            devices: vec![Device::gpu(0), Device::cpu()],
        };
        assert_eq!(
            zero.to_string(),
            "Every budget is zero (cuda:0, cpu): nothing can be placed"
        );
        let bad = PlanError::BadBudget {
            key: "'cpu'".into(),
            shown: "'-5GiB'".into(),
            problem: BudgetProblem::Text(Box::new(PlanError::BadMemorySize {
                text: "-5GiB".into(),
            })),
        };
        assert!(bad
            .to_string()
            .starts_with("max_memory['cpu'] = '-5GiB': Invalid memory size '-5GiB'"));
        assert_eq!(bad.kind(), ErrorKind::Value);
    }
}
