//! `GET /usage`: an account's jobs, bytes, encoded minutes, GPU and CPU seconds and credits
//! over a period.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::keys::Account;
use crate::db::usage::PeriodUsage;
use crate::time::rfc3339;

/// `GET /usage`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageView {
    pub account_id: String,
    pub period: Period,
    pub jobs: UsageJobs,
    pub input_bytes: i64,
    pub output_bytes: i64,
    pub encoded_minutes: f64,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
    pub credits_used: i64,
    pub credits_remaining: Option<i64>,
    pub monthly_job_quota: Option<i64>,
    pub jobs_this_month: i64,
    /// The account's plan (Konvrt's field): the operator's label, or `self-hosted`.
    pub plan: String,
    /// Konvrt's credit summary.
    pub credits: Credits,
    /// The period by UTC day of submission, oldest first; days without jobs are left out.
    pub days: Vec<UsageDay>,
}

/// One day of `GET /usage`'s period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    pub input_bytes: i64,
    pub output_bytes: i64,
    pub encoded_minutes: f64,
    pub credits_used: i64,
}

/// An account's credits, Konvrt's way.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Credits {
    /// Credits left (null: unmetered).
    pub balance: Option<i64>,
    /// Credits ever given to the account.
    pub total_purchased: i64,
}

/// The plan label when the operator set none.
pub const DEFAULT_PLAN: &str = "self-hosted";

/// A `[from, to)` period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Period {
    pub from: String,
    pub to: String,
}

/// Jobs of a period by status.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct UsageJobs {
    pub total: i64,
    pub pending: i64,
    pub processing: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl UsageView {
    /// The usage of `account` over `[from, to)`, with `jobs_this_month` for its quota.
    pub fn new(
        account: &Account,
        from: i64,
        to: i64,
        usage: &PeriodUsage,
        jobs_this_month: i64,
    ) -> Self {
        let by = |s: &str| usage.jobs.get(s).copied().unwrap_or(0);
        Self {
            account_id: account.id.clone(),
            period: Period {
                from: rfc3339(from),
                to: rfc3339(to),
            },
            jobs: UsageJobs {
                total: usage.jobs.values().sum(),
                pending: by("pending"),
                processing: by("processing"),
                completed: by("completed"),
                failed: by("failed"),
                cancelled: by("cancelled"),
            },
            input_bytes: usage.input_bytes,
            output_bytes: usage.output_bytes,
            encoded_minutes: (usage.encoded_seconds / 60.0 * 100.0).round() / 100.0,
            gpu_seconds: usage.gpu_ms as f64 / 1000.0,
            cpu_seconds: usage.cpu_ms as f64 / 1000.0,
            credits_used: usage.credits,
            credits_remaining: account.credits,
            monthly_job_quota: account.monthly_job_quota,
            jobs_this_month,
            plan: account.plan.clone().unwrap_or_else(|| DEFAULT_PLAN.into()),
            credits: Credits {
                balance: account.credits,
                total_purchased: account.credits_purchased,
            },
            days: usage
                .days
                .iter()
                .map(|d| UsageDay {
                    date: rfc3339(d.day_ms).get(..10).unwrap_or_default().to_string(),
                    jobs: d.jobs,
                    completed: d.completed,
                    failed: d.failed,
                    input_bytes: d.input_bytes,
                    output_bytes: d.output_bytes,
                    encoded_minutes: (d.encoded_seconds / 60.0 * 100.0).round() / 100.0,
                    credits_used: d.credits,
                })
                .collect(),
        }
    }
}
