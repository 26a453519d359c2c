//! The APIs Kiln speaks: its own (Konvrt's paths are native), and one dialect per seed
//! service a client may be moving from, each under its own prefix, so switching is a change
//! of base URL and key. A dialect is a translator over the native submission service and job
//! documents; this module only names them and says which path belongs to which.

use std::fmt;
use std::str::FromStr;

/// One API Kiln answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Kiln's own API under `/api/v1` (Konvrt's endpoints are native).
    Native,
    /// Convertly's jobs API under `/convertly/api`.
    Convertly,
    /// Convertrilo's server-to-server encodes under `/convertrilo`.
    Convertrilo,
    /// Klipfast's video-URL API under `/klipfast/api/v1`.
    Klipfast,
}

impl Dialect {
    /// Every dialect beside the native API.
    pub const SEEDS: [Self; 3] = [Self::Convertly, Self::Convertrilo, Self::Klipfast];

    /// The name configuration, job rows and OpenAPI tags use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Convertly => "convertly",
            Self::Convertrilo => "convertrilo",
            Self::Klipfast => "klipfast",
        }
    }

    /// The path prefix a client sets as its base URL (the native API has none).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Native => "",
            Self::Convertly => "/convertly",
            Self::Convertrilo => "/convertrilo",
            Self::Klipfast => "/klipfast",
        }
    }

    /// Which API a request path belongs to.
    pub fn of_path(path: &str) -> Self {
        Self::SEEDS
            .into_iter()
            .find(|d| {
                path.strip_prefix(d.prefix())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .unwrap_or(Self::Native)
    }

    /// The dialect a job row records (`None`: native).
    pub fn of_row(name: Option<&str>) -> Self {
        name.and_then(|n| n.parse().ok()).unwrap_or(Self::Native)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "native" => Ok(Self::Native),
            "convertly" => Ok(Self::Convertly),
            "convertrilo" => Ok(Self::Convertrilo),
            "klipfast" => Ok(Self::Klipfast),
            other => Err(format!(
                "unknown dialect {other:?}: convertly, convertrilo or klipfast"
            )),
        }
    }
}

/// The dialects a server serves (`KILN_DIALECTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialects(pub Vec<Dialect>);

impl Dialects {
    /// Whether `d` is served (the native API always is).
    pub fn serves(&self, d: Dialect) -> bool {
        d == Dialect::Native || self.0.contains(&d)
    }
}

impl FromStr for Dialects {
    type Err = String;

    /// `convertly,klipfast`, `all`, or `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "none" => Ok(Self(Vec::new())),
            "all" => Ok(Self(Dialect::SEEDS.to_vec())),
            list => list
                .split(',')
                .map(|d| d.parse::<Dialect>())
                .filter(|d| !matches!(d, Ok(Dialect::Native)))
                .collect::<Result<Vec<_>, _>>()
                .map(Self),
        }
    }
}

impl fmt::Display for Dialects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|d| d.name()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert_eq!(Dialect::of_path("/api/v1/jobs"), Dialect::Native);
        assert_eq!(Dialect::of_path("/convertly/api/jobs"), Dialect::Convertly);
        assert_eq!(
            Dialect::of_path("/convertrilo/ondemand/encode"),
            Dialect::Convertrilo
        );
        assert_eq!(
            Dialect::of_path("/klipfast/api/v1/process"),
            Dialect::Klipfast
        );
        assert_eq!(Dialect::of_path("/klipfastx/api"), Dialect::Native);
        assert_eq!("all".parse::<Dialects>().unwrap().0.len(), 3);
        assert!("none".parse::<Dialects>().unwrap().0.is_empty());
        let some: Dialects = "klipfast, convertly".parse().unwrap();
        assert!(some.serves(Dialect::Klipfast) && !some.serves(Dialect::Convertrilo));
        assert!(some.serves(Dialect::Native));
        assert!("konvrt".parse::<Dialects>().is_err());
        for d in Dialect::SEEDS {
            assert_eq!(Dialect::of_row(Some(d.name())), d);
        }
        assert_eq!(Dialect::of_row(None), Dialect::Native);
    }
}
