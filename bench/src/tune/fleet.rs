//! Running a sweep's encodes as jobs on a Kiln fleet: each clip uploaded once, each encode a
//! `POST /jobs` output with the encoder's own CRF (`encoder_crf`) or a bitrate, polled to the
//! end and downloaded for scoring here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_protocol::RateControl;
use serde_json::{json, Value};

use super::run::{Encoded, FLEET_JOB_TIMEOUT};
use super::spec::Encode;

/// How long a job may wait for a node before the sweep gives up on it.
const PENDING_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Fleet {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    api: String,
    key: String,
    uploads: HashMap<PathBuf, String>,
}

impl Fleet {
    pub fn new(api: &str, key: &str) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            rt,
            http: reqwest::Client::new(),
            api: api.trim_end_matches('/').to_string(),
            key: key.to_string(),
            uploads: HashMap::new(),
        })
    }

    pub fn encode(&mut self, e: &Encode, out: &Path) -> Result<Encoded, String> {
        let upload = match self.uploads.get(&e.clip) {
            Some(u) => u.clone(),
            None => {
                let u = self.rt.block_on(self.upload(&e.clip))?;
                self.uploads.insert(e.clip.clone(), u.clone());
                u
            }
        };
        self.rt.block_on(self.job(e, &upload, out))
    }

    async fn upload(&self, clip: &Path) -> Result<String, String> {
        let file = tokio::fs::File::open(clip)
            .await
            .map_err(|e| e.to_string())?;
        let len = file.metadata().await.map_err(|e| e.to_string())?.len();
        let name = clip
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "clip".into());
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::stream_with_length(body, len).file_name(name),
        );
        let v = self
            .call(
                self.http
                    .post(format!("{}/api/v1/uploads", self.api))
                    .multipart(form),
            )
            .await?;
        v["upload_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no upload_id in {v}"))
    }

    async fn job(&self, e: &Encode, upload: &str, out: &Path) -> Result<Encoded, String> {
        let p = &e.params;
        let mut output = json!({
            "type": "video",
            "codec": p.codec.as_str(),
            "format": p.container.extension(),
            "allow_larger": true,
            "hardware": match p.hardware {
                kiln_protocol::HardwarePolicy::Nvenc => "nvenc",
                kiln_protocol::HardwarePolicy::Cpu => "cpu",
                _ => "auto",
            },
        });
        if let Some(preset) = p.preset {
            output["preset"] = json!(String::from(preset));
        }
        if e.config.resolution != "source" {
            output["resolution"] = json!(e.config.resolution);
        }
        match p.rate {
            RateControl::EncoderCrf { crf } => output["encoder_crf"] = json!(crf),
            RateControl::Bitrate { kbps, .. } => {
                output["method"] = json!("bitrate");
                output["bitrate"] = json!(kbps);
            }
            ref other => return Err(format!("a sweep does not run {} jobs", other.method())),
        }
        let start = Instant::now();
        let v = self
            .call(
                self.http
                    .post(format!("{}/api/v1/jobs", self.api))
                    .json(&json!({"source": {"upload_id": upload}, "outputs": [output]})),
            )
            .await?;
        let id = v["jobs"][0]["id"]
            .as_str()
            .or(v["jobs"][0]["job_id"].as_str())
            .ok_or_else(|| format!("no job id in {v}"))?
            .to_string();
        let job = loop {
            let j = self
                .call(self.http.get(format!("{}/api/v1/jobs/{id}", self.api)))
                .await?;
            match j["status"].as_str() {
                Some("completed") => break j,
                Some("failed") | Some("cancelled") => {
                    return Err(format!("job {id} {}: {}", j["status"], j["error"]))
                }
                Some("pending") if start.elapsed() > PENDING_TIMEOUT => {
                    // No node can take it (NVENC asked of a fleet without it, or no node up):
                    // withdraw it rather than wait for ever.
                    let _ = self
                        .http
                        .delete(format!("{}/api/v1/jobs/{id}", self.api))
                        .bearer_auth(&self.key)
                        .send()
                        .await;
                    return Err(format!(
                        "job {id} was not started by any node within {} s ({})",
                        PENDING_TIMEOUT.as_secs(),
                        j["encoding"]["hardware_fallback"]
                            .as_str()
                            .unwrap_or("no node free or able to run it")
                    ));
                }
                _ if start.elapsed() > FLEET_JOB_TIMEOUT => {
                    return Err(format!("job {id} still not done after an hour"))
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let encode_s = start.elapsed().as_secs_f64();
        let mut resp = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/download", self.api))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("download of job {id}: {}", resp.status()));
        }
        let mut f = tokio::fs::File::create(out)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
        // tokio's File hands each write to a blocking thread and returns before it lands: the
        // last one may still be in flight when the file is dropped, and the scorer would read
        // a short (or empty) file. Flush before anyone opens it.
        tokio::io::AsyncWriteExt::flush(&mut f)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Encoded {
            encode_s,
            cpu_s: None,
            peak_mb: None,
            encoder_used: job["encoding"]["encoder"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            hwaccel: job["encoding"]["hwaccel"].as_str().map(str::to_string),
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }
}
