//! The hub's figures per stream, read from the hub at scrape time: its viewers
//! by transport, its frame and byte counters, whether its source is up, and
//! intake's encode and mask times. A stream forgotten to make room for another
//! (see `Hub::stream`) takes its counters with it; Prometheus reads a counter
//! that starts again from zero as a reset.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::hub::{Hub, StreamCounters, Transport};

pub struct StreamCollector(pub Arc<Hub>);

/// By hand, without the hub: see `ServerCollector`'s.
impl std::fmt::Debug for StreamCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamCollector")
    }
}

/// A per-stream counter: its name, help, unit and how to read it.
struct StreamCounter {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    read: fn(&StreamCounters) -> u64,
}

const COUNTERS: [StreamCounter; 6] = [
    StreamCounter {
        name: "kindercam_frames_published",
        help: "Frames published to the stream by its source",
        unit: None,
        read: |c| c.frames_published,
    },
    StreamCounter {
        name: "kindercam_frames_sent",
        help: "Frames sent to the stream's viewers, summed over viewers",
        unit: None,
        read: |c| c.frames_sent,
    },
    StreamCounter {
        name: "kindercam_frames_skipped",
        help: "Frames a viewer never got because a newer one replaced them first, summed over viewers",
        unit: None,
        read: |c| c.frames_skipped,
    },
    StreamCounter {
        name: "kindercam_frames_spliced",
        help: "Frames the kernel took from the fan-out's pipe by reference instead of a copy per viewer, summed over viewers",
        unit: None,
        read: |c| c.frames_spliced,
    },
    StreamCounter {
        name: "kindercam_frames_dropped",
        help: "Frames from the source refused as broken or that could not be masked",
        unit: None,
        read: |c| c.frames_dropped,
    },
    StreamCounter {
        name: "kindercam_video_sent",
        help: "Bytes of frames (and their meta) written to the stream's video viewers, without framing",
        unit: Some(Unit::Bytes),
        read: |c| c.bytes_sent,
    },
];

impl Collector for StreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams: Vec<_> = self
            .0
            .streams()
            .into_iter()
            .map(|s| {
                let counters = s.counters();
                (s, counters)
            })
            .collect();

        let mut viewers = encoder.encode_descriptor(
            "kindercam_viewers",
            "Viewers connected now, by stream and transport",
            None,
            MetricType::Gauge,
        )?;
        for (stream, counters) in &streams {
            for transport in Transport::ALL {
                let labels = [("stream", stream.name()), ("transport", transport.label())];
                let n = counters.viewers[transport as usize] as i64;
                ConstGauge::new(n).encode(viewers.encode_family(&labels)?)?;
            }
        }

        let mut up = encoder.encode_descriptor(
            "kindercam_source_up",
            "1 while the stream has a live source, else 0",
            None,
            MetricType::Gauge,
        )?;
        for (stream, counters) in &streams {
            let labels = [("stream", stream.name())];
            ConstGauge::new(i64::from(counters.source_up)).encode(up.encode_family(&labels)?)?;
        }

        for counter in &COUNTERS {
            let mut family = encoder.encode_descriptor(
                counter.name,
                counter.help,
                counter.unit.as_ref(),
                MetricType::Counter,
            )?;
            for (stream, counters) in &streams {
                let labels = [("stream", stream.name())];
                let value = (counter.read)(counters);
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }

        let histograms = [
            (
                "kindercam_encode_duration",
                "Time to encode one raw picture to JPEG",
                true,
            ),
            (
                "kindercam_mask_duration",
                "Time to burn the privacy mask into one frame",
                false,
            ),
        ];
        for (name, help, encode) in histograms {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (stream, _) in &streams {
                let labels = [("stream", stream.name())];
                let timings = stream.timings();
                let histogram = if encode {
                    &timings.encode
                } else {
                    &timings.mask
                };
                histogram.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
