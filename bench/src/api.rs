//! Calls to a running control plane that the benches share: a `/compress` submission and a
//! JSON read, with `key`.

use serde_json::Value;

/// Submit `bytes` (named `name`) to `{base}/compress` with the text `fields`; the job's id.
pub async fn submit(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    name: &str,
    bytes: &[u8],
    fields: &[(&str, &str)],
) -> Result<String, String> {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = http
        .post(format!("{base}/compress"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status.as_u16() != 202 {
        return Err(format!("submit answered {status}: {body}"));
    }
    Ok(body["job_id"].as_str().unwrap_or_default().to_string())
}

/// `GET {base}{path}` as JSON.
pub async fn get(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
) -> Result<Value, String> {
    http.get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}
