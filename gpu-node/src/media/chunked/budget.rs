//! A title's bits shared over its chunks (global rate control): each chunk's share follows its
//! measured complexity (the size a fast first pass gave it), and every chunk that starts is
//! aimed with what the finished chunks show — the bits left after what they spent, and how far
//! the encoder has been landing from its aim. `bitrate` and `size` targets are thereby met on
//! the whole title, not per chunk.

use kiln_protocol::video::MIN_VIDEO_BPS;

/// How far the encoder's landing from its aim is trusted to correct the next aims.
const MAX_CORRECTION: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    /// Aimed at this many bits.
    Running {
        aim: f64,
    },
    Done {
        aim: f64,
        spent: f64,
    },
}

/// The bits of one title over its chunks.
#[derive(Debug, Clone)]
pub struct Budget {
    total_bits: f64,
    weights: Vec<f64>,
    secs: Vec<f64>,
    states: Vec<State>,
}

impl Budget {
    /// `total_bits` of video over chunks lasting `secs`, weighted by `weights` (a first pass's
    /// sizes; a chunk measured at nothing still gets a floor share).
    pub fn new(total_bits: f64, weights: &[f64], secs: &[f64]) -> Self {
        assert_eq!(weights.len(), secs.len());
        let mean = weights.iter().sum::<f64>() / weights.len().max(1) as f64;
        Self {
            total_bits,
            weights: weights
                .iter()
                .map(|w| w.max(mean * 0.05).max(1.0))
                .collect(),
            secs: secs.iter().map(|s| s.max(1e-3)).collect(),
            states: vec![State::Pending; weights.len()],
        }
    }

    /// Spent over aimed, over the finished chunks (1 before any finished).
    fn landing(&self) -> f64 {
        let (aim, spent) = self.states.iter().fold((0.0, 0.0), |(a, s), st| match st {
            State::Done { aim, spent } => (a + aim, s + spent),
            _ => (a, s),
        });
        if aim > 0.0 {
            (spent / aim).clamp(1.0 / MAX_CORRECTION, MAX_CORRECTION)
        } else {
            1.0
        }
    }

    /// Start chunk `i`: the bits per second to aim it at. The bits left (the total less what
    /// finished chunks spent and what running ones are expected to) are shared over the chunks
    /// not yet started by weight, then divided by how far encodes have been landing over their
    /// aim.
    pub fn start(&mut self, i: usize) -> f64 {
        let landing = self.landing();
        let mut committed = 0.0;
        let mut pending_weight = 0.0;
        for (j, st) in self.states.iter().enumerate() {
            match *st {
                State::Done { spent, .. } => committed += spent,
                State::Running { aim } => committed += aim * landing,
                State::Pending => pending_weight += self.weights[j],
            }
        }
        if self.states[i] != State::Pending {
            pending_weight += self.weights[i];
        }
        let left = (self.total_bits - committed).max(0.0);
        let share = left * self.weights[i] / pending_weight.max(f64::MIN_POSITIVE);
        let bps = (share / landing / self.secs[i]).max(MIN_VIDEO_BPS);
        self.states[i] = State::Running {
            aim: bps * self.secs[i],
        };
        bps
    }

    /// Chunk `i` finished having spent `bits`.
    pub fn finish(&mut self, i: usize, bits: f64) {
        let aim = match self.states[i] {
            State::Running { aim } | State::Done { aim, .. } => aim,
            State::Pending => bits,
        };
        self.states[i] = State::Done { aim, spent: bits };
    }

    /// Chunk `i` is to be encoded again (its encode failed or was off): back to pending.
    pub fn reset(&mut self, i: usize) {
        self.states[i] = State::Pending;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_complexity() {
        // 4 chunks of 10 s, the third three times as complex: 12 Mbit over them.
        let mut b = Budget::new(12e6, &[1.0, 1.0, 3.0, 1.0], &[10.0; 4]);
        let bps: Vec<f64> = (0..4).map(|i| b.start(i)).collect();
        assert_eq!(bps, [200e3, 200e3, 600e3, 200e3]);
    }

    #[test]
    fn finished_chunks_correct_the_ones_left() {
        // Two chunks of equal weight, run one after the other.
        let mut b = Budget::new(10e6, &[1.0, 1.0], &[10.0, 10.0]);
        assert_eq!(b.start(0), 500e3);
        // The encoder overshot by 20 %: 6 Mbit spent, 4 left. The next is aimed at 4 Mbit
        // divided by the 1.2 the encoder is landing over.
        b.finish(0, 6e6);
        let next = b.start(1);
        assert!((next - 4e6 / 1.2 / 10.0).abs() < 1e-6, "{next}");
        // Had it landed as aimed, the rest would be aimed at the rest.
        let mut b = Budget::new(10e6, &[1.0, 1.0], &[10.0, 10.0]);
        b.start(0);
        b.finish(0, 5e6);
        assert_eq!(b.start(1), 500e3);
    }

    #[test]
    fn running_chunks_count_as_spent_at_their_aim() {
        // Slots run chunks 0 and 1 together; 0 finishes on aim; 2 shares what 1 leaves.
        let mut b = Budget::new(9e6, &[1.0, 1.0, 1.0], &[10.0; 3]);
        assert_eq!(b.start(0), 300e3);
        assert_eq!(b.start(1), 300e3);
        b.finish(0, 3e6);
        assert_eq!(b.start(2), 300e3);
    }

    #[test]
    fn a_spent_budget_still_gives_every_chunk_the_floor() {
        let mut b = Budget::new(1e6, &[1.0, 1.0], &[10.0, 10.0]);
        b.start(0);
        b.finish(0, 5e6);
        assert_eq!(b.start(1), MIN_VIDEO_BPS);
        // A chunk a first pass measured at nothing (a black stretch) still gets a share.
        let mut b = Budget::new(10e6, &[0.0, 1.0], &[10.0, 10.0]);
        assert!(b.start(0) > MIN_VIDEO_BPS);
    }

    #[test]
    fn a_chunk_encoded_again_is_aimed_again() {
        let mut b = Budget::new(4e6, &[1.0, 1.0], &[10.0, 10.0]);
        b.start(0);
        b.start(1);
        b.reset(1);
        b.finish(0, 2e6);
        assert_eq!(b.start(1), 200e3);
    }
}
