//! The whole API, one part after another against the same target; later parts use keys and
//! jobs earlier ones made.

use crate::prelude::*;

mod chunked;
mod convertrilo_klipfast;
mod deliver;
mod edit;
pub mod events;
mod keys;
mod konvrt_convertly;
mod limits;
mod read;
mod stream;
mod submit;
mod tenancy;

/// The keys the first part creates.
#[derive(Clone)]
pub struct Keys {
    /// acme's backend: jobs:create, jobs:read, jobs:cancel, usage:read.
    pub key: String,
    pub acme_account: String,
    /// acme's dashboard: jobs:read only.
    pub reader: String,
    /// Another account's key.
    pub other: String,
}

/// What later parts use.
#[derive(Clone)]
pub struct State {
    pub key: String,
    pub acme_account: String,
    pub reader: String,
    pub other: String,
    /// The Konvrt `/compress` job (with a webhook).
    pub compress_id: String,
    /// An upload of a photo.
    pub photo: String,
}

/// Run every part against `t`, scratch files in `dir`.
pub async fn run(t: &Target, dir: &Path) {
    let keys = keys::run(t).await;
    let (compress_id, photo) = submit::run(t, dir, &keys).await;
    let s = State {
        key: keys.key,
        acme_account: keys.acme_account,
        reader: keys.reader,
        other: keys.other,
        compress_id,
        photo,
    };
    deliver::run(t, dir, &s).await;
    read::run(t, &s).await;
    events::run(t, dir, &s).await;
    stream::run(t, dir, &s).await;
    edit::run(t, dir, &s).await;
    chunked::run(t, dir, &s).await;
    konvrt_convertly::run(t, dir, &s).await;
    convertrilo_klipfast::run(t, dir, &s).await;
    tenancy::run(t, dir, &s).await;
    // Last: it checks every exchange of the suite against the OpenAPI document.
    limits::run(t, &s).await;
}
