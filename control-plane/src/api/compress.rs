//! `POST /api/v1/compress`: Konvrt-compatible video submission (multipart `file`, `codec`,
//! `quality`, `resolution`, `method`). The upload streams straight to storage.

use std::collections::HashMap;

use axum::extract::{Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::video::{
    plan_video_bps, BYTES_PER_MB, QUALITY_DEFAULT, QUALITY_MAX, QUALITY_MIN,
};
use kiln_protocol::{
    Container, HardwarePolicy, JobSpec, Preset, RateControl, Resolution, StoreError, Task,
    VideoCodec, VideoParams,
};
use serde_json::json;
use tokio_util::io::StreamReader;

use crate::auth::Auth;
use crate::db::jobs::NewJob;
use crate::error::ApiError;
use crate::AppState;

/// The VMAF targets `target_vmaf` takes: below 40 a search has nothing sensible to find; 99+
/// only lossless-like CRFs reach.
pub const VMAF_TARGET_MIN: f64 = 40.0;
pub const VMAF_TARGET_MAX: f64 = 99.0;

/// Validated settings from the text fields: `codec`, `quality`, `method` (`crf`, `bitrate`,
/// `size`, `vmaf`), `bitrate` / `max_bitrate` / `buffer_size` (kbps, kbit), `target_size_mb`,
/// `target_vmaf`, `encoder_crf` (the encoder's own CRF scale, for tuning),
/// `resolution`, `preset`, `format` (`mp4`, `webm`, `mkv`), `hardware` (`auto`, `cpu`, `gpu`, `nvenc`),
/// `allow_upscale`, `allow_larger`.
pub(crate) fn video_params(fields: &HashMap<String, String>) -> Result<VideoParams, ApiError> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let bad = |m: String| ApiError::BadRequest(m);
    let number = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, ApiError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!(
                    "{k} must be a number from {lo} to {hi}, got {v:?}"
                ))),
            },
        }
    };
    let flag = |k: &str| -> Result<bool, ApiError> {
        match get(k).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(v) => Err(bad(format!("{k} must be true or false, got {v:?}"))),
        }
    };
    let codec = match get("codec") {
        None => VideoCodec::H264,
        Some(c) => VideoCodec::parse(c).ok_or_else(|| {
            bad(format!(
                "unsupported codec {c:?}: supported codecs are h264, h265, av1, vp9"
            ))
        })?,
    };
    let quality = match get("quality") {
        None => QUALITY_DEFAULT,
        Some(q) => match q.parse::<u8>() {
            Ok(v) if (QUALITY_MIN..=QUALITY_MAX).contains(&v) => v,
            _ => {
                return Err(bad(format!(
                    "quality must be a whole number from {QUALITY_MIN} (best) to {QUALITY_MAX} (smallest), got {q:?}"
                )))
            }
        },
    };
    let bitrate = number("bitrate", 16.0, 500_000.0)?;
    let target = number("target_size_mb", 0.001, 1_000_000.0)?;
    let target_vmaf = number("target_vmaf", VMAF_TARGET_MIN, VMAF_TARGET_MAX)?;
    let (_, crf_max) = codec.crf_range();
    let encoder_crf = number("encoder_crf", 0.0, crf_max as f64)?;
    let method = match get("method") {
        Some(m) => m.to_ascii_lowercase(),
        // No method named: the field that was given says which.
        None if target_vmaf.is_some() => "vmaf".into(),
        None if encoder_crf.is_some() => "encoder_crf".into(),
        None if target.is_some() => "size".into(),
        None if bitrate.is_some() => "bitrate".into(),
        None => "crf".into(),
    };
    let rate = match method.as_str() {
        "crf" | "quality" => RateControl::Crf { quality },
        "bitrate" | "abr" | "vbr" => RateControl::Bitrate {
            kbps: bitrate.ok_or_else(|| bad("method bitrate needs `bitrate` (kbps)".into()))?
                as u32,
            max_kbps: number("max_bitrate", 16.0, 1_000_000.0)?.map(|v| v as u32),
            buffer_kbits: number("buffer_size", 16.0, 2_000_000.0)?.map(|v| v as u32),
        },
        "size" | "target_size" => RateControl::Size {
            target_mb: target.ok_or_else(|| bad("method size needs `target_size_mb`".into()))?,
        },
        "vmaf" | "target_vmaf" => RateControl::Vmaf {
            target: target_vmaf.ok_or_else(|| {
                bad(format!(
                    "method vmaf needs `target_vmaf` ({VMAF_TARGET_MIN}–{VMAF_TARGET_MAX})"
                ))
            })?,
        },
        "encoder_crf" => RateControl::EncoderCrf {
            crf: encoder_crf
                .filter(|c| c.fract() == 0.0)
                .ok_or_else(|| {
                    bad(format!(
                        "method encoder_crf needs `encoder_crf`, a whole number from 0 to {crf_max} for {}",
                        codec.as_str()
                    ))
                })? as u8,
        },
        m => {
            return Err(bad(format!(
                "unsupported method {m:?}: supported methods are crf, bitrate, size, vmaf, encoder_crf"
            )))
        }
    };
    if target_vmaf.is_some() && !matches!(rate, RateControl::Vmaf { .. }) {
        return Err(bad(format!(
            "target_vmaf chooses the rate itself and cannot go with method {method}"
        )));
    }
    let preset = get("preset")
        .map(|p| Preset::parse_for(codec, p).map_err(bad))
        .transpose()?;
    let container = match get("format").or(get("container")) {
        None => Container::default_for(codec),
        Some(f) => Container::parse(f)
            .ok_or_else(|| bad(format!("unsupported format {f:?}: use mp4, webm or mkv")))?,
    };
    if !container.holds(codec) {
        return Err(bad(format!(
            "{} cannot hold {}: webm takes av1 or vp9",
            container.extension(),
            codec.as_str()
        )));
    }
    let hardware = match get("hardware") {
        None => HardwarePolicy::Auto,
        Some(h) => HardwarePolicy::parse(h).ok_or_else(|| {
            bad(format!(
                "hardware must be auto, cpu, gpu or nvenc, got {h:?}"
            ))
        })?,
    };
    if hardware == HardwarePolicy::Nvenc && codec.nvenc_encoder().is_none() {
        return Err(bad(format!(
            "hardware=nvenc: there is no NVENC encoder for {} (h264 and h265 have one)",
            codec.as_str()
        )));
    }
    let resolution =
        Resolution::parse(get("resolution").unwrap_or("")).map_err(|e| bad(e.to_string()))?;
    Ok(VideoParams {
        codec,
        rate,
        preset,
        resolution,
        container,
        hardware,
        allow_upscale: flag("allow_upscale")?,
        allow_larger: flag("allow_larger")?,
    })
}

/// `POST /compress` (Konvrt): accept a video, store it, record and enqueue the job: 202
/// with its id. Multipart fields: `file` and the settings above, `webhook_url`,
/// `webhook_events` (comma-separated, e.g. `job.progress`).
#[utoipa::path(post, path = "/api/v1/compress", tag = "konvrt",
    request_body(content_type = "multipart/form-data", description = "`file` and the settings: codec, quality, method, bitrate, target_size_mb, target_vmaf, encoder_crf, resolution, preset, format, hardware, allow_upscale, allow_larger, webhook_url, webhook_events"),
    responses((status = 202, body = crate::api::docs::Accepted),
        (status = 400, body = crate::api::docs::Error), (status = 401, body = crate::api::docs::Error),
        (status = 402, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error),
        (status = 413, body = crate::api::docs::Error), (status = 415, body = crate::api::docs::Error),
        (status = 422, body = crate::api::docs::Error), (status = 429, body = crate::api::docs::Error)))]
pub async fn compress(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let job_id = uuid::Uuid::now_v7().to_string();
    let source_key = format!("sources/{job_id}");

    let result = async {
        let mut upload: Option<(u64, Option<String>)> = None;
        let mut fields = HashMap::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file" {
                if upload.is_some() {
                    return Err(ApiError::BadRequest("send exactly one `file` field".into()));
                }
                upload = Some(store_file_field(&state, field, &source_key).await?);
            } else {
                fields.insert(name.clone(), super::small_field(field, &name).await?);
            }
        }
        let (size, filename) = upload.ok_or_else(|| {
            ApiError::BadRequest(
                "missing `file` field: send the video as multipart form data".into(),
            )
        })?;
        if size == 0 {
            return Err(ApiError::BadRequest("the uploaded file is empty".into()));
        }
        let params = video_params(&fields)?;
        let events: Vec<String> = fields
            .get("webhook_events")
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let (webhook_url, webhook_progress) = super::submit::webhook_options(
            &state,
            fields.get("webhook_url").map(String::as_str),
            &events,
        )?;
        check_media(&state, &source_key, &params).await?;
        let cost = super::submit::job_cost(true, size);
        super::submit::charge(&state, &principal.account_id, 1, cost).await?;

        let params_codec = params.codec.as_str();
        let spec = JobSpec {
            id: job_id.clone(),
            attempt: 1,
            source_key: source_key.clone(),
            output_key: format!("outputs/{job_id}.{}", params.container.extension()),
            task: Task::Video(params),
        };
        let spec_json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
        state
            .db
            .insert_job(&NewJob {
                id: &job_id,
                account_id: &principal.account_id,
                kind: "video",
                spec: &spec_json,
                source_key: &source_key,
                output_key: &spec.output_key,
                input_name: filename.as_deref(),
                input_size: size as i64,
                codec: Some(params_codec),
                batch_id: None,
                webhook_url: webhook_url.as_deref(),
                webhook_progress,
                destination: None,
                credits: cost,
            })
            .await
            .inspect_err(|_| {
                let (state, account) = (state.clone(), principal.account_id.clone());
                tokio::spawn(async move { super::submit::uncharge(&state, &account, cost).await });
            })?;
        if let Err(e) = state.queue.enqueue(&spec).await {
            // Not queued means not accepted: undo the record rather than keep a job that
            // would never run.
            let _ = sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(&job_id)
                .execute(&state.db.pool)
                .await;
            super::submit::uncharge(&state, &principal.account_id, cost).await;
            return Err(ApiError::Unavailable(format!("job queue unavailable: {e}")));
        }
        Ok(cost)
    }
    .await;

    let cost = match result {
        Ok(cost) => cost,
        Err(e) => {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                super::drain(&mut multipart).await;
            }
            if let Err(del) = state.store.delete(&source_key).await {
                tracing::warn!(key = %source_key, error = %del, "could not remove refused upload");
            }
            return Err(e);
        }
    };
    state
        .metrics
        .jobs_submitted
        .with_label_values(&["video"])
        .inc();
    let status_url = format!("/api/v1/status/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        Json(json!({
            "success": true,
            "job_id": job_id,
            "credits_charged": cost,
            "status": "pending",
            "status_url": status_url,
            "message": "Video accepted for processing",
        })),
    )
        .into_response())
}

/// Stream a multipart `file` field into the store at `key` under the upload size limit;
/// returns its size and the client's file name.
pub(crate) async fn store_file_field(
    state: &AppState,
    field: axum::extract::multipart::Field<'_>,
    key: &str,
) -> Result<(u64, Option<String>), ApiError> {
    let filename = field.file_name().map(str::to_string);
    let mut reader = StreamReader::new(field.map_err(std::io::Error::other));
    let size = state
        .store
        .put_stream(key, &mut reader, state.config.max_upload_bytes)
        .await
        .map_err(upload_error)?;
    Ok((size, filename))
}

fn upload_error(e: StoreError) -> ApiError {
    match e {
        StoreError::TooLarge { limit } => {
            ApiError::PayloadTooLarge(format!("upload exceeds the limit of {limit} bytes"))
        }
        StoreError::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<axum::extract::multipart::MultipartError>()) =>
        {
            ApiError::BadRequest(format!("upload interrupted or malformed: {io}"))
        }
        other => ApiError::internal(other),
    }
}

/// Refuse what cannot be done before a job is created, so the caller learns at once: what
/// FFmpeg cannot open, an upscale not allowed, a target size the duration cannot meet.
pub(crate) async fn check_media(
    state: &AppState,
    key: &str,
    params: &VideoParams,
) -> Result<(), ApiError> {
    let Some(path) = state.store.local_path(key) else {
        // Remote stores: the node probes when it runs the job.
        return Ok(());
    };
    let probed = tokio::task::spawn_blocking(move || media::probe(&path))
        .await
        .map_err(ApiError::internal)?;
    let info = match probed {
        Ok(info) => info,
        Err(MediaError::NoVideoStream) => {
            return Err(ApiError::UnsupportedMedia(
                "the uploaded file has no video stream".into(),
            ))
        }
        Err(e @ MediaError::InvalidMedia(_)) => return Err(ApiError::Unprocessable(e.to_string())),
        Err(e) => return Err(ApiError::internal(e)),
    };
    media::geometry::plan(&info, params.resolution, params.allow_upscale)
        .map_err(ApiError::Unprocessable)?;
    if matches!(params.rate, RateControl::Vmaf { .. }) && info.rotation != 0 {
        return Err(ApiError::Unprocessable(format!(
            "target_vmaf does not yet measure sources with a {}° display rotation; use quality",
            info.rotation
        )));
    }
    if let RateControl::Size { target_mb } = params.rate {
        let audio = if info.has_audio {
            (info.audio_bitrate as f64).max(1.0)
        } else {
            0.0
        };
        plan_video_bps(target_mb * BYTES_PER_MB, info.duration_s, audio)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_vmaf_picks_the_vmaf_method_and_refuses_mixes() {
        let p = video_params(&fields(&[("codec", "av1"), ("target_vmaf", "95")])).unwrap();
        assert_eq!(p.rate, RateControl::Vmaf { target: 95.0 });
        let p = video_params(&fields(&[("method", "vmaf"), ("target_vmaf", "90.5")])).unwrap();
        assert_eq!(p.rate, RateControl::Vmaf { target: 90.5 });
        let p = video_params(&fields(&[("codec", "av1"), ("encoder_crf", "55")])).unwrap();
        assert_eq!(p.rate, RateControl::EncoderCrf { crf: 55 });
        for bad in [
            vec![("target_vmaf", "100")],
            vec![("target_vmaf", "20")],
            vec![("target_vmaf", "high")],
            vec![("method", "vmaf")],
            vec![("method", "crf"), ("target_vmaf", "95")],
            vec![("method", "encoder_crf")],
            vec![("codec", "h264"), ("encoder_crf", "52")],
            vec![("encoder_crf", "20.5")],
        ] {
            assert!(video_params(&fields(&bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let p = video_params(&fields(&[])).unwrap();
        assert_eq!(p, VideoParams::crf(VideoCodec::H264, 23));
        let p = video_params(&fields(&[("quality", "28"), ("resolution", "720p")])).unwrap();
        assert_eq!(p.rate, RateControl::Crf { quality: 28 });
        assert_eq!(p.resolution, Some(Resolution::Height { height: 720 }));

        let p = video_params(&fields(&[
            ("codec", "av1"),
            ("method", "size"),
            ("target_size_mb", "2.5"),
            ("preset", "8"),
            ("format", "webm"),
            ("hardware", "cpu"),
            ("allow_upscale", "true"),
        ]))
        .unwrap();
        assert_eq!(p.rate, RateControl::Size { target_mb: 2.5 });
        assert_eq!(
            (p.codec, p.preset, p.container, p.hardware, p.allow_upscale),
            (
                VideoCodec::Av1,
                Some(Preset::Svt(8)),
                Container::Webm,
                HardwarePolicy::Cpu,
                true
            )
        );
        let p = video_params(&fields(&[("codec", "h265"), ("hardware", "nvenc")])).unwrap();
        assert_eq!(p.hardware, HardwarePolicy::Nvenc);
        // A bitrate alone implies the bitrate method; VBV defaults are left to the node.
        let p = video_params(&fields(&[("codec", "hevc"), ("bitrate", "800")])).unwrap();
        assert_eq!(
            p.rate,
            RateControl::Bitrate {
                kbps: 800,
                max_kbps: None,
                buffer_kbits: None
            }
        );
        assert_eq!(
            video_params(&fields(&[("codec", "vp9")]))
                .unwrap()
                .container,
            Container::Webm
        );

        for bad in [
            vec![("codec", "h266")],
            vec![("quality", "52")],
            vec![("quality", "17")],
            vec![("quality", "high")],
            vec![("resolution", "huge")],
            vec![("method", "lossless")],
            vec![("method", "bitrate")],
            vec![("method", "size")],
            vec![("target_size_mb", "-1")],
            vec![("bitrate", "NaN")],
            vec![("preset", "ludicrous")],
            vec![("preset", "8")],
            vec![("format", "avi")],
            vec![("format", "webm")],
            vec![("hardware", "tpu")],
            vec![("codec", "av1"), ("hardware", "nvenc")],
            vec![("allow_larger", "maybe")],
        ] {
            assert!(
                matches!(video_params(&fields(&bad)), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
