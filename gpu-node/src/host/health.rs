//! One GPU's health over time, as pure state: a device fault backs the GPU off for a while
//! (doubling with each fault in the window), repeated faults take it out until an operator
//! enables it again. Times are milliseconds the caller passes in, so the table tests drive it.

use kiln_protocol::GpuHealth;

/// When a GPU backs off and when it is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// The first back-off; each further fault in the window doubles it.
    pub backoff_ms: i64,
    /// The longest back-off.
    pub max_backoff_ms: i64,
    /// Faults older than this are forgotten.
    pub window_ms: i64,
    /// This many faults in the window take the GPU out until an operator enables it.
    pub disable_after: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            backoff_ms: 60_000,
            max_backoff_ms: 15 * 60_000,
            window_ms: 3_600_000,
            disable_after: 3,
        }
    }
}

/// What a step changed, for the one log line (and metric) each change gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to say.
    None,
    /// Backing off until this time.
    BackedOff { until_ms: i64 },
    /// Out of service until an operator enables it.
    Disabled,
    /// The back-off ended: taking work again.
    Recovered,
    /// An operator put it back.
    Enabled,
}

/// A GPU's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    state: GpuHealth,
    /// When each fault in the window happened.
    faults: Vec<i64>,
    until_ms: Option<i64>,
    reason: Option<String>,
}

impl Health {
    /// Whether work may be placed on the GPU now.
    pub fn usable(&self) -> bool {
        self.state == GpuHealth::Healthy
    }

    pub fn state(&self) -> GpuHealth {
        self.state
    }

    /// Faults counted in the window.
    pub fn faults(&self) -> u32 {
        self.faults.len() as u32
    }

    pub fn until_ms(&self) -> Option<i64> {
        self.until_ms
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// A device fault at `now_ms`.
    pub fn fault(&mut self, now_ms: i64, reason: &str, policy: &HealthPolicy) -> Change {
        self.faults.retain(|t| now_ms - t < policy.window_ms);
        self.faults.push(now_ms);
        self.reason = Some(reason.to_string());
        if self.state == GpuHealth::Disabled {
            return Change::None;
        }
        if self.faults() >= policy.disable_after {
            self.state = GpuHealth::Disabled;
            self.until_ms = None;
            return Change::Disabled;
        }
        let doublings = self.faults.len().saturating_sub(1).min(20) as u32;
        let backoff = policy
            .backoff_ms
            .saturating_mul(1 << doublings)
            .min(policy.max_backoff_ms);
        let until_ms = now_ms + backoff;
        self.state = GpuHealth::BackingOff;
        self.until_ms = Some(until_ms);
        Change::BackedOff { until_ms }
    }

    /// Time passes: a back-off that has ended puts the GPU back (its faults stay counted).
    pub fn tick(&mut self, now_ms: i64) -> Change {
        match (self.state, self.until_ms) {
            (GpuHealth::BackingOff, Some(until)) if now_ms >= until => {
                self.state = GpuHealth::Healthy;
                self.until_ms = None;
                Change::Recovered
            }
            _ => Change::None,
        }
    }

    /// An operator puts the GPU back: faults forgotten.
    pub fn enable(&mut self) -> Change {
        let was = self.state;
        *self = Self::default();
        if was == GpuHealth::Healthy {
            Change::None
        } else {
            Change::Enabled
        }
    }

    /// An operator takes the GPU out.
    pub fn disable(&mut self, reason: &str) -> Change {
        self.reason = Some(reason.to_string());
        self.until_ms = None;
        if self.state == GpuHealth::Disabled {
            return Change::None;
        }
        self.state = GpuHealth::Disabled;
        Change::Disabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a table: at `t` ms, do this.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Fault(i64),
        Tick(i64),
        Enable,
        Disable,
    }

    #[test]
    fn transitions_and_backoff() {
        use GpuHealth::*;
        use Step::*;
        let policy = HealthPolicy {
            backoff_ms: 1_000,
            max_backoff_ms: 3_000,
            window_ms: 10_000,
            disable_after: 3,
        };
        // (steps, the change of the last step, state after, faults after)
        let cases: Vec<(Vec<Step>, Change, GpuHealth, u32)> = vec![
            (vec![], Change::None, Healthy, 0),
            (
                vec![Fault(0)],
                Change::BackedOff { until_ms: 1_000 },
                BackingOff,
                1,
            ),
            // Not yet over.
            (vec![Fault(0), Tick(999)], Change::None, BackingOff, 1),
            (vec![Fault(0), Tick(1_000)], Change::Recovered, Healthy, 1),
            // A second fault in the window doubles the back-off.
            (
                vec![Fault(0), Tick(1_000), Fault(2_000)],
                Change::BackedOff { until_ms: 4_000 },
                BackingOff,
                2,
            ),
            // A fault outside the window starts again from one.
            (
                vec![Fault(0), Tick(1_000), Fault(20_000)],
                Change::BackedOff { until_ms: 21_000 },
                BackingOff,
                1,
            ),
            // The third fault in the window takes it out; time does not bring it back.
            (
                vec![Fault(0), Fault(100), Fault(200)],
                Change::Disabled,
                Disabled,
                3,
            ),
            (
                vec![Fault(0), Fault(100), Fault(200), Tick(1_000_000)],
                Change::None,
                Disabled,
                3,
            ),
            (
                vec![Fault(0), Fault(100), Fault(200), Fault(300)],
                Change::None,
                Disabled,
                4,
            ),
            // Only an operator does.
            (
                vec![Fault(0), Fault(100), Fault(200), Enable],
                Change::Enabled,
                Healthy,
                0,
            ),
            (vec![Enable], Change::None, Healthy, 0),
            (vec![Disable], Change::Disabled, Disabled, 0),
            (vec![Disable, Tick(1_000_000)], Change::None, Disabled, 0),
            (vec![Disable, Enable], Change::Enabled, Healthy, 0),
            // The back-off is capped.
            (
                vec![Fault(0), Tick(1_000), Fault(1_000), Tick(3_000)],
                Change::Recovered,
                Healthy,
                2,
            ),
        ];
        let capped = HealthPolicy {
            disable_after: 10,
            window_ms: 1_000_000,
            ..policy
        };
        let mut h = Health::default();
        for t in [0, 1, 2, 3, 4] {
            h.fault(t * 5_000, "x", &capped);
        }
        assert_eq!(h.until_ms(), Some(20_000 + 3_000), "capped at max_backoff");
        for (steps, change, state, faults) in cases {
            let mut h = Health::default();
            let mut last = Change::None;
            for s in &steps {
                last = match *s {
                    Fault(t) => h.fault(t, "CUDA_ERROR_ILLEGAL_ADDRESS", &policy),
                    Tick(t) => h.tick(t),
                    Enable => h.enable(),
                    Disable => h.disable("operator"),
                };
            }
            assert_eq!(
                (last, h.state(), h.faults()),
                (change, state, faults),
                "{steps:?}"
            );
            assert_eq!(h.usable(), state == Healthy);
        }
    }
}
