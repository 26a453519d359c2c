//! Kiln's node: pulls jobs from the queue, runs the media pipeline, reports progress.

pub mod gpu;
pub mod host;
pub mod imaging;
pub mod media;
pub mod metrics;
pub mod node;
pub mod quality;
pub mod worker;
