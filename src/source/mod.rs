//! Frame sources: where the pictures of each camera stream come from. Each source
//! runs on its own and publishes into its hub stream; the rest of the daemon does
//! not know which kind it is.
//!
//! - `test_pattern`: a synthetic picture, no camera needed.
//! - `v4l2`: a V4L2 camera, captured on its own thread.
//! - `pipe`: `exec:COMMAND`, MJPEG read from a child process (Pi CSI cameras).
//!
//! Cameras and commands run under `supervisor`, which opens them only while
//! somebody watches (`--on-demand`), shows the `offline` placeholder when they
//! fail, and retries until they come back.

pub mod offline;
pub mod pipe;
pub mod supervisor;
pub mod test_pattern;
pub mod v4l2;

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};

use self::supervisor::{Limits, Target};
use crate::config::{Camera, Config, Source};
use crate::hub::{Hub, Stream, CAMERA};
use crate::shutdown::Shutdown;

/// Refuses sources this build cannot run, before any listener is bound. A camera
/// that is merely unplugged is not refused: the daemon starts, shows it offline
/// and waits for it.
pub fn check_supported(config: &Config) -> anyhow::Result<()> {
    for camera in &config.capture.cameras {
        match &camera.source {
            Source::TestPattern | Source::Exec(_) => {}
            Source::V4l2(path) => {
                if path.is_dir() {
                    bail!(
                        "source {} of stream {:?} is a directory; give a device such as \
                         /dev/video0 (see kindercam --list-devices)",
                        path.display(),
                        camera.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// Starts every configured camera feeding its stream; they stop on shutdown.
/// Returns the fed streams (the `camera` stream always exists, fed or not).
pub fn spawn(config: &Config, hub: &Hub, shutdown: Shutdown) -> anyhow::Result<Vec<Arc<Stream>>> {
    check_supported(config)?;
    hub.stream(CAMERA).expect("camera is a valid stream name");
    let mut fed = Vec::new();
    for camera in &config.capture.cameras {
        let stream = hub
            .stream(&camera.name)
            .with_context(|| format!("cannot create stream {:?}", camera.name))?;
        spawn_one(config, camera, stream.clone(), shutdown.clone());
        fed.push(stream);
    }
    Ok(fed)
}

fn spawn_one(config: &Config, camera: &Camera, stream: Arc<Stream>, shutdown: Shutdown) {
    let (w, h, q, interval) = (
        camera.width,
        camera.height,
        config.capture.quality,
        config.capture.interval,
    );
    let target = Target {
        stream: stream.clone(),
        on_demand: config.capture.on_demand,
        width: w,
        height: h,
        quality: q,
        label: camera.source.to_string(),
    };
    match &camera.source {
        Source::TestPattern => {
            tokio::spawn(async move {
                if let Err(e) = test_pattern::run(stream, w, h, q, interval, shutdown).await {
                    tracing::error!(error = %e, "test pattern source stopped");
                }
            });
        }
        Source::V4l2(path) => {
            let settings = Arc::new(v4l2::Settings {
                path: path.clone(),
                format: camera.format,
                width: w,
                height: h,
                interval,
                quality: q,
                on_demand: config.capture.on_demand,
            });
            // Remembered across sessions, to find the camera again after a replug.
            let identity = Arc::new(Mutex::new(None));
            tokio::spawn(supervisor::supervise(
                target,
                Limits::default(),
                move || {
                    let (settings, identity, stream) =
                        (settings.clone(), identity.clone(), stream.clone());
                    move |control: Arc<supervisor::Control>| {
                        v4l2::capture(&settings, &stream, &identity, &control)
                    }
                },
                shutdown,
            ));
        }
        Source::Exec(command) => {
            let settings = Arc::new(pipe::Settings {
                command: command.clone(),
                interval,
                on_demand: config.capture.on_demand,
            });
            tokio::spawn(supervisor::supervise(
                target,
                Limits::default(),
                move || {
                    let (settings, stream) = (settings.clone(), stream.clone());
                    move |control: Arc<supervisor::Control>| {
                        pipe::read_pipe(&settings, &stream, &control)
                    }
                },
                shutdown,
            ));
        }
    }
}
