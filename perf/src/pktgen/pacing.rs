//! Rate pacing for the in-kernel transmitter.
//!
//! The kernel sends a whole `BPF_PROG_TEST_RUN` call (its `repeat` count) as
//! fast as it can, so a rate is kept by choosing how many frames each call
//! may send: the credit is `rate * elapsed - sent`, capped at one chunk
//! (about [`CHUNK_TIME_NS`] worth of frames, never below [`MIN_CHUNK`]). The
//! average rate is exact over any window longer than a chunk; inside a
//! chunk the frames leave in a burst at the kernel's speed. Rate 0 means as
//! fast as possible: every call sends a full [`UNPACED_CHUNK`]. A paced run
//! that falls behind (slow calls) catches up with bigger calls, up to
//! [`MAX_CATCH_UP`] chunks each.

/// Frames per call when unpaced (the kernel loop stops early on a signal).
pub const UNPACED_CHUNK: u32 = 1 << 24;
/// Target duration of one paced chunk.
pub const CHUNK_TIME_NS: u64 = 1_000_000;
/// Smallest paced chunk (one live-frames batch).
pub const MIN_CHUNK: u64 = 64;
/// A paced call sends at most this many chunks when it has fallen behind
/// (each test-run call costs the kernel an XDP dispatcher swap, which can
/// take longer than a chunk on a VM).
pub const MAX_CATCH_UP: u128 = 64;

/// The pacing state of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    /// Frames per second, 0 = unlimited.
    pub rate: u64,
    /// Stop after this many frames (`u64::MAX`: no limit).
    pub count: u64,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this many frames now.
    Send(u32),
    /// Nothing is due yet; sleep this long.
    Sleep(u64),
    /// `count` frames have been sent.
    Done,
}

impl Pacer {
    /// Frames per paced chunk.
    pub fn chunk(&self) -> u64 {
        (self.rate.saturating_mul(CHUNK_TIME_NS) / 1_000_000_000).max(MIN_CHUNK)
    }

    /// The next step after `sent` frames and `elapsed_ns` since the start.
    pub fn next(&self, sent: u64, elapsed_ns: u64) -> Step {
        let left = self.count.saturating_sub(sent);
        if left == 0 {
            return Step::Done;
        }
        if self.rate == 0 {
            return Step::Send(clamp_u32(left.min(u64::from(UNPACED_CHUNK))));
        }
        // Frames allowed so far: rate * elapsed, in u128 so hours at Gpps fit.
        let allowed = u128::from(self.rate) * u128::from(elapsed_ns) / 1_000_000_000;
        let due = allowed.saturating_sub(u128::from(sent));
        let chunk = u128::from(self.chunk().min(left));
        if due >= chunk {
            // Behind (a slow call, a preemption): catch up, at most MAX_CATCH_UP chunks at once.
            let n = due.min(u128::from(left)).min(chunk * MAX_CATCH_UP);
            return Step::Send(clamp_u32(u64::try_from(n).unwrap_or(u64::MAX)));
        }
        // Sleep until a whole chunk is due.
        let missing = chunk - due;
        let ns = missing * 1_000_000_000 / u128::from(self.rate);
        Step::Sleep(u64::try_from(ns).unwrap_or(u64::MAX).max(1))
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulate a run where every call takes `call_ns` per frame.
    fn simulate(p: Pacer, until_ns: u64, ns_per_frame: u64) -> (u64, u64) {
        let (mut sent, mut t, mut calls) = (0u64, 0u64, 0u64);
        while t < until_ns {
            match p.next(sent, t) {
                Step::Send(n) => {
                    sent += u64::from(n);
                    t += u64::from(n) * ns_per_frame;
                    calls += 1;
                }
                Step::Sleep(ns) => t += ns,
                Step::Done => break,
            }
        }
        (sent, calls)
    }

    #[test]
    fn paced_rate_is_kept_on_average() {
        // 100 kpps for 1 s with a kernel that could do 5 Mpps.
        let p = Pacer {
            rate: 100_000,
            count: u64::MAX,
        };
        assert_eq!(p.chunk(), 100);
        let (sent, calls) = simulate(p, 1_000_000_000, 200);
        assert!((99_000..=101_000).contains(&sent), "sent {sent}");
        assert!((900..=1100).contains(&calls), "calls {calls}");
    }

    #[test]
    fn small_rates_use_the_minimum_chunk() {
        let p = Pacer {
            rate: 1000,
            count: u64::MAX,
        };
        assert_eq!(p.chunk(), MIN_CHUNK);
        assert_eq!(p.next(0, 0), Step::Sleep(64_000_000));
        assert_eq!(p.next(0, 64_000_000), Step::Send(64));
        let (sent, _) = simulate(p, 10_000_000_000, 200);
        assert!((9_900..=10_064).contains(&sent), "sent {sent}");
    }

    #[test]
    fn count_stops_exactly() {
        let p = Pacer {
            rate: 0,
            count: 1000,
        };
        assert_eq!(p.next(0, 0), Step::Send(1000));
        assert_eq!(p.next(1000, 5), Step::Done);
        let p = Pacer {
            rate: 1_000_000,
            count: 2500,
        };
        let (sent, calls) = simulate(p, u64::MAX / 2, 100);
        assert_eq!(sent, 2500);
        assert_eq!(calls, 3); // 1000 + 1000 + 500
    }

    #[test]
    fn a_late_caller_catches_up_in_bounded_steps() {
        // 1 Mpps, chunk 1000; the caller comes back 10 ms late: 10000 due.
        let p = Pacer {
            rate: 1_000_000,
            count: u64::MAX,
        };
        assert_eq!(p.next(0, 10_000_000), Step::Send(10_000));
        // 1 s late: capped at 64 chunks.
        assert_eq!(p.next(0, 1_000_000_000), Step::Send(64_000));
    }

    #[test]
    fn unpaced_sends_big_chunks() {
        let p = Pacer {
            rate: 0,
            count: u64::MAX,
        };
        assert_eq!(p.next(0, 0), Step::Send(UNPACED_CHUNK));
        assert_eq!(p.next(123, 456), Step::Send(UNPACED_CHUNK));
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let p = Pacer {
            rate: u64::MAX,
            count: u64::MAX,
        };
        assert!(matches!(p.next(0, u64::MAX), Step::Send(_)));
    }
}
