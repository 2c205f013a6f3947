//! A clustered relay's figures (`--nats`), read from its [`Cluster`] at scrape
//! time: whether its NATS link is healthy, the round trip through its server,
//! and per stream the frames it published to the cluster and received from it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::cluster::{Cluster, FrameCounts};

/// A per-stream counter: its name, help and how to read it.
type StreamCounter = (&'static str, &'static str, fn(&FrameCounts) -> u64);

#[derive(Debug)]
pub struct ClusterCollector(pub Cluster);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let health = self.0.health();
        let up = [
            (
                "kindercam_cluster_nats_up",
                "1 while the relay's NATS server answers its round trips, else 0",
                health.nats,
            ),
            (
                "kindercam_cluster_jetstream_up",
                "1 while JetStream answers the relay, else 0",
                health.jetstream,
            ),
        ];
        for (name, help, value) in up {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::from(value)).encode(family)?;
        }
        if let Some(ms) = health.rtt_ms {
            let family = encoder.encode_descriptor(
                "kindercam_cluster_rtt",
                "The last round trip through the relay's NATS server",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(ms / 1000.0).encode(family)?;
        }
        let counts = self.0.frame_counts();
        let counters: [StreamCounter; 2] = [
            (
                "kindercam_cluster_frames_published",
                "Frames of the stream this relay published to the cluster",
                |c| c.published,
            ),
            (
                "kindercam_cluster_frames_received",
                "Frames of the stream this relay received from the cluster",
                |c| c.received,
            ),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (stream, c) in &counts {
                let labels = [("stream", stream.as_str())];
                ConstCounter::new(read(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[tokio::test]
    async fn a_relay_reports_its_link_and_its_frames_in_and_out() {
        // No NATS there: the client keeps trying, and the link reads as down.
        let config = crate::config::ClusterConfig {
            nats_urls: vec!["nats://127.0.0.1:9".into()],
            node_name: "relay-1".into(),
        };
        let cluster = Cluster::connect(&config).await.unwrap();
        cluster.count_frame("aula-1", true);
        cluster.count_frame("aula-1", true);
        cluster.count_frame("aula-2", false);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ClusterCollector(cluster)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "kindercam_cluster_nats_up 0",
            "kindercam_cluster_jetstream_up 0",
            "kindercam_cluster_frames_published_total{stream=\"aula-1\"} 2",
            "kindercam_cluster_frames_received_total{stream=\"aula-2\"} 1",
            "kindercam_cluster_frames_received_total{stream=\"aula-1\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(!text.contains("kindercam_cluster_rtt"), "no round trip yet");
    }
}
