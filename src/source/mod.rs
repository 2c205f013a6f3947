//! Frame sources: where the pictures of the `camera` stream come from. Each source
//! runs on its own and publishes into its hub stream; the rest of the daemon does
//! not know which kind it is.

pub mod test_pattern;

use std::sync::Arc;

use anyhow::bail;

use crate::config::{Config, Source};
use crate::hub::Stream;
use crate::shutdown::Shutdown;

/// Refuses sources this build cannot run, before any listener is bound.
pub fn check_supported(source: &Source) -> anyhow::Result<()> {
    match source {
        Source::TestPattern => Ok(()),
        Source::V4l2(path) => bail!(
            "source {}: V4L2 capture is not supported yet; use --source test-pattern",
            path.display()
        ),
    }
}

/// Starts the configured source feeding `stream`; it stops on shutdown.
pub fn spawn(config: &Config, stream: Arc<Stream>, shutdown: Shutdown) -> anyhow::Result<()> {
    check_supported(&config.source)?;
    let (w, h, q, interval) = (config.width, config.height, config.quality, config.interval);
    tokio::spawn(async move {
        if let Err(e) = test_pattern::run(stream, w, h, q, interval, shutdown).await {
            tracing::error!(error = %e, "test pattern source stopped");
        }
    });
    Ok(())
}
