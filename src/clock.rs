//! Injectable wall clock. Credential expiry is wall-clock time (it comes from
//! AWS as a timestamp), so schedules are computed against [`Clock::now`];
//! tests substitute a [`TestClock`] because `tokio::time::pause` does not move
//! `SystemTime`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Source of the current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    /// A test clock starting at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }
    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
    /// Set the clock.
    pub fn set(&self, to: SystemTime) {
        if let Ok(mut t) = self.0.lock() {
            *t = to;
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.0.lock().map(|t| *t).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// A clock that follows tokio's (pausable) time: `start` plus the tokio time
/// elapsed since creation. With `tokio::time::pause`, sleeps auto-advance and
/// this clock moves with them, so refresh schedules can be tested in
/// milliseconds.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: SystemTime,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn new(start: SystemTime) -> Self {
        TokioClock {
            start,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.start + self.base.elapsed()
    }
}
