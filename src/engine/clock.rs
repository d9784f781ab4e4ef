//! Time, injected: the system clock in production, a shifted one for the demo and tests.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Real time moved by a settable offset: durations stay real while "now" is any instant
/// (e.g. a Tuesday 10:05 in New York, to show the production window).
pub struct ShiftedClock {
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    pub fn at(instant: DateTime<Utc>) -> ShiftedClock {
        let c = ShiftedClock { offset_ms: AtomicI64::new(0) };
        c.set(instant);
        c
    }

    /// From now on, "now" is `instant` (and keeps moving).
    pub fn set(&self, instant: DateTime<Utc>) {
        self.offset_ms.store(instant.timestamp_millis() - Utc::now().timestamp_millis(), Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}
