//! The emulator's clock: a base clock (the machine's by default) plus an offset that tests move
//! through `POST /emulator/clock`.

use std::sync::{Arc, Mutex};

use tailnet::Clock;
use time::{Duration, OffsetDateTime};

#[derive(Debug)]
pub struct EmuClock {
    base: Arc<dyn Clock>,
    offset: Mutex<Duration>,
}

impl EmuClock {
    pub fn new(base: Arc<dyn Clock>) -> EmuClock {
        EmuClock {
            base,
            offset: Mutex::new(Duration::ZERO),
        }
    }

    fn offset(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn advance(&self, by: Duration) -> OffsetDateTime {
        let mut offset = self.offset();
        *offset = offset.saturating_add(by);
        drop(offset);
        self.now()
    }

    pub fn set(&self, to: OffsetDateTime) -> OffsetDateTime {
        let base = self.base.now();
        *self.offset() = to - base;
        self.now()
    }
}

impl Clock for EmuClock {
    fn now(&self) -> OffsetDateTime {
        let offset = *self.offset();
        self.base.now().saturating_add(offset)
    }
}
