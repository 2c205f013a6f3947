//! The `test-pattern` source: colour bars, a sweeping marker, a running clock and a
//! frame counter, so anyone can see live motion and measure delay without a camera.
//!
//! It renders and encodes in a blocking thread at the configured interval, and only
//! while somebody watches: after `IDLE_GRACE` without demand it stops until the next
//! viewer or snapshot request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::time::MissedTickBehavior;

use crate::canvas::Canvas;
use crate::frame;
use crate::hub::Stream;
use crate::intake::Intake;
use crate::shutdown::Shutdown;

/// How long frames keep coming after the last viewer leaves, so a page reload
/// does not pay for a cold start.
pub const IDLE_GRACE: Duration = Duration::from_secs(5);

/// 75% colour bars: white, yellow, cyan, green, magenta, red, blue.
const BARS: [[u8; 3]; 7] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
];

pub struct TestPattern {
    canvas: Canvas,
    frame_no: u64,
    label: String,
}

impl TestPattern {
    pub fn new(width: u32, height: u32, quality: u8) -> TestPattern {
        TestPattern {
            canvas: Canvas::new(width as usize, height as usize),
            frame_no: 0,
            label: format!("{width}X{height} Q{quality}"),
        }
    }

    /// Draws the next picture for wall-clock time `now`.
    pub fn render(&mut self, now: SystemTime) -> &Canvas {
        self.frame_no += 1;
        let (w, h) = (self.canvas.width, self.canvas.height);
        let c = &mut self.canvas;
        let bars_h = h * 2 / 3;
        for (i, color) in BARS.iter().enumerate() {
            let x0 = i * w / BARS.len();
            let x1 = (i + 1) * w / BARS.len();
            c.fill(x0, 0, x1 - x0, bars_h, *color);
        }
        // A grey ramp below the bars with a marker sweeping across it once every 4 s.
        let ramp_h = h - bars_h;
        for x in 0..w {
            let v = (x * 255 / w.max(1)) as u8;
            c.fill(x, bars_h, 1, ramp_h, [v, v, v]);
        }
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let phase = (since_epoch.as_millis() % 4000) as usize;
        let marker_w = (w / 20).max(2);
        let marker_x = phase * (w - marker_w) / 4000;
        c.fill(marker_x, bars_h, marker_w, ramp_h, [255, 64, 0]);

        let secs = since_epoch.as_secs();
        let clock = format!(
            "{:02}:{:02}:{:02}.{} UTC",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            since_epoch.subsec_millis() / 100
        );
        let scale = (h / 100).max(1);
        c.caption(h / 10, "KINDERCAM", scale, [255, 255, 255]);
        // As large as fits: the clock is what shows the picture is live.
        let clock_scale = (scale * 2)
            .min((w * 9 / 10) / Canvas::text_width(&clock, 1))
            .max(1);
        c.caption(h / 3, &clock, clock_scale, [255, 255, 255]);
        let counter = format!("#{:06}  {}", self.frame_no, self.label);
        c.caption(bars_h + ramp_h / 3, &counter, scale, [255, 255, 0]);
        &self.canvas
    }

    pub fn frame_no(&self) -> u64 {
        self.frame_no
    }
}

/// Feeds `stream` until shutdown, idling while nobody watches.
pub async fn run(
    stream: Arc<Stream>,
    width: u32,
    height: u32,
    quality: u8,
    interval: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut state = Some((
        TestPattern::new(width, height, quality),
        Intake::encoding(stream.clone(), "test pattern", quality)?,
    ));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = stream.wanted() => {}
        }
        tracing::debug!(
            stream = stream.name(),
            "test pattern starts: somebody watches"
        );
        let mut ticker = tokio::time::interval(interval);
        // Only the freshest frame matters: after a stall, skip missed ticks.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut unwanted_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if stream.demand_count() == 0 {
                let since = *unwanted_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= IDLE_GRACE {
                    tracing::debug!(stream = stream.name(), "test pattern idles: nobody watches");
                    break;
                }
            } else {
                unwanted_since = None;
            }
            let (mut pattern, mut intake) =
                state.take().expect("state is returned after each frame");
            // Render+encode must finish in bounded time; if it never does (or never gets
            // a blocking thread), the watchdog stops pinging and systemd restarts us.
            let busy = stream.heartbeat().begin();
            let joined = tokio::task::spawn_blocking(move || {
                let drawn = SystemTime::now();
                let canvas = pattern.render(drawn);
                let result = intake
                    .rgb(&canvas.pixels, canvas.width, canvas.height)
                    .map(|frame| frame.captured_at(frame::ms_of(drawn)));
                (pattern, intake, result)
            })
            .await;
            let (pattern, intake, result) = match joined {
                Ok(done) => done,
                Err(e) => {
                    // A panic in render or encode: no more frames will come, so the
                    // unit stays "running" and the watchdog gets the daemon restarted.
                    busy.abandon();
                    return Err(e).context("test pattern encoder thread failed");
                }
            };
            drop(busy);
            state = Some((pattern, intake));
            // A frame intake refused is counted and logged there.
            if let Ok(frame) = result {
                stream.publish(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_frames_differ_and_count_up() {
        let mut p = TestPattern::new(160, 120, 75);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = p.render(t0).pixels.clone();
        let b = p.render(t0 + Duration::from_millis(500)).pixels.clone();
        assert_eq!(p.frame_no(), 2);
        assert_ne!(a, b, "the picture moves");
    }
}
