//! Stable machine codes for why a job failed. Clients and dashboards match on these strings,
//! so a variant's code never changes once released.

use serde::{Deserialize, Serialize};

/// Why a job ended `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorCode {
    /// The source is not media FFmpeg can open (wrong type, truncated header).
    InvalidMedia,
    /// The source has no stream of the kind the job needs (e.g. no video).
    NoVideoStream,
    /// The source opened but decoding failed mid-way (corrupt or truncated data).
    DecodeFailed,
    /// The requested encoder is not available or refused its settings.
    UnsupportedCodec,
    /// The request cannot be carried out on this source (an upscale not allowed, a target
    /// size too small for the duration).
    InvalidSettings,
    /// The encoder or muxer failed while writing the output.
    EncodeFailed,
    /// Reading the source or writing the output to storage failed.
    StorageFailed,
    /// The job was cancelled.
    Cancelled,
    /// The queue took the job back from a node (its lease expired, or the node drained) and
    /// queued it again; the job's last error while it waits for its next attempt.
    Requeued,
    /// The job used every attempt and was moved to the dead-letter queue.
    DeadLetter,
    /// The source is larger than this server accepts (picture size, duration or stream
    /// count; `kiln_protocol::limits`).
    SourceLimitExceeded,
    /// The job ran past the wall-clock budget its source's duration and size allow.
    TimeBudgetExceeded,
    /// Anything else: a bug or an environment problem; the detail is in the node's log.
    Internal,
}

impl JobErrorCode {
    /// The stable string form, as stored and returned by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMedia => "invalid_media",
            Self::NoVideoStream => "no_video_stream",
            Self::DecodeFailed => "decode_failed",
            Self::UnsupportedCodec => "unsupported_codec",
            Self::InvalidSettings => "invalid_settings",
            Self::EncodeFailed => "encode_failed",
            Self::StorageFailed => "storage_failed",
            Self::Cancelled => "cancelled",
            Self::Requeued => "requeued",
            Self::DeadLetter => "dead_letter",
            Self::SourceLimitExceeded => "source_limit_exceeded",
            Self::TimeBudgetExceeded => "time_budget_exceeded",
            Self::Internal => "internal",
        }
    }

    /// Whether trying the same job again (on this or another node) could succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Self::StorageFailed | Self::Internal)
    }
}

impl std::str::FromStr for JobErrorCode {
    type Err = String;

    /// The code from its stable string form (as stored in the database).
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown job error code {s:?}"))
    }
}

impl std::fmt::Display for JobErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_matches_as_str() {
        for code in [
            JobErrorCode::InvalidMedia,
            JobErrorCode::NoVideoStream,
            JobErrorCode::DecodeFailed,
            JobErrorCode::UnsupportedCodec,
            JobErrorCode::InvalidSettings,
            JobErrorCode::EncodeFailed,
            JobErrorCode::StorageFailed,
            JobErrorCode::Cancelled,
            JobErrorCode::Requeued,
            JobErrorCode::DeadLetter,
            JobErrorCode::SourceLimitExceeded,
            JobErrorCode::TimeBudgetExceeded,
            JobErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.as_str().parse::<JobErrorCode>(), Ok(code));
        }
    }
}
