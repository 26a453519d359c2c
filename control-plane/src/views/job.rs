//! The job document: what `/status/{id}`, `/jobs/{id}`, lists, batches and webhooks show of a
//! job, built from its row and its typed spec (never from the stored JSON read as untyped
//! values, so a renamed protocol field fails to compile instead of turning into `null`).

use kiln_gpu_node::imaging::OutputFormat;
use kiln_protocol::video::BYTES_PER_MB;
use kiln_protocol::{
    ChunkCounts, Container, EncodeReport, JobErrorCode, JobSpec, RateControl, Task, VmafReport,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{JobRow, JobStatus};
use crate::time::rfc3339;

/// A job: one source, one output.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub id: String,
    pub batch_id: Option<String>,
    /// `video` or `image`.
    pub kind: String,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    /// 0–100.
    pub progress: f64,
    /// Frames per second of the running encode.
    pub fps: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// A title encoded in chunks: how many are done, running, queued, and how many tries failed
    /// and ran again — live while it encodes, final once it is done (the chunks themselves
    /// are listed in `encoding.chunks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkCounts>,
    pub input: JobInput,
    pub input_size: i64,
    pub output_size: Option<i64>,
    /// Input size / output size.
    pub compression_ratio: Option<f64>,
    pub codec: Option<String>,
    /// crf, bitrate, size, vmaf or encoder_crf.
    pub method: Option<String>,
    pub quality: Option<i64>,
    /// For `encoder_crf` outputs: the CRF on the encoder's own scale.
    pub encoder_crf: Option<i64>,
    /// kbps, for `bitrate` outputs.
    pub bitrate: Option<i64>,
    /// Bytes, for `size` outputs.
    pub target_size: Option<i64>,
    /// The VMAF a `target_vmaf` output asked for.
    pub target_vmaf: Option<f64>,
    /// For `target_vmaf` outputs once done: `achieved` is the whole output's VMAF
    /// (vmaf_v0.6.1, pooled mean) measured against the source.
    pub vmaf: Option<VmafReport>,
    /// The output's extension (`mp4`, `webm`, `mkv`, `jpg`, …).
    pub format: String,
    pub output: Option<JobOutput>,
    /// How the output was made (encoder, decoder, hardware, passes…).
    pub encoding: Option<EncodeReport>,
    pub download_url: Option<String>,
    pub signed_download_url: Option<String>,
    pub expires_at: Option<String>,
    /// When an S3 destination was asked for.
    pub destination: Option<DestinationView>,
    pub credits_charged: i64,
    pub attempts: i64,
    pub node_id: Option<String>,
    pub dead_letter: bool,
    pub error: Option<JobError>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Pending jobs, on a single job's document: why no node has taken it, if no live node
    /// can (null when one can).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub waiting_reason: Option<Option<String>>,
    /// Jobs with a webhook, on a single job's document: the URL and every delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
    /// Ladder jobs, once completed: where players fetch the manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming: Option<StreamingView>,
    /// Jobs whose output is a folder (ladders, thumbnails, storyboards), once completed: the
    /// entry file (manifest, `thumbnails.json`, `storyboard.vtt`) and the folder, keyed and
    /// signed; every file the entry names lies in the folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesView>,
    /// Video jobs with edits: the trim, crop, watermark and subtitles asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditView>,
}

/// A video job's edits, as asked (the crop before it is fitted to even pixels).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EditView {
    /// Seconds into the source where the output starts and ends.
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// `x,y,width,height` or an aspect such as `9:16`.
    pub crop: Option<String>,
    pub crop_gravity: Option<String>,
    pub watermark: Option<WatermarkView>,
    /// Whether subtitles are burned in.
    pub subtitles: bool,
}

/// Where and how a watermark is laid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WatermarkView {
    pub position: String,
    pub margin: u32,
    pub opacity: f32,
    /// Fraction of the output width; absent keeps the image's size.
    pub width: Option<f32>,
}

fn edit_view(e: &kiln_protocol::edit::Edit) -> Option<EditView> {
    use kiln_protocol::edit::Crop;
    if e.is_empty() {
        return None;
    }
    let (crop, crop_gravity) = match e.crop {
        Some(Crop::Rect {
            x,
            y,
            width,
            height,
        }) => (Some(format!("{x},{y},{width},{height}")), None),
        Some(Crop::Aspect { num, den, gravity }) => (
            Some(format!("{num}:{den}")),
            Some(gravity.as_str().to_string()),
        ),
        None => (None, None),
    };
    Some(EditView {
        start: e.start_s,
        end: e.end_s,
        crop,
        crop_gravity,
        watermark: e.watermark.as_ref().map(|w| WatermarkView {
            position: w.position.as_str().to_string(),
            margin: w.margin_px,
            opacity: w.opacity,
            width: w.width_fraction,
        }),
        subtitles: e.subtitles.is_some(),
    })
}

/// Where an output folder's files are fetched.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilesView {
    pub entry_url: String,
    pub signed_entry_url: Option<String>,
    /// The signed folder, ending in `/`: append a file name.
    pub signed_base_url: Option<String>,
}

/// A completed ladder's manifests: with a key, and signed (no key; every segment a manifest
/// names resolves under the same signed path, so a browser player can use it as is).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamingView {
    pub hls_url: Option<String>,
    pub dash_url: Option<String>,
    pub signed_hls_url: Option<String>,
    pub signed_dash_url: Option<String>,
}

/// The source as received.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobInput {
    pub filename: Option<String>,
    pub size_bytes: i64,
}

/// A completed job's output.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobOutput {
    pub filename: String,
    pub size_bytes: Option<i64>,
    /// Percent smaller than the input (Konvrt's meaning).
    pub compression_ratio: Option<i64>,
    pub download_url: Option<String>,
    /// Works without a key until `expires_at`.
    pub signed_download_url: Option<String>,
    pub expires_at: Option<String>,
    pub expired: bool,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub duration: Option<f64>,
    pub format: String,
    pub size: Option<i64>,
}

/// A job's failure.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobError {
    /// A stable code: decode_failed, invalid_media, …, source_limit_exceeded,
    /// time_budget_exceeded, cancelled, dead_letter.
    pub code: String,
    pub message: String,
}

/// Where the copy to the caller's bucket stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationView {
    /// delivered or failed.
    pub status: String,
    pub error: Option<String>,
}

/// A job's webhook and its deliveries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub url: String,
    pub deliveries: Vec<crate::webhooks::Delivery>,
}

impl JobRow {
    /// The stored spec, typed (`None` only for a row written by a Kiln that no longer parses).
    pub fn job_spec(&self) -> Option<JobSpec> {
        serde_json::from_str(&self.spec).ok()
    }

    /// What the job writes: its extension and Content-Type.
    pub fn output_format(&self) -> (&'static str, &'static str) {
        output_format(self.job_spec().as_ref())
    }

    /// For a ladder: the folder its output tree lies in (`outputs/<id>`); `None` for a job
    /// whose output is one object.
    pub fn output_tree(&self) -> Option<String> {
        match self.job_spec()?.task {
            Task::Ladder(_) | Task::Thumbnails(_) | Task::Storyboard(_) => {
                self.output_key.rsplit_once('/').map(|(p, _)| p.to_string())
            }
            _ => None,
        }
    }

    /// The source's file name without its extension, if the job has one.
    pub fn input_stem(&self) -> Option<String> {
        self.input_name
            .as_deref()
            .and_then(|n| std::path::Path::new(n).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    }

    /// The file-name stem downloads are offered under (the upload's name, made header-safe).
    pub fn download_stem(&self) -> String {
        let stem = self.input_stem().unwrap_or_else(|| self.id.clone());
        stem.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// Whether the output was completed and is past its time (or swept).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.status == JobStatus::Completed
            && (self.swept_at.is_some() || self.expires_at.is_some_and(|e| e <= now_ms))
    }
}

fn output_format(spec: Option<&JobSpec>) -> (&'static str, &'static str) {
    match spec.map(|s| &s.task) {
        Some(Task::Video(p)) => (p.container.extension(), p.container.mime()),
        Some(Task::Ladder(p)) if p.entry_file().ends_with(".m3u8") => {
            ("m3u8", "application/vnd.apple.mpegurl")
        }
        Some(Task::Ladder(_)) => ("mpd", "application/dash+xml"),
        Some(Task::Thumbnails(_)) => ("json", "application/json"),
        Some(Task::Storyboard(_)) => ("vtt", "text/vtt"),
        Some(Task::Chunk(_)) => ("mp4", "video/mp4"),
        Some(Task::Image(p)) => {
            let f = p
                .fields
                .get("format")
                .and_then(|f| OutputFormat::parse(f))
                .unwrap_or(OutputFormat::Jpeg);
            (f.as_str(), f.mime())
        }
        None => {
            let c = Container::default();
            (c.extension(), c.mime())
        }
    }
}

/// What the rate control asked for, as the document's flat fields.
#[derive(Default)]
struct Rate {
    method: Option<&'static str>,
    quality: Option<i64>,
    encoder_crf: Option<i64>,
    bitrate: Option<i64>,
    target_size: Option<i64>,
    target_vmaf: Option<f64>,
}

fn rate(r: &RateControl) -> Rate {
    let method = Some(r.method());
    match *r {
        RateControl::Crf { quality } => Rate {
            method,
            quality: Some(quality.into()),
            ..Rate::default()
        },
        RateControl::EncoderCrf { crf } => Rate {
            method,
            encoder_crf: Some(crf.into()),
            ..Rate::default()
        },
        RateControl::Bitrate { kbps, .. } => Rate {
            method,
            bitrate: Some(kbps.into()),
            ..Rate::default()
        },
        RateControl::Size { target_mb } => Rate {
            method,
            target_size: Some((target_mb * BYTES_PER_MB).round() as i64),
            ..Rate::default()
        },
        RateControl::Vmaf { target } => Rate {
            method,
            target_vmaf: Some(target),
            ..Rate::default()
        },
    }
}

impl JobView {
    /// The document of `job` at `now_ms`; signed links are made with `signing_key`.
    pub fn new(job: &JobRow, signing_key: &str, now_ms: i64) -> Self {
        let spec = job.job_spec();
        let (ext, _) = output_format(spec.as_ref());
        let (codec, rate) = match spec.as_ref().map(|s| &s.task) {
            Some(Task::Video(p)) => (Some(p.codec.as_str().to_string()), self::rate(&p.rate)),
            _ => (None, Rate::default()),
        };
        let report: Option<EncodeReport> = job
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let completed = job.status == JobStatus::Completed;
        let expired = job.is_expired(now_ms);
        let output_size = job.output_size.filter(|_| completed);
        let ratio = output_size
            .filter(|out| *out > 0)
            .map(|out| ((job.input_size as f64 / out as f64) * 100.0).round() / 100.0);
        let saved_percent = output_size
            .filter(|_| job.input_size > 0)
            .map(|out| ((1.0 - out as f64 / job.input_size as f64) * 100.0).round() as i64);
        let error = job
            .error_code
            .as_ref()
            .filter(|_| matches!(job.status, JobStatus::Failed | JobStatus::Cancelled))
            .map(|code| JobError {
                code: code.clone(),
                message: job.error_message.clone().unwrap_or_default(),
            });
        let live = completed && !expired;
        let download = live.then(|| format!("/api/v1/download/{}", job.id));
        let signed = job
            .expires_at
            .filter(|_| live)
            .map(|e| crate::signing::signed_download_path(signing_key, &job.id, e));
        let expires_at = job.expires_at.filter(|_| completed).map(rfc3339);
        let processing = job.status == JobStatus::Processing;
        Self {
            job_id: job.id.clone(),
            id: job.id.clone(),
            batch_id: job.batch_id.clone(),
            kind: job.kind.clone(),
            status: job.status.as_str().to_string(),
            progress: (job.progress * 10.0).round() / 10.0,
            fps: job.fps.filter(|_| processing),
            eta_seconds: job.eta_s.filter(|_| processing),
            chunks: if processing {
                job.chunks_live
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
            } else {
                report
                    .as_ref()
                    .and_then(|r| r.chunks.as_ref())
                    .map(|c| c.counts())
            },
            input: JobInput {
                filename: job.input_name.clone(),
                size_bytes: job.input_size,
            },
            input_size: job.input_size,
            output_size,
            compression_ratio: ratio,
            codec,
            method: rate.method.map(str::to_string),
            quality: rate.quality,
            encoder_crf: rate.encoder_crf,
            bitrate: rate.bitrate,
            target_size: rate.target_size,
            target_vmaf: rate.target_vmaf,
            vmaf: report.as_ref().and_then(|r| r.vmaf.clone()),
            format: ext.to_string(),
            output: completed.then(|| JobOutput {
                filename: format!("{}_compressed.{ext}", job.download_stem()),
                size_bytes: job.output_size,
                compression_ratio: saved_percent,
                download_url: download.clone(),
                signed_download_url: signed.clone(),
                expires_at: expires_at.clone(),
                expired,
                width: job.output_width,
                height: job.output_height,
                duration: job.output_duration,
                format: ext.to_string(),
                size: job.output_size,
            }),
            encoding: report,
            download_url: download,
            signed_download_url: signed,
            expires_at,
            destination: job.destination_status.as_ref().map(|s| DestinationView {
                status: s.clone(),
                error: job.destination_error.clone(),
            }),
            credits_charged: job.credits_charged,
            attempts: job.attempts,
            node_id: job.node_id.clone(),
            dead_letter: job.status == JobStatus::Failed
                && job.error_code.as_deref() == Some(JobErrorCode::DeadLetter.as_str()),
            error,
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            completed_at: job.completed_at.map(rfc3339),
            waiting_reason: None,
            webhook: None,
            streaming: streaming(job, spec.as_ref(), signing_key, live),
            files: files(job, signing_key, live),
            edit: match spec.as_ref().map(|s| &s.task) {
                Some(Task::Video(p)) => edit_view(&p.edit),
                _ => None,
            },
        }
    }
}

fn files(job: &JobRow, signing_key: &str, live: bool) -> Option<FilesView> {
    job.output_tree().filter(|_| live)?;
    let entry = job.output_key.rsplit('/').next()?.to_string();
    let signed = job
        .expires_at
        .map(|e| crate::signing::signed_stream_path(signing_key, &job.id, e, &entry));
    Some(FilesView {
        entry_url: format!("/api/v1/jobs/{}/stream/{entry}", job.id),
        signed_base_url: signed
            .as_ref()
            .map(|s| s.trim_end_matches(entry.as_str()).to_string()),
        signed_entry_url: signed,
    })
}

fn streaming(
    job: &JobRow,
    spec: Option<&JobSpec>,
    signing_key: &str,
    live: bool,
) -> Option<StreamingView> {
    let Some(Task::Ladder(p)) = spec.map(|s| &s.task) else {
        return None;
    };
    if !live {
        return None;
    }
    let has = |pk| p.packaging.contains(&pk);
    let keyed = |file: &str| format!("/api/v1/jobs/{}/stream/{file}", job.id);
    let signed = |file: &str| {
        job.expires_at
            .map(|e| crate::signing::signed_stream_path(signing_key, &job.id, e, file))
    };
    let (hls, dash) = (
        has(kiln_protocol::Packaging::Hls),
        has(kiln_protocol::Packaging::Dash),
    );
    use kiln_protocol::ladder::{DASH_MANIFEST, MASTER_PLAYLIST};
    Some(StreamingView {
        hls_url: hls.then(|| keyed(MASTER_PLAYLIST)),
        dash_url: dash.then(|| keyed(DASH_MANIFEST)),
        signed_hls_url: signed(MASTER_PLAYLIST).filter(|_| hls),
        signed_dash_url: signed(DASH_MANIFEST).filter(|_| dash),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{ImageParams, VideoCodec, VideoParams};

    fn row(task: Task, status: JobStatus) -> JobRow {
        let spec = JobSpec {
            id: "0190a0a0-0000-7000-8000-000000000001".into(),
            attempt: 1,
            source_key: "sources/x".into(),
            output_key: "outputs/x.mp4".into(),
            task,
        };
        JobRow {
            id: spec.id.clone(),
            account_id: "a".into(),
            kind: "video".into(),
            status,
            spec: serde_json::to_string(&spec).unwrap(),
            source_key: spec.source_key.clone(),
            output_key: spec.output_key.clone(),
            input_name: Some("my clip.mov".into()),
            input_size: 1000,
            output_size: Some(250),
            progress: 100.0,
            fps: Some(30.0),
            eta_s: Some(0.0),
            output_width: Some(640),
            output_height: Some(360),
            output_duration: Some(2.0),
            report: None,
            attempts: 1,
            node_id: None,
            error_code: None,
            error_message: None,
            created_at: 0,
            started_at: Some(1),
            completed_at: Some(2),
            batch_id: None,
            webhook_url: None,
            destination_status: None,
            destination_error: None,
            credits_charged: 1,
            expires_at: Some(10_000),
            swept_at: None,
            encode_ms: None,
            gpu: None,
            dialect: None,
            dialect_data: None,
            chunks_live: None,
        }
    }

    #[test]
    fn every_rate_control_shows_its_own_fields() {
        let cases = [
            (RateControl::Crf { quality: 28 }, "crf", "quality", 28.0),
            (
                RateControl::EncoderCrf { crf: 40 },
                "encoder_crf",
                "encoder_crf",
                40.0,
            ),
            (
                RateControl::Bitrate {
                    kbps: 900,
                    max_kbps: None,
                    buffer_kbits: None,
                },
                "bitrate",
                "bitrate",
                900.0,
            ),
            (
                RateControl::Size { target_mb: 2.5 },
                "size",
                "target_size",
                2_500_000.0,
            ),
            (
                RateControl::Vmaf { target: 93.5 },
                "vmaf",
                "target_vmaf",
                93.5,
            ),
        ];
        for (rate, method, field, value) in cases {
            let task = Task::Video(VideoParams {
                rate,
                ..VideoParams::crf(VideoCodec::H265, 23)
            });
            let doc = serde_json::to_value(JobView::new(&row(task, JobStatus::Completed), "k", 0))
                .unwrap();
            assert_eq!(doc["method"], method);
            assert_eq!(doc["codec"], "h265");
            assert_eq!(doc[field].as_f64(), Some(value), "{method}: {doc}");
            for other in [
                "quality",
                "encoder_crf",
                "bitrate",
                "target_size",
                "target_vmaf",
            ] {
                if other != field {
                    assert!(doc[other].is_null(), "{method}: {other} should be null");
                }
            }
        }
    }

    #[test]
    fn completed_pending_and_image_documents() {
        let video = Task::Video(VideoParams::crf(VideoCodec::H264, 23));
        let done = JobView::new(&row(video.clone(), JobStatus::Completed), "k", 0);
        let out = done.output.as_ref().unwrap();
        assert_eq!(out.filename, "my_clip_compressed.mp4");
        assert_eq!(out.compression_ratio, Some(75));
        assert_eq!(done.compression_ratio, Some(4.0));
        assert!(done
            .signed_download_url
            .as_deref()
            .unwrap()
            .contains("signature="));
        assert_eq!(done.fps, None, "fps only while processing");
        // Past its expiry: no links, marked expired.
        let late = JobView::new(&row(video.clone(), JobStatus::Completed), "k", 20_000);
        assert!(late.download_url.is_none() && late.output.unwrap().expired);
        let pending = JobView::new(&row(video, JobStatus::Pending), "k", 0);
        assert!(pending.output.is_none() && pending.output_size.is_none());
        let doc = serde_json::to_value(&pending).unwrap();
        assert!(doc.get("waiting_reason").is_none() && doc.get("webhook").is_none());
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("format".to_string(), "webp".to_string());
        let image = JobView::new(
            &row(Task::Image(ImageParams { fields }), JobStatus::Completed),
            "k",
            0,
        );
        assert_eq!((image.format.as_str(), image.codec), ("webp", None));
        assert_eq!(image.method, None);
    }
}
