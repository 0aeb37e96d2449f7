//! What a unit costs: its weights, and the KV cache of the decoder layers it holds. Placement
//! compares and adds costs only through [`Cost::total`], [`Cost::on_offload`] and
//! [`Cost::saturating_add`].
//!
//! Where each part lives: a unit on an accelerator holds both. A unit offloaded to the CPU or
//! disk keeps its weights there, but runs on the device that runs offloaded blocks (accelerate's
//! `dispatch_model` main device), and transformers allocates a layer's cache where its attention
//! runs: so its cache is charged to that device.

/// Bytes a unit needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Its weights (parameters and buffers), tied storage counted once.
    pub weights: u64,
    /// The KV cache of the decoder layers it holds (0 without a context).
    pub cache: u64,
}

impl Cost {
    pub const fn of_weights(weights: u64) -> Cost {
        Cost { weights, cache: 0 }
    }

    /// Everything the unit needs on the device that runs it; saturates at `u64::MAX` (a size no
    /// budget holds).
    pub const fn total(self) -> u64 {
        self.weights.saturating_add(self.cache)
    }

    /// What the unit needs on the CPU or disk it is offloaded to: its weights only.
    pub const fn on_offload(self) -> u64 {
        self.weights
    }

    pub const fn saturating_add(self, other: Cost) -> Cost {
        Cost {
            weights: self.weights.saturating_add(other.weights),
            cache: self.cache.saturating_add(other.cache),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_saturates() {
        let a = Cost::of_weights(3);
        assert_eq!(a.saturating_add(Cost::of_weights(4)).total(), 7);
        assert_eq!(
            a.saturating_add(Cost::of_weights(u64::MAX)).total(),
            u64::MAX
        );
        assert_eq!(Cost::default().total(), 0);
        let layer = Cost {
            weights: 10,
            cache: 5,
        };
        assert_eq!(layer.total(), 15);
        assert_eq!(layer.on_offload(), 10);
        assert_eq!(layer.saturating_add(layer).cache, 10);
        let huge = Cost {
            weights: u64::MAX,
            cache: 1,
        };
        assert_eq!(huge.total(), u64::MAX);
    }
}
