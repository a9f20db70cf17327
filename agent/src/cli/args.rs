//! Argument conversions shared by several CLI commands (a leaf module: commands import it,
//! it imports no command).

use crate::duration::Dur;
use std::time::Duration;

/// A CLI duration as the CA's signed duration.
pub(crate) fn ttl(d: Dur) -> anyhow::Result<time::Duration> {
    if d.0 == Duration::ZERO {
        anyhow::bail!("--ttl must be positive");
    }
    Ok(time::Duration::try_from(d.0)?)
}
