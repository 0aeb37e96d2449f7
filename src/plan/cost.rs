//! What a unit costs on the device it is placed on. Placement compares and adds costs only
//! through [`Cost::total`] and [`Cost::saturating_add`], so a new kind of cost (the KV cache a
//! layer needs while the model runs) is one field here.

/// Bytes a unit needs on its device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Its weights (parameters and buffers), tied storage counted once.
    pub weights: u64,
}

impl Cost {
    pub const fn of_weights(weights: u64) -> Cost {
        Cost { weights }
    }

    /// Everything the unit needs on its device; saturates at `u64::MAX` (a size no budget holds).
    pub const fn total(self) -> u64 {
        self.weights
    }

    pub const fn saturating_add(self, other: Cost) -> Cost {
        Cost {
            weights: self.weights.saturating_add(other.weights),
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
    }
}
