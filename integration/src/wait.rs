//! Bounded waiting: poll a condition until it holds, with a limit in time and in count.

use crate::error::{HarnessError, Result};
use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Some`, sleeping 10 ms, then up to 200 ms, between tries;
/// gives up after `timeout` (and after 10,000 tries whatever the clock says). An `Err` from
/// `probe` stops the wait at once. On timeout the error names `what`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut step = Duration::from_millis(10);
    for _ in 0..10_000 {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(200));
    }
    Err(HarnessError::Timeout {
        what: what.to_string(),
        waited: start.elapsed(),
    })
}
